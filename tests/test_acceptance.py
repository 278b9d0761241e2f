"""A model is read once on its way in (server.models.acceptance), through real uploads of real files.

The inert reader's unpickling and onnx.load are wrapped with counters in this process (the trial run's child
parses the file with ONNX Runtime, on purpose, and is counted apart): a .pt is unpickled once and its ONNX
conversion never parsed back, an .onnx is parsed once, and each is still trial-run once in the capped child.
Every byte this process reads from the upload in flight is counted too: the file is hashed as it is written, so
nothing reads it back to hash it.
"""

from __future__ import annotations

import builtins
import collections
import io
import logging
import os
from pathlib import Path

import onnx
import pytest

from harness.client import upload
from server import create_app
from server.files import HashingWriter, sha256_of
from server.layout import INCOMING_PREFIX
from server.models import acceptance, checkpoint
from server.models.convert import convert_to_onnx
from server.models.identify import inspect_checkpoint
from tests.support.converter_models import cache, real_checkpoints, reference  # noqa: F401 (fixtures)

RAILWAY = "railway-obstacles-yolov8.pt"  # trained by others (tests/data/README.md)


@pytest.fixture
def reads(monkeypatch) -> collections.Counter:
    """Count unpicklings by the inert reader, onnx.load calls and trial runs from here on."""
    counts: collections.Counter = collections.Counter()

    def counted(key, function):
        def call(*args, **kwargs):
            counts[key] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(checkpoint.InertUnpickler, "load", counted("unpickle", checkpoint.InertUnpickler.load))
    load = counted("onnx.load", onnx.load_model)  # onnx.load is onnx.load_model under another name
    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnx, "load_model", load)
    monkeypatch.setattr(acceptance, "trial_run", counted("trial run", acceptance.trial_run))
    return counts


class CountedReads:
    """A file opened for reading, adding the bytes read from it to a counter."""

    def __init__(self, file, counts: collections.Counter):
        self._file, self._counts = file, counts

    def read(self, *args):
        data = self._file.read(*args)
        self._counts["bytes"] += len(data)
        return data

    def readinto(self, buffer):
        count = self._file.readinto(buffer)
        self._counts["bytes"] += count or 0
        return count

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


@pytest.fixture
def upload_reads(monkeypatch) -> collections.Counter:
    """Count the opens of an upload in flight (named INCOMING_PREFIX...) for reading, and the bytes read."""
    counts: collections.Counter = collections.Counter()
    real_open = io.open

    def counting_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and os.path.basename(file).startswith(INCOMING_PREFIX) \
                and mode.startswith("r") and "+" not in mode:
            counts["opens"] += 1
            return CountedReads(opened, counts)
        return opened

    monkeypatch.setattr(builtins, "open", counting_open)  # hashlib's reader, onnx.load, the zip-magic check
    monkeypatch.setattr(io, "open", counting_open)  # zipfile
    return counts


@pytest.mark.parametrize("name", ["shapes-yolov8n.pt", "shapes-yolov8n.onnx"])
def test_an_upload_is_read_once_and_never_to_hash_it(client, config, demo_pt, name, upload_reads):
    weights = demo_pt.with_name(name)
    response = upload(client, "/upload/model", weights)
    assert response.status_code == 201, response.get_json()
    size = weights.stat().st_size
    # Once (a .pt's zip headers are skipped); before, twice: it was read again to hash it.
    assert 0.9 * size < upload_reads["bytes"] < 1.01 * size, (upload_reads, size)
    assert (config.uploads / "cache" / f"{sha256_of(weights)}.onnx").is_file()  # keyed by the digest taken on the way


def test_the_digest_taken_on_the_way_is_dropped_when_the_file_was_written_out_of_order(tmp_path):
    with HashingWriter(open(tmp_path / "upload.pt", "wb+")) as incoming:
        incoming.write(b"weights")
        incoming.seek(0)
        assert incoming.sha256() == sha256_of(tmp_path / "upload.pt")
        incoming.write(b"W")  # over what was hashed: the digest no longer says what the file holds
        assert incoming.sha256() is None
    with HashingWriter(open(tmp_path / "other.pt", "wb+")) as incoming:
        incoming.write(b"weights")
        incoming.flush()
        with open(tmp_path / "other.pt", "ab") as elsewhere:
            elsewhere.write(b"more")  # another handle: the size gives it away
        assert incoming.sha256() is None


def test_a_pt_upload_is_unpickled_once_and_its_conversion_never_parsed_back(client, config, real_checkpoints, reads):
    pt = real_checkpoints[RAILWAY]
    response = upload(client, "/upload/model", pt)
    assert response.status_code == 201, response.get_json()
    assert reads == {"unpickle": 1, "trial run": 1}  # the graph built is checked and translated to NCNN as it is
    engine_onnx = config.uploads / "cache" / f"{sha256_of(pt)}.onnx"
    assert engine_onnx.is_file() and response.get_json()["model"]["engines"]["ncnn"]
    assert sorted(p.name for p in engine_onnx.parent.glob(f"{engine_onnx.stem}.ncnn.*")) == [
        f"{engine_onnx.stem}.ncnn.{ext}" for ext in ("bin", "json", "param")
    ]

    reads.clear()
    again = upload(client, "/upload/model", pt)  # the same weights: the conversion comes from the cache
    assert again.status_code == 201 and again.get_json()["model"] == response.get_json()["model"]
    assert reads == {"unpickle": 1, "onnx.load": 1, "trial run": 1}  # still checked; the cached ONNX parsed once


def test_an_onnx_upload_is_parsed_once_and_run_from_a_link_in_the_cache(client, config, demo_onnx, reads):
    response = upload(client, "/upload/model", demo_onnx)
    assert response.status_code == 201, response.get_json()
    assert reads == {"onnx.load": 1, "trial run": 1}
    stored = config.uploads / "model" / demo_onnx.name
    engine_onnx = config.uploads / "cache" / f"{sha256_of(demo_onnx)}.onnx"
    assert os.path.samestat(stored.stat(), engine_onnx.stat())  # one file, two names: no copy
    assert response.get_json()["model"]["engines"]["ncnn"] and engine_onnx.with_suffix(".ncnn.json").is_file()

    reads.clear()
    restarted = create_app(config)  # start-up re-adopts the stored model with the same checks, parsing it once
    try:
        assert restarted.extensions["detection"].store.model.onnx_path == engine_onnx
        assert reads == {"onnx.load": 1, "trial run": 1}
    finally:
        restarted.extensions["detection"].stop()


def test_a_refused_onnx_leaves_nothing_in_the_cache(client, config, tmp_path, demo_onnx):
    model = onnx.load(str(demo_onnx))
    del model.metadata_props[:]  # not an Ultralytics export any more
    stripped = tmp_path / "plain.onnx"
    onnx.save(model, str(stripped))
    response = upload(client, "/upload/model", stripped)
    assert response.status_code == 400 and "no Ultralytics metadata" in response.get_json()["error"]
    assert not (config.uploads / "cache").exists() or list((config.uploads / "cache").iterdir()) == []


@pytest.fixture(scope="session")
def distilled_at_320(cache) -> Path:
    """A checkpoint saved as tools/slim.py saves one: train_args.imgsz 320 (the distilling size), model args 640."""
    return cache.get("distilled-at-320.pt", lambda out: reference(
        "build", "yolov8n.yaml", str(out), "--nc", "2", "--imgsz", "320", cwd=cache.folder))


def test_a_model_runs_at_the_size_it_was_distilled_at_until_told_otherwise(client, distilled_at_320, tmp_path,
                                                                            caplog):
    assert inspect_checkpoint(distilled_at_320).imgsz == 320  # train_args wins over the model's own args (640)
    exported = tmp_path / "distilled.onnx"
    convert_to_onnx(distilled_at_320, exported)  # as tools/slim.py converts its result: the ONNX says 320 too
    for weights in (distilled_at_320, exported):
        response = upload(client, "/upload/model", weights)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["model"]["imgsz"] == 320
        assert client.get("/api/status").get_json()["settings"]["imgsz"] == 320, weights.name

    caplog.set_level(logging.WARNING, logger="server.models.current")
    assert client.post("/api/settings", json={"imgsz": 640}).status_code == 200  # the user's size wins ...
    assert client.get("/api/status").get_json()["settings"]["imgsz"] == 640
    assert any("runs at 640 px, not the 320 px" in r.getMessage() for r in caplog.records)  # ... and is warned
