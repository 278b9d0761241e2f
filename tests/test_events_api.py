"""The events API on a real waitress server on 127.0.0.1, with the demo streaming until events appear."""

from __future__ import annotations

import csv
import io
import os
import time

import cv2
import numpy as np
import pytest
import requests

from harness.client import upload
from harness.live_servers import ffmpeg_missing, mjpeg_server
from harness.waiting import wait_for
from server.demo.video import write_demo_video
from server.events.store import EventQuery, EventRecord
from server.web.demo import start_demo
from tests.support.helpers import config_for, serving

PASSWORD = "events are private too"
FOREIGN = "http://evil.example"


def get(live, path, **kwargs):
    return requests.get(live.url + path, timeout=10, **kwargs)


def events(live, query: str = "") -> list[dict]:
    response = get(live, "/api/events" + query)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def decoded(response) -> np.ndarray:
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def seed(live, count: int) -> list[int]:
    """Store closed events straight through the server's own store (for tests that need some but no stream)."""
    store = live.app.extensions["detection"].events.store
    ids = []
    for _ in range(count):
        event_id, now = store.new_id(), time.time()
        box = (10.0, 10.0, 50.0, 40.0)
        assert store.save(EventRecord(event_id, "circle", 0, 1, "clip.mp4", now, now + 1, now + 1, 0, 1, 0.9, box, 5),
                          b"\xff\xd8snapshot", b"\xff\xd8crop", store.generation)
        ids.append(event_id)
    return ids


def test_the_demo_makes_events_the_api_lists_filters_pages_exports_and_deletes(serve, tmp_path):
    live = serve()
    service = live.app.extensions["detection"]
    start_demo(service)
    assert requests.post(live.url + "/api/settings", json={"imgsz": 320}, timeout=10).status_code == 200
    assert wait_for(lambda: sum(not e["open"] for e in events(live)) >= 2, timeout=180), events(live)

    found = events(live)
    status = get(live, "/api/status").json()["events"]
    assert status["count"] >= len(found) >= 2 and status["dropped"] == 0 and status["bytes"] > 0
    event = next(e for e in found if not e["open"])
    assert event["source"] == "demo-shapes.mp4" and event["best_score"] >= 0.6 and event["frames"] >= 5
    assert event["start_ts"] <= event["end_ts"] and event["video_start_s"] <= event["video_end_s"]
    assert get(live, f"/api/events/{event['id']}").json()["id"] == event["id"]

    snapshot = decoded(get(live, event["snapshot_url"]))
    video = service.store.video.info
    assert snapshot.shape[:2] == (video.height, video.width)  # the annotated frame
    x1, y1, x2, y2 = event["box"]
    crop = decoded(get(live, event["crop_url"]))
    assert abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2

    chosen = event["class"]
    assert {e["class"] for e in events(live, f"?class={chosen}")} == {chosen}
    first = get(live, "/api/events?limit=1").json()
    second = events(live, f"?limit=1&before={first['next']}")
    assert len(first["events"]) == 1 and second and second[0]["id"] < first["events"][0]["id"]
    assert events(live, f"?since={time.time() + 3600:.0f}") == []
    assert chosen in get(live, "/api/events").json()["classes"]

    exported = get(live, "/api/events.csv")
    assert exported.headers["Content-Type"].startswith("text/csv") and "attachment" in exported.headers[
        "Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert str(event["id"]) in {r["id"] for r in rows} and rows[0]["class"] and rows[0]["x2"]

    # Deleting while the demo streams is safe: what was stored goes, new events keep coming.
    deleted = requests.delete(live.url + "/api/events", timeout=10).json()["deleted"]
    assert deleted >= len(found)
    assert get(live, f"/api/events/{event['id']}").status_code == 404
    assert get(live, event["crop_url"]).status_code == 404
    assert wait_for(lambda: len(events(live)) >= 1, timeout=180)

    assert requests.post(live.url + "/stream/stop", timeout=15).json() == {"streaming": False}
    stored = events(live)
    assert stored and not any(e["open"] for e in stored)  # stopping closed what was open

    # A restart (a new server on the same uploads folder) finds them all, pictures included.
    with serving(config_for(tmp_path, uploads=live.uploads)) as restarted:
        assert [e["id"] for e in events(restarted)] == [e["id"] for e in stored]
        decoded(get(restarted, stored[0]["crop_url"]))
        assert requests.post(restarted.url + "/reset", timeout=15).status_code == 200
        assert events(restarted) == [] and not (restarted.uploads / "events").exists()
        assert get(restarted, "/api/status").json()["events"]["count"] == 0


def test_reset_clears_events_and_their_files(serve):
    live = serve()
    ids = seed(live, 3)
    assert len(events(live)) == 3 and (live.uploads / "events" / "media").exists()
    assert requests.post(live.url + "/reset", timeout=10).status_code == 200
    assert events(live) == [] and get(live, f"/api/events/{ids[0]}").status_code == 404
    assert list(live.uploads.iterdir()) == []


@pytest.mark.parametrize("path,fragment", [
    ("/api/events?limit=0", "limit"),
    ("/api/events?limit=100000", "limit"),
    ("/api/events?since=yesterday", "since"),
    ("/api/events?since=20&until=10", "until"),
    ("/api/events?before=-3", "ids"),
    ("/api/events?clas=circle", "unknown parameter"),
    ("/api/events.csv?limit=abc", "limit"),
    ("/api/events/abc", "ids"),
    ("/api/events/0", "ids"),
    ("/api/events/1e3/crop.jpg", "ids"),
])
def test_bad_ids_and_query_values_are_400_saying_what_is_accepted(serve, path, fragment):
    response = get(serve(), path)
    assert response.status_code == 400 and fragment in response.json()["error"]


def test_unknown_events_and_pictures_are_404_json(serve):
    live = serve()
    for path in ("/api/events/12345", "/api/events/12345/snapshot.jpg", "/api/events/12345/crop.jpg"):
        response = get(live, path)
        assert response.status_code == 404 and "no event 12345" in response.json()["error"]
    assert get(live, "/api/events/12345/other.jpg").status_code == 404


def test_limit_is_capped_and_the_cursor_pages_through_everything(serve):
    live = serve()
    ids = seed(live, 7)
    pages, cursor = [], None
    while True:
        answer = get(live, "/api/events?limit=3" + (f"&before={cursor}" if cursor else "")).json()
        pages.append([e["id"] for e in answer["events"]])
        cursor = answer["next"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1] and sum(pages, []) == sorted(ids, reverse=True)
    assert get(live, "/api/events?limit=501").status_code == 400


def test_csv_cells_never_start_a_spreadsheet_formula(serve):
    live = serve()
    store = live.app.extensions["detection"].events.store
    now = time.time()
    store.save(EventRecord(store.new_id(), "=HYPERLINK(\"x\")", 0, 1, "+cmd.mp4", now, now, now, 0, 0, 0.9,
                           (0, 0, 1, 1), 5), None, None, store.generation)
    [row] = list(csv.DictReader(io.StringIO(get(live, "/api/events.csv").text)))
    assert row["class"].startswith("'=") and row["source"] == "'+cmd.mp4"


EVENT_ROUTES = [
    ("GET", "/api/events"),
    ("GET", "/api/events.csv"),
    ("GET", "/api/events/1"),
    ("GET", "/api/events/1/snapshot.jpg"),
    ("GET", "/api/events/1/crop.jpg"),
    ("DELETE", "/api/events"),
]


@pytest.mark.parametrize("method,path", EVENT_ROUTES)
def test_every_events_route_needs_the_credential(serve, method, path):
    live = serve(password=PASSWORD)
    seed(live, 1)
    response = requests.request(method, live.url + path, timeout=5)
    assert response.status_code == 401 and "error" in response.json()
    assert len(live.app.extensions["detection"].events.store.query(EventQuery())) == 1  # a refused DELETE deleted nothing


def test_cross_site_delete_is_refused_and_deletes_nothing(serve):
    live = serve(password=PASSWORD)
    ids = seed(live, 2)
    credentials = ("anyone", PASSWORD)
    for headers in ({"Origin": FOREIGN}, {"Sec-Fetch-Site": "cross-site"}, {"Referer": FOREIGN + "/page"}):
        forged = requests.delete(live.url + "/api/events", auth=credentials, headers=headers, timeout=5)
        assert forged.status_code == 403 and "cross-site" in forged.json()["error"], headers
    listed = requests.get(live.url + "/api/events", auth=credentials, timeout=5).json()["events"]
    assert sorted(e["id"] for e in listed) == sorted(ids)
    same = requests.delete(live.url + "/api/events", auth=credentials, headers={"Origin": live.url}, timeout=5)
    assert same.status_code == 200 and same.json() == {"deleted": 2}


@pytest.mark.slow
def test_a_live_source_makes_events_named_by_its_masked_url(serve, tmp_path, demo_onnx):
    if ffmpeg_missing() and not os.environ.get("CI"):
        pytest.skip(ffmpeg_missing())
    frames = tmp_path / "frames"
    frames.mkdir()
    capture = cv2.VideoCapture(str(write_demo_video(tmp_path / "demo.mp4", seconds=6)))
    count = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        cv2.imwrite(str(frames / f"{count:05d}.jpg"), image)
        count += 1
    capture.release()
    live = serve(event_min_frames=3)
    assert upload(live, "/upload/model", demo_onnx).ok
    camera = mjpeg_server(str(frames / "%05d.jpg")).start()
    try:
        secret_url = camera.url.replace("http://", "http://viewer:hunter2@")
        assert requests.post(live.url + "/source", json={"url": secret_url}, timeout=30).status_code == 200
        requests.post(live.url + "/api/settings", json={"imgsz": 320}, timeout=10)
        assert requests.post(live.url + "/stream/start", timeout=30).status_code == 200
        assert wait_for(lambda: len(events(live)) >= 2, timeout=180), get(live, "/api/status").json()
        requests.post(live.url + "/stream/stop", timeout=30)
    finally:
        camera.kill()
    found = events(live)
    assert {e["source"] for e in found} == {secret_url.replace("hunter2", "***")}
    assert all(e["video_start_s"] is None and not e["open"] for e in found)
    assert "hunter2" not in get(live, "/api/events.csv").text
    decoded(get(live, found[0]["crop_url"]))
