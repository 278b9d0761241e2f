"""Hypothesis fuzzing of what a client controls: settings JSON, upload bodies, filenames and multipart shapes.

Whatever arrives, the answer is never a 5xx, always JSON with an "error" string when it is a 4xx, and
nothing is left half-written in the uploads folder.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.client import upload
from server import create_app
from server.config import Config
from tests.support.helpers import write_video

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SETTING_KEYS = [
    "conf", "iou", "imgsz", "realtime", "loop", "precision", "detect_every", "classes",
    "threads", "jpeg_quality", "output_width", "min_agreement",
]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
settings_bodies = st.dictionaries(st.sampled_from(SETTING_KEYS) | st.text(max_size=12), json_values, max_size=6)


@pytest.fixture(scope="module")
def real_video(tmp_path_factory) -> bytes:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", width=160, height=120, frames=5).read_bytes()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Config(uploads=tmp_path_factory.mktemp("fuzz"), host="127.0.0.1", max_video_mb=1, max_model_mb=1))
    yield app.test_client()
    app.extensions["lifecycle"].stop()


def assert_clean(response, root=None):
    assert response.status_code < 500, response.data[:300]
    if response.status_code >= 400:
        body = response.get_json()
        assert isinstance(body, dict) and isinstance(body["error"], str) and len(body["error"]) <= 600
    if root is not None:
        assert not list(root.glob(".upload-*")), "a temporary upload was left behind"


@FUZZ
@given(body=settings_bodies)
def test_settings_json_never_500(client, body):
    response = client.post("/api/settings", data=json.dumps(body), content_type="application/json")
    assert_clean(response)
    if response.status_code == 200:
        assert set(response.get_json()) >= {"conf", "iou", "imgsz"}


@FUZZ
@given(raw=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_settings_raw_bytes_never_500(client, raw):
    assert_clean(client.post("/api/settings", data=raw, content_type="application/json"))


filenames = st.text(max_size=300) | st.sampled_from(["a.mp4", "x.onnx", "m.pt", ".mp4", "..", "a/b.mp4", "<i>.webm"])
payloads = st.binary(max_size=2000) | st.just(b"\x00" * 10) | st.just(b"ONNX garbage")


@FUZZ
@given(
    route=st.sampled_from(["/upload/video", "/upload/model"]),
    parts=st.lists(
        st.tuples(st.sampled_from(["file", "other", "", "fi\"le"]), st.none() | filenames, payloads), max_size=4
    ),
    boundary=st.sampled_from(["XyZ", "----b", "a" * 70, "é"]),
    declared=st.sampled_from(["multipart/form-data; boundary={b}", "multipart/form-data", "text/plain", "{b}"]),
)
def test_upload_shapes_never_500(client, route, parts, boundary, declared):
    chunks = []
    for field, filename, payload in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode("utf-8", "replace") + payload + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode("utf-8", "replace")
    headers = {"Content-Type": declared.format(b=boundary).encode("utf-8", "replace").decode("latin-1")}
    response = client.post(route, data=body, headers=headers)
    assert_clean(response, client.application.extensions["uploads"].root)


@FUZZ
@given(
    name=st.text(max_size=40) | st.text(min_size=250, max_size=400),
    suffix=st.sampled_from([".mp4", ".MKV", ".onnx", ".pt", "", ".mp4.exe"]),
    real=st.booleans(),
)
def test_upload_filenames_never_500(client, real_video, name, suffix, real):
    route = "/upload/model" if suffix in (".onnx", ".pt") else "/upload/video"
    payload = real_video if real else b"not a real file" * 10
    response = upload(client, route, payload=payload, name=name + suffix)
    assert_clean(response, client.application.extensions["uploads"].root)
    if response.status_code == 201:
        shown = response.get_json()["video"]["name"]
        assert isinstance(shown, str) and len(shown) <= 100
        status = client.get("/api/status")
        assert status.status_code == 200 and status.get_json()["video"]["name"] == shown
