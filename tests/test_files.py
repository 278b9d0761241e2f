"""The one atomic write: a file is the old one or the new one, never a mix, and no temporary name outlives it."""

from __future__ import annotations

import fnmatch

import pytest

from server import files
from server.web.recovery import clean_leftovers


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk pulled")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "sub" / "report.json"
    files.write_text(target, "{}")
    files.copy_file(target, tmp_path / "copy.json")
    files.write_bytes(target, b'{"new": 1}')
    assert target.read_bytes() == b'{"new": 1}' and (tmp_path / "copy.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["copy.json", "report.json", "sub"]


def test_start_up_cleanup_knows_the_temporary_name(tmp_path):
    """What a crash mid-write leaves (the temporary name) is what start-up cleanup deletes."""
    leftover = files.temporary_name_for(tmp_path / "abc.onnx")
    leftover.write_bytes(b"complete but never renamed")
    assert fnmatch.fnmatch(leftover.name, files.TEMPORARY_PATTERN) and leftover.name.startswith(".")
    assert clean_leftovers([tmp_path]) == [leftover.name]
    assert list(tmp_path.iterdir()) == []
