"""State that tells the truth after a crash (issue 10 item 6): SIGKILL the real server (run.py), restart it.

After every restart the server either re-adopts what is on disk (and says so in /api/status) or removes it:
the files left in the uploads folder are exactly the ones /api/status describes, no temporary file or folder
survives, and nothing is written after the server died.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """run.py on 127.0.0.1 in its own process, as a user starts it."""

    def __init__(self, uploads: Path):
        self.uploads, self.port = uploads, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "run.py", "--host", "127.0.0.1", "--port", str(self.port), "--uploads", str(uploads),
             "--threads", "8", "--log-level", "WARNING"],
            cwd=REPO, env={**os.environ, "YOLO_OFFLINE": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_for(self._answers, timeout=60), "the server did not start"

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/status", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def status(self) -> dict:
        return requests.get(f"{self.url}/api/status", timeout=10).json()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def servers():
    started = []

    def start(uploads: Path) -> ServerProcess:
        started.append(ServerProcess(uploads))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def post_file(url, path):
    with open(path, "rb") as handle:
        return requests.post(url, files={"file": (path.name, handle)}, timeout=120)


def files_on_disk(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def temporary_leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(".") and p.name != ".access-token")


def assert_truthful(server: ServerProcess) -> dict:
    """Whatever is on disk is what the status describes, and no temporary file is left."""
    status = server.status()
    on_disk = files_on_disk(server.uploads)
    videos = [f for f in on_disk if f.startswith("video/")]
    models = [f for f in on_disk if f.startswith("model/") and ".int8." not in f]
    assert videos == ([f"video/{status['video']['name']}"] if status["video"] else []), (status, on_disk)
    assert models == ([f"model/{status['model']['name']}"] if status["model"] else []), (status, on_disk)
    if not status["model"]:
        assert not [f for f in on_disk if f.startswith("cache/")]
    assert temporary_leftovers(server.uploads) == []
    return status


def processes_using(path: Path) -> list[int]:
    """Return the pids whose command line names path (a conversion child working on the uploads)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_stored_video_and_model_are_readopted_after_sigkill(servers, tmp_path, make_video, demo_onnx):
    uploads = tmp_path / "uploads"
    first = servers(uploads)
    assert post_file(f"{first.url}/upload/video", make_video("clip.avi", frames=20)).status_code == 201
    assert post_file(f"{first.url}/upload/model", demo_onnx).status_code == 201
    first.kill()

    second = servers(uploads)
    status = assert_truthful(second)
    assert status["video"]["name"] == "clip.avi" and status["model"]["name"] == demo_onnx.name
    assert status["restored"] == {"video": "clip.avi", "model": demo_onnx.name, "removed": []}
    assert requests.post(f"{second.url}/stream/start", timeout=30).status_code == 200
    assert wait_for(lambda: second.status()["stats"]["frames"] > 0, timeout=60)
    requests.post(f"{second.url}/stream/stop", timeout=10)


def test_sigkill_during_an_upload_leaves_nothing_half_written(servers, tmp_path, make_video, demo_onnx):
    uploads = tmp_path / "uploads"
    first = servers(uploads)
    assert post_file(f"{first.url}/upload/video", make_video("kept.avi", frames=20)).status_code == 201
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


def test_sigkill_during_a_conversion_then_restart(servers, tmp_path, demo_pt):
    uploads = tmp_path / "uploads"
    first = servers(uploads)
    result = {}

    def upload():
        try:
            result["response"] = post_file(f"{first.url}/upload/model", demo_pt)
        except requests.ConnectionError as exc:  # the server was killed under it
            result["error"] = exc

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    # Kill while a conversion child works on the upload (or, with an in-process converter, while the job runs).
    def job_progress() -> float:
        job = first.status().get("job") or {}
        return job.get("progress", 0.0) if job.get("kind") == "convert" else -1.0

    def at_work() -> bool:  # a conversion child that reported progress, or an in-process conversion running
        return job_progress() > 0 if processes_using(uploads) else job_progress() >= 0

    converting = wait_for(at_work, timeout=30, interval=0.01)
    if not converting:
        pytest.skip("the conversion finished before it could be interrupted")
    first.kill()
    sender.join(30)
    # Whatever worked on the conversion died with the server (not at its next progress line) and writes nothing.
    assert wait_for(lambda: processes_using(uploads) == [], timeout=2), processes_using(uploads)
    before = files_on_disk(uploads)
    time.sleep(3)
    assert files_on_disk(uploads) == before

    second = servers(uploads)
    status = assert_truthful(second)
    assert status["model"] is None or status["model"]["name"] == demo_pt.name
