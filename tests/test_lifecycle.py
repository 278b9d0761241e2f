"""The server's start and stop as ordered steps: building the app reads nothing a previous run left, the start
does, step by step, and a stop step that fails does not keep the later ones (the outputs' goodbye) from running."""

from __future__ import annotations

import logging

import pytest

from server import create_app
from server.config import Config
from server.layout import INCOMING_PREFIX, StorageLayout
from server.web.lifecycle import Lifecycle, Step


def test_building_the_app_reads_nothing_the_start_then_recovers_step_by_step(tmp_path, caplog):
    layout = StorageLayout(tmp_path / "uploads")
    layout.video.mkdir(parents=True)
    leftover = layout.root / f"{INCOMING_PREFIX}interrupted.mp4"
    leftover.write_bytes(b"half an upload")
    (layout.video / "clip.avi").write_bytes(b"not a video")  # stored, but no longer passes its checks

    app = create_app(Config(uploads=layout.root, host="127.0.0.1"), start=False)
    service = app.extensions["detection"]
    assert leftover.exists() and (layout.video / "clip.avi").exists() and service.status()["restored"] is None

    caplog.set_level(logging.INFO, logger="server.web.lifecycle")
    app.extensions["lifecycle"].start()
    assert not leftover.exists() and not layout.video.exists()
    assert service.status()["restored"] == {"video": None, "model": None, "removed": ["video/clip.avi"]}
    steps = [record.getMessage() for record in caplog.records if record.name == "server.web.lifecycle"]
    assert steps[0] == "start 1/5: recover leftovers: temporary files of an interrupted run"
    assert [step.split(":")[0] for step in steps] == [f"start {n}/5" for n in range(1, 6)]
    app.extensions["lifecycle"].stop()


def test_a_failing_stop_step_is_logged_and_the_next_ones_still_run(caplog):
    ran = []

    def broken():
        raise RuntimeError("the export's thread is stuck")

    lifecycle = Lifecycle([], [Step("the stream", lambda: ran.append("stream")), Step("an export", broken),
                               Step("the outputs", lambda: ran.append("outputs"))])
    lifecycle.stop()
    assert ran == ["stream", "outputs"]
    assert "stop 2/3 failed: an export" in caplog.text


def test_a_failing_start_step_stops_the_start():
    ran = []

    def broken():
        raise OSError("the uploads folder is read-only")

    lifecycle = Lifecycle([Step("recover", broken), Step("load", lambda: ran.append("load"))], [])
    with pytest.raises(OSError):
        lifecycle.start()
    assert ran == []
