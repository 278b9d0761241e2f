"""State that tells the truth after a crash: SIGKILL the real server (run.py), restart it.

After every restart the server either re-adopts what is on disk (and says so in /api/status) or removes it:
the files left in the uploads folder are exactly the ones /api/status describes, no temporary file or folder
survives, and nothing is written after the server died.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import socket
import threading
from pathlib import Path

import pytest
import requests

from harness.client import upload
from harness.server_process import ServerProcess
from harness.waiting import wait_for
from server.files import TEMPORARY_PATTERN, sha256_of
from tests.support.held_conversion_run import HOLDING
from tests.support.helpers import files_under

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(tmp_path):
    """Return start(uploads, entry=run.py): run.py (or a hooked copy) in a process of its own, killed at the end."""
    started = []

    def start(uploads: Path, entry: tuple[str, ...] = ("run.py",)) -> ServerProcess:
        log = tmp_path / f"server-{len(started)}.log"
        started.append(ServerProcess(uploads, "--threads", "8", entry=entry, log_path=log))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def post_quietly(base: str, route: str, path: Path) -> None:
    """Upload, expecting the server to die under the request."""
    with contextlib.suppress(requests.ConnectionError):
        upload(base, route, path)


def temporary_leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(".") and p.name != ".access-token")


def assert_truthful(server: ServerProcess) -> dict:
    """Whatever is on disk is what the status describes, and no temporary file is left."""
    status = server.status()
    on_disk = files_under(server.uploads)
    videos = [f for f in on_disk if f.startswith("video/")]
    models = [f for f in on_disk if f.startswith("model/")]
    assert videos == ([f"video/{status['video']['name']}"] if status["video"] else []), (status, on_disk)
    assert models == ([f"model/{status['model']['name']}"] if status["model"] else []), (status, on_disk)
    if status["model"]:  # the ONNX the engines run is cache/<the weights' sha256>.onnx, its NCNN copy beside it
        assert f"cache/{sha256_of(server.uploads / models[0])}.onnx" in on_disk, (status, on_disk)
    else:
        assert not [f for f in on_disk if f.startswith("cache/")]
    assert temporary_leftovers(server.uploads) == []
    return status


def test_stored_video_and_model_are_readopted_after_sigkill(servers, tmp_path, make_video, demo_onnx):
    uploads = tmp_path / "uploads"
    first = servers(uploads)
    assert upload(first.url, "/upload/video", make_video("clip.avi", frames=20)).status_code == 201
    assert upload(first.url, "/upload/model", demo_onnx).status_code == 201
    first.kill()

    second = servers(uploads)
    status = assert_truthful(second)
    assert status["video"]["name"] == "clip.avi" and status["model"]["name"] == demo_onnx.name
    assert status["restored"] == {"video": "clip.avi", "model": demo_onnx.name, "removed": []}
    assert requests.post(f"{second.url}/stream/start", timeout=30).status_code == 200
    assert wait_for(lambda: second.status()["stats"]["frames"] > 0, timeout=60)
    requests.post(f"{second.url}/stream/stop", timeout=10)
    assert second.stop() == 0
    # The start is visible, step by step, before the server serves; the stop keeps its documented order.
    log = second.log()
    starts, stops = re.findall(r"start (\d)/(\d): (\w+)", log), re.findall(r"stop (\d)/(\d): (\w+ \w+)", log)
    assert [name for *_, name in starts] == ["recover", "reopen", "take", "load", "start"]
    assert log.index("start 5/5") < log.index("serving on")
    assert [name for *_, name in stops] == ["the stream", "an export", "the outputs"]


def test_sigkill_during_an_upload_leaves_nothing_half_written(servers, tmp_path, make_video, demo_onnx):
    uploads = tmp_path / "uploads"
    first = servers(uploads)
    assert upload(first.url, "/upload/video", make_video("kept.avi", frames=20)).status_code == 201
    body = make_video("next.avi", frames=60).read_bytes()
    head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="next.avi"\r\n'
            b"Content-Type: video/x-msvideo\r\n\r\n")
    with socket.create_connection(("127.0.0.1", first.port)) as raw:
        raw.sendall(
            f"POST /upload/video HTTP/1.1\r\nHost: 127.0.0.1:{first.port}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(head) + len(body) + 8}\r\n\r\n"
            .encode() + head + body[: len(body) // 2]
        )
        wait_for(lambda: temporary_leftovers(uploads) != [], timeout=5)  # spooled somewhere: maybe still in memory
        first.kill()

    second = servers(uploads)
    status = assert_truthful(second)
    assert status["video"]["name"] == "kept.avi"


def test_sigkill_during_a_conversion_then_restart(servers, tmp_path, demo_onnx, demo_pt):
    """The converted model is complete under its temporary name when the server dies: start-up removes it.

    The current model (an .onnx, run from its link in the cache folder) stays in place and is re-adopted.
    """
    uploads = tmp_path / "uploads"
    first = servers(uploads, entry=("-m", "tests.support.held_conversion_run"))
    assert upload(first.url, "/upload/model", demo_onnx).status_code == 201
    sender = threading.Thread(target=post_quietly, args=(first.url, "/upload/model", demo_pt), daemon=True)
    sender.start()
    assert wait_for(lambda: HOLDING in first.log(), timeout=120), first.log()[-2000:]
    held = [p.name for p in (uploads / "cache").iterdir() if p.name.startswith(".")]
    assert len(held) == 1 and fnmatch.fnmatch(held[0], TEMPORARY_PATTERN), held  # written, not yet renamed
    first.kill()
    sender.join(30)

    second = servers(uploads)
    status = assert_truthful(second)
    assert status["model"]["name"] == demo_onnx.name and status["restored"]["model"] == demo_onnx.name
    engine_onnx = sha256_of(demo_onnx)  # the .onnx's link and NCNN copy stay; the conversion cut off is gone
    assert {p.name.split(".")[0] for p in (uploads / "cache").iterdir()} == {engine_onnx}
