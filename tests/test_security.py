"""Access control, the cross-site guard, upload names and limits, slow and hostile clients, from outside the process.

A real waitress server on 127.0.0.1, spoken to with requests and raw sockets.

Each test names the protection it proves; each fails on the code before that protection existed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from harness.client import upload
from harness.waiting import wait_for
from server import create_app
from server.config import REPO_ROOT, Config, build_parser, config_from_args
from server.web import auth
from tests.support.helpers import LiveServer

PASSWORD = "correct horse battery staple"
FOREIGN = "http://evil.example"
TOKEN_LINE = re.compile(r"open http://[^:]+:(\d+)/\?token=([\w-]+) from")


def stored(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != auth.TOKEN_FILE)


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


# -- 1. access control -----------------------------------------------------------------------------


def test_auth_is_on_when_listening_on_all_interfaces(serve, caplog):
    served = serve(host="0.0.0.0")  # only ever spoken to on 127.0.0.1
    page = requests.get(served.url + "/", headers={"Accept": "text/html"}, timeout=5)
    assert page.status_code == 401 and "token" in page.text
    api = requests.get(served.url + "/api/status", timeout=5)
    assert api.status_code == 401 and "token" in api.json()["error"]
    assert requests.get(f"{served.url}/api/status?token={served.token}", timeout=5).status_code == 200


def test_auth_mode_follows_the_listening_address_and_flags(tmp_path, caplog):
    assert auth.auth_mode("127.0.0.1", "", False) == "off"
    assert auth.auth_mode("::1", "", False) == "off"
    assert auth.auth_mode("localhost", "", False) == "off"
    assert auth.auth_mode("127.0.0.2", "", False) == "off"
    assert auth.auth_mode("", "", False) == "token"  # waitress reads '' as every interface
    assert auth.auth_mode("0.0.0.0", "", False) == "token"
    assert auth.auth_mode("192.168.1.23", "", False) == "token"
    assert auth.auth_mode("127.0.0.1", "pw", False) == "password"
    assert auth.auth_mode("0.0.0.0", "pw", True) == "off"
    with caplog.at_level("WARNING"):
        create_app(Config(uploads=tmp_path, host="0.0.0.0", no_auth=True))
    assert "access control is OFF" in caplog.text


def test_auth_flags_and_their_env_fallbacks_never_print_the_password():
    env = {"EDGE_PASSWORD": "s3cret-pw", "EDGE_ALLOWED_HOSTS": "pi.lan,.home.arpa", "EDGE_NO_AUTH": "1"}
    config = config_from_args([], environ=env)
    assert (config.password, config.allowed_hosts, config.no_auth) == ("s3cret-pw", "pi.lan,.home.arpa", True)
    assert "s3cret-pw" not in build_parser(env).format_help()
    config = config_from_args(["--password", "other", "--connection-limit", "50"], environ={})
    assert (config.password, config.connection_limit, config.no_auth) == ("other", 50, False)


def test_token_is_stored_private_and_exchanged_for_a_strict_cookie(serve):
    served = serve(token=True)
    token_file = served.uploads / auth.TOKEN_FILE
    assert requests.get(served.url + "/api/status", timeout=5).status_code == 401
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == served.token and len(served.token) >= 40

    first = requests.get(f"{served.url}/?token={served.token}&tab=2", allow_redirects=False, timeout=5)
    assert first.status_code == 303 and first.headers["Location"] == "/?tab=2"  # token gone from the URL
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and served.token not in cookie
    session = requests.Session()
    session.cookies.update(first.cookies)
    assert session.get(served.url + "/api/status", timeout=5).status_code == 200
    assert session.get(served.url + "/video_feed", timeout=5).status_code == 409  # past auth: not streaming

    wrong = requests.get(f"{served.url}/?token=nope", headers={"Accept": "text/html"}, timeout=5)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers
    bearer = requests.get(served.url + "/api/status", headers={"Authorization": f"Bearer {served.token}"}, timeout=5)
    assert bearer.status_code == 200
    for forged in ("0" * 64, "é" * 10, ""):
        headers = {"Cookie": f"{auth.COOKIE_NAME}={forged}".encode()}
        assert requests.get(served.url + "/api/status", headers=headers, timeout=5).status_code == 401
    garbled = requests.get(served.url + "/api/status", headers={"Authorization": "Basic %%%"}, timeout=5)
    assert garbled.status_code == 401


def test_token_link_from_another_site_still_signs_in(serve):
    """A Strict cookie set on a redirect that another site started is not sent on the next hop; a page moves on."""
    served = serve(token=True)
    response = requests.get(
        f"{served.url}/?token={served.token}", headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False, timeout=5
    )
    assert response.status_code == 200 and 'http-equiv="refresh" content="0;url=/"' in response.text
    assert "SameSite=Strict" in response.headers["Set-Cookie"]


def test_token_survives_a_restart(tmp_path, serve):
    first = serve(token=True, uploads=tmp_path / "same")
    token = first.token
    second = serve(token=True, uploads=tmp_path / "same")
    assert second.token == token


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/api/status"),
        ("GET", "/video_feed"),
        ("GET", "/api/trace"),
        ("GET", "/static/js/main.js"),
        ("GET", "/static/style.css"),
        ("GET", "/no/such/page"),
        ("POST", "/api/settings"),
        ("POST", "/stream/start"),
        ("POST", "/stream/stop"),
        ("POST", "/reset"),
        ("POST", "/upload/video"),
        ("POST", "/upload/model"),
    ],
)
def test_every_route_needs_the_credential(serve, method, path):
    served = serve(token=True)
    response = requests.request(method, served.url + path, timeout=5)
    assert response.status_code == 401 and "error" in response.json()


def test_the_login_page_and_its_looks_are_public(serve):
    served = serve(token=True)
    for path in ("/login", "/static/login.css", "/static/favicon.svg"):
        assert requests.get(served.url + path, timeout=5).status_code == 200, path


def test_password_mode_basic_auth_for_scripts_and_login_page_for_browsers(serve):
    served = serve(password=PASSWORD)
    assert requests.get(served.url + "/api/status", auth=("anyone", PASSWORD), timeout=5).status_code == 200
    denied = requests.get(served.url + "/api/status", auth=("anyone", "wrong"), timeout=5)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(f"{served.url}/api/status?token={served.token}", timeout=5).status_code == 401

    browser = requests.Session()
    page = browser.get(served.url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=5)
    assert page.status_code == 303 and page.headers["Location"] == "/login?next=%2F"
    assert "WWW-Authenticate" not in page.headers
    failed = browser.post(served.url + "/login", data={"password": "nope", "next": "/"}, timeout=5)
    assert failed.status_code == 401 and "wrong password" in failed.text
    signed_in = browser.post(
        served.url + "/login", data={"password": PASSWORD, "next": "/api/status"}, allow_redirects=False, timeout=5
    )
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/api/status"
    assert "HttpOnly" in signed_in.headers["Set-Cookie"] and "SameSite=Strict" in signed_in.headers["Set-Cookie"]
    assert browser.get(served.url + "/api/status", timeout=5).status_code == 200


def test_login_never_redirects_off_this_server(serve):
    served = serve(password=PASSWORD)
    for target in ("//evil.example/", "http://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        response = requests.post(
            served.url + "/login", data={"password": PASSWORD, "next": target}, allow_redirects=False, timeout=5
        )
        assert response.headers["Location"] == "/", target


def test_failed_logins_are_rate_limited_per_client(serve):
    served = serve(password=PASSWORD)
    for _ in range(auth.MAX_FAILURES):
        assert requests.get(served.url + "/api/status", auth=("u", "guess"), timeout=5).status_code == 401
    limited = requests.get(served.url + "/api/status", auth=("u", PASSWORD), timeout=5)  # even the right one
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    form = requests.post(served.url + "/login", data={"password": PASSWORD}, timeout=5)
    assert form.status_code == 429 and "Retry-After" in form.headers


def test_failure_limiter_counts_each_client_apart_and_forgets():
    limiter = auth.FailureLimiter(max_failures=2, window_s=0.3)
    limiter.fail("10.0.0.1")
    limiter.fail("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") >= 1
    assert limiter.retry_after("10.0.0.2") == 0
    time.sleep(0.35)
    assert limiter.retry_after("10.0.0.1") == 0


def test_failure_limiter_table_is_bounded():
    limiter = auth.FailureLimiter(max_clients=100)
    for i in range(1000):
        limiter.fail(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) == 100


# -- 2. cross-site and rebinding -------------------------------------------------------------------


@pytest.fixture
def with_video(serve, make_video):
    """A token-mode server with a video uploaded, and a signed-in session."""
    served = serve(token=True)
    session = served.session()
    assert upload(served.url, "/upload/video", make_video(), session=session).status_code == 201
    return served, session


def test_cross_origin_form_post_to_reset_is_refused_and_deletes_nothing(with_video):
    served, session = with_video
    before = stored(served.uploads)
    forged = session.post(
        served.url + "/reset",
        data={"x": "1"},
        headers={"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
        timeout=5,
    )
    assert forged.status_code == 403 and "cross-site" in forged.json()["error"]
    assert stored(served.uploads) == before == ["video/clip.mp4"]
    # Each signal on its own is enough.
    for headers in ({"Origin": FOREIGN}, {"Origin": "null"}, {"Referer": FOREIGN + "/page"}, {"Sec-Fetch-Site": "same-site"}):
        assert session.post(served.url + "/reset", headers=headers, timeout=5).status_code == 403, headers
    assert stored(served.uploads) == before
    same = session.post(served.url + "/reset", headers={"Origin": served.url, "Sec-Fetch-Site": "same-origin"}, timeout=5)
    assert same.status_code == 200 and stored(served.uploads) == []


def test_cross_origin_upload_is_refused_and_keeps_nothing(serve, make_video):
    served = serve()  # auth off (loopback): the guard holds on its own
    forged = upload(served.url, "/upload/video", make_video(), headers={"Origin": FOREIGN})
    assert forged.status_code == 403
    assert stored(served.uploads) == []
    assert not list(served.uploads.glob(".upload-*"))


def test_unknown_host_is_refused_as_dns_rebinding(serve):
    served = serve(allowed_hosts="edge.example,.home.arpa")
    for host, expected in [
        ("evil.example", 400),
        (f"evil.example:{served.port}", 400),
        ("127.0.0.1.evil.example", 400),
        ("", 400),
        (f"127.0.0.1:{served.port}", 200),
        (f"localhost:{served.port}", 200),
        (f"[::1]:{served.port}", 200),
        ("192.168.1.23", 200),
        (f"{socket.gethostname()}.local:{served.port}", 200),
        ("edge.example", 200),
        ("pi.home.arpa", 200),
    ]:
        response = requests.get(served.url + "/api/status", headers={"Host": host}, timeout=5)
        assert response.status_code == expected, host
        if expected == 400:
            assert "Host" in response.json()["error"]


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/js/main.js", "/no/such/page", "/login"])
def test_security_headers_on_every_response(serve, path):
    served = serve(token=True)
    for session in (requests, served.session()):
        headers = session.get(served.url + path, timeout=5).headers
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["X-Frame-Options"] == "DENY"


def test_page_has_no_inline_script_or_handler():
    """The CSP forbids inline scripts and handlers: the page must not rely on any."""
    root = Path(__file__).resolve().parents[1] / "templates"
    for template in root.glob("*.html"):
        text = template.read_text()
        assert " onsubmit=" not in text and " onclick=" not in text and " style=" not in text, template.name
        for line in text.splitlines():
            if "<script" in line:
                assert "src=" in line, (template.name, line)


# -- 3. uploads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "v" * 300 + ".mp4",
        "<script>alert(1)</script>.mp4",
        "../../../etc/passwd.mp4",
        "\u202ecod.exe\u202d.mp4",
        "видео 日本語 " * 30 + ".mp4",

    ],
)
def test_any_filename_is_stored_safely_and_shown_as_text(serve, make_video, name):
    served = serve()
    response = upload(served.url, "/upload/video", make_video(), name=name)
    assert response.status_code == 201, response.text
    shown = response.json()["video"]["name"]
    assert isinstance(shown, str) and 0 < len(shown) <= 120
    assert "\u202e" not in shown
    files = stored(served.uploads)
    assert len(files) == 1 and files[0].startswith("video/")
    stored_name = files[0].split("/", 1)[1]
    assert len(stored_name) <= 80 and all(c.isascii() and (c.isalnum() or c in "._-") for c in stored_name)
    status = requests.get(served.url + "/api/status", timeout=5)
    assert status.status_code == 200 and status.json()["video"]["name"] == shown


def test_a_rejected_upload_leaves_the_current_video_in_place(serve, make_video, tmp_path):
    served = serve()
    assert upload(served.url, "/upload/video", make_video("good.mp4")).status_code == 201
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 1000)
    assert upload(served.url, "/upload/video", garbage).status_code == 400
    assert upload(served.url, "/upload/video", make_video("x.mp4"), name="bad.txt").status_code == 400
    assert stored(served.uploads) == ["video/good.mp4"]
    status = requests.get(served.url + "/api/status", timeout=5).json()
    assert status["video"]["name"] == "good.mp4" and status["video"]["size"] > 0


def test_content_length_over_the_route_limit_is_refused_before_the_body(serve):
    served = serve(max_video_mb=1, max_model_mb=64)
    head = (
        "POST /upload/video HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 700000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)  # and not one byte of the body
        raw = read_response(sock)
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert b"application/json" in raw.split(b"\r\n\r\n")[0]
    assert "1 MB" in json_body(raw)["error"]


@pytest.mark.parametrize("route,limit_mb", [("/upload/video", 1), ("/upload/model", 2), ("/api/settings", 1)])
def test_chunked_body_is_cut_at_the_route_limit(serve, route, limit_mb):
    served = serve(max_video_mb=1, max_model_mb=2)  # before: waitress read up to 2x the largest limit
    sent = 0
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.settimeout(0.05)
        raw = b""
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(framed)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
            try:
                raw = sock.recv(65536)
                if raw:
                    break
            except socket.timeout:
                pass
        sock.settimeout(5)
        raw += read_response(sock)
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert "too large" in json_body(raw)["error"]
    # The server stopped reading at the limit; what else was sent sat in socket buffers.
    assert sent < limit_mb * 1024 * 1024 + 12 * 1024 * 1024, sent


def test_body_over_the_limit_with_requests_gets_json_413_and_keeps_nothing(serve, tmp_path):
    served = serve(max_video_mb=1, max_model_mb=1)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(1024) * 1500)
    try:
        response = upload(served.url, "/upload/video", big)
    except requests.ConnectionError:
        pass  # the server may close while the client still sends: it did not read the body
    else:
        assert response.status_code == 413 and "1 MB" in response.json()["error"]
    assert stored(served.uploads) == [] and not list(served.uploads.glob(".upload-*"))


def test_waitress_errors_are_json_too(serve):
    served = serve()
    raw = raw_exchange(served.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
    assert raw.split(b"\r\n")[0].endswith(b"400 Bad Request") and "error" in json_body(raw)
    raw = raw_exchange(served.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert b" 431 " in raw.split(b"\r\n")[0] and "error" in json_body(raw)
    assert b"nosniff" in raw


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = []
    for field, filename, payload in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + payload + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_only_one_file_part_per_request(serve, make_video):
    served = serve()
    fds = _open_fds()
    body = _multipart([("file", f"f{i}.mp4", b"x" * 100) for i in range(999)])
    response = requests.post(
        served.url + "/upload/video", data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}, timeout=30
    )
    assert response.status_code == 400 and "one file" in response.json()["error"]
    assert not list(served.uploads.glob(".upload-*"))
    assert wait_for(lambda: _open_fds() <= fds + 2, timeout=5)
    two = _multipart([("file", "a.mp4", make_video().read_bytes()), ("other", "b.mp4", b"x")])
    response = requests.post(
        served.url + "/upload/video", data=two, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}, timeout=30
    )
    assert response.status_code == 400 and stored(served.uploads) == []


def test_deeply_nested_settings_json_is_400(serve):
    served = serve()
    deep = "[" * 100_000 + "]" * 100_000
    response = requests.post(
        served.url + "/api/settings", data=deep, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    deep = '{"conf":' * 3000 + "1" + "}" * 3000
    response = requests.post(served.url + "/api/settings", data=deep, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400


def test_error_messages_never_echo_huge_input(serve):
    served = serve()
    response = requests.post(served.url + "/api/settings", json={"classes": ["x" * 10] * 50_000}, timeout=10)
    assert response.status_code == 400 and len(response.content) < 2000
    response = requests.post(served.url + "/api/settings", json={"k" * 500_000: 1}, timeout=10)
    assert response.status_code == 400 and len(response.content) < 2000
    too_big = requests.post(served.url + "/api/settings", json={"classes": list(range(1_000_000))}, timeout=20)
    assert too_big.status_code == 413 and len(too_big.content) < 2000


@pytest.mark.slow
def test_run_py_on_all_interfaces_logs_the_token_url(tmp_path):
    uploads = tmp_path / "up"
    log_path = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "run.py", "--host", "0.0.0.0", "--port", "0", "--uploads", str(uploads)],
        cwd=REPO_ROOT,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    try:
        assert wait_for(lambda: TOKEN_LINE.search(log_path.read_text()), timeout=60), log_path.read_text()
        port, token = TOKEN_LINE.search(log_path.read_text()).groups()
        assert token == (uploads / auth.TOKEN_FILE).read_text().strip()
        base = f"http://127.0.0.1:{port}"  # bound to every interface, spoken to on loopback only
        assert requests.get(base + "/api/status", timeout=5).status_code == 401
        assert requests.get(f"{base}/api/status?token={token}", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)


# -- 5. connection hygiene -------------------------------------------------------------------------


def _answers(url: str) -> None:
    """The request is answered: a server whose workers were all held would leave it to its timeout."""
    assert requests.get(url, timeout=10).status_code == 200


def _slowloris(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(f"GET /api/status?n={i} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        sockets.append(sock)
    return sockets


@pytest.mark.slow
def test_page_answers_while_120_slowloris_connections_drip_headers(serve):
    served = serve()
    sockets = _slowloris(served.port, 120)
    try:
        for round_ in range(4):
            for sock in sockets:
                sock.sendall(f"X-Drip-{round_}: 1\r\n".encode())
            _answers(served.url + "/")
            _answers(served.url + "/api/status")
            time.sleep(0.5)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_idle_connections_are_closed_after_the_channel_timeout(serve):
    served = serve(channel_timeout=1)
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=15)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never finishes
    assert sock.recv(1) == b""  # closed by the server (the socket's own 15 s timeout would raise first)
    sock.close()


def _streaming(served: LiveServer, make_video, width: int = 320, height: int = 240, **settings) -> None:
    demo = Path(__file__).resolve().parents[1] / "server/demo/model/shapes-yolov8n.onnx"
    video = make_video("loop.mp4", width=width, height=height, frames=60)
    assert upload(served.url, "/upload/video", video).status_code == 201
    assert upload(served.url, "/upload/model", demo).status_code == 201
    settings = {"loop": True, "imgsz": 320, **settings}
    assert requests.post(served.url + "/api/settings", json=settings, timeout=10).status_code == 200
    assert requests.post(served.url + "/stream/start", timeout=30).status_code == 200


def _viewer_socket(port: int, read_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if read_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, read_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /video_feed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


@pytest.mark.slow
def test_page_answers_while_40_viewers_never_read(serve, make_video):
    served = serve(http_threads=32)
    _streaming(served, make_video)
    sockets = [_viewer_socket(served.port, read_buffer=4096) for _ in range(40)]
    try:
        time.sleep(2)  # let their buffers fill
        for _ in range(3):
            _answers(served.url + "/")
            _answers(served.url + "/api/status")
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_viewer_that_never_reads_is_dropped_after_the_send_timeout(serve, make_video):
    served = serve(http_threads=8, send_timeout=2)
    # Big frames, flat out: the kernel's socket buffers (a few MB) fill in seconds, then waitress' own.
    _streaming(served, make_video, width=1280, height=720, jpeg_quality=95, realtime=False, detect_every=10)
    hub = served.app.extensions["detection"].stream.runner.hub
    sock = _viewer_socket(served.port, read_buffer=4096)
    try:
        assert wait_for(lambda: hub.viewers == 1, timeout=10)
        started = time.monotonic()
        assert wait_for(lambda: hub.viewers == 0, timeout=60), "the stalled viewer still holds its thread"
        print(f"stalled viewer dropped after {time.monotonic() - started:.1f} s")
    finally:
        sock.close()


def _thread_count() -> int:
    return threading.active_count()


@pytest.mark.slow
def test_200_viewers_dropping_abruptly_leave_no_threads_or_fds_behind(serve, make_video):
    # Events off: their SQLite database (3 descriptors with its WAL) opens with the first event, mid-count.
    served = serve(http_threads=32, no_events=True)
    _streaming(served, make_video)
    hub = served.app.extensions["detection"].stream.runner.hub
    time.sleep(0.5)
    threads, fds = _thread_count(), _open_fds()
    for wave in range(5):
        sockets = [_viewer_socket(served.port) for _ in range(40)]
        for sock in sockets:
            sock.recv(1024)  # each got an answer (a stream, or 503 when every slot is taken)
        for sock in sockets:
            # SO_LINGER 0: close with RST, as a phone that walks out of Wi-Fi range never does a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
    assert wait_for(lambda: hub.viewers == 0, timeout=20), hub.viewers
    assert wait_for(lambda: _open_fds() <= fds + 2, timeout=20), (_open_fds(), fds)
    assert _thread_count() <= threads + 1
    _answers(served.url + "/api/status")
