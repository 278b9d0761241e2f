"""Access control: who may use the server at all.

Threat: anyone on the same LAN (a guest phone, a compromised IoT device) can reach the port and drive the
API: upload files, watch the stream, delete everything. So whenever the server listens beyond loopback,
every request (page, API, MJPEG stream, static files) must carry a credential:

- token mode (the default): a random token, generated at first start and kept in the uploads folder
  (mode 0600), printed in the log inside the URL (`http://IP:PORT/?token=...`, as Jupyter does). The
  first visit exchanges it for a session cookie and the token is stripped from the address bar.
- password mode (`--password`, env EDGE_PASSWORD): browsers get a login page; scripts send HTTP Basic
  auth with that password (any user name).

The session cookie is an HMAC of the mode's secret under the stored key, so it survives restarts, dies
with a password change or a new token, and reveals neither. Failed attempts are rate-limited per client
IP (429 with Retry-After), correct ones included while the limit holds, so guessing gets nowhere.
Not covered: TLS (the LAN sees the token or password in clear; put a reverse proxy with HTTPS in front
when that matters) and clients behind one proxy sharing one rate-limit bucket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
)

logger = logging.getLogger(__name__)

TOKEN_FILE = ".access-token"
COOKIE_NAME = "edge_session"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
# Reachable without a credential: the login page and what it needs to render. Nothing secret.
PUBLIC_ENDPOINTS = {"auth.login", "auth.login_post"}
PUBLIC_STATIC = {"login.css", "favicon.svg"}
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0

bp = Blueprint("auth", __name__)


class FailureLimiter:
    """Count failed logins per client IP in a sliding window; a bounded table so it cannot eat memory."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S, max_clients: int = 4096):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds until client may try again (0: it may try now)."""
        with self._lock:
            times = self._recent(client)
            if len(times) < self.max_failures:
                return 0
            return max(1, int(times[0] + self.window_s - time.monotonic()) + 1)

    def fail(self, client: str) -> None:
        with self._lock:
            times = self._recent(client)
            times.append(time.monotonic())
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque:
        times = self._failures.get(client, deque())
        cutoff = time.monotonic() - self.window_s
        while times and times[0] < cutoff:
            times.popleft()
        return times


@dataclass
class AccessControl:
    """The credential check; mode is 'off', 'token' or 'password'."""

    mode: str
    folder: Path
    password: str = ""
    no_auth: bool = False
    limiter: FailureLimiter | None = None

    def __post_init__(self):
        self.limiter = self.limiter or FailureLimiter()
        self._key: bytes | None = None
        self._key_lock = threading.Lock()

    @property
    def key(self) -> bytes:
        """The stored token, read or created when first needed (a loopback-only server never writes it)."""
        with self._key_lock:
            if self._key is None:
                self._key = load_or_create_key(self.folder)
            return self._key

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def token(self) -> str:
        return self.key.decode("ascii")

    def session_value(self) -> str:
        material = b"token" if self.mode == "token" else b"password:" + hashlib.sha256(self.password.encode()).digest()
        return hmac.new(self.key, b"edge-session:" + material, hashlib.sha256).hexdigest()

    def secret_matches(self, candidate: str) -> bool:
        """Compare a token or password in constant time."""
        expected = self.token if self.mode == "token" else self.password
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), expected.encode("utf-8"))

    def urls_with_token(self, urls: list[str]) -> list[str]:
        """The URLs to print in the log: with the token when that is the credential."""
        if self.mode != "token":
            return urls
        return [f"{url}?{urlencode({'token': self.token})}" for url in urls]


def load_or_create_key(folder: Path) -> bytes:
    """Return the stored access token, creating it (readable by this user only) at first start."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKEN_FILE
    try:
        text = path.read_text().strip()
        if len(text) >= 32:
            os.chmod(path, 0o600)
            return text.encode("ascii")
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    logger.info("generated a new access token in %s", path)
    return token.encode("ascii")


def auth_mode(host: str, password: str, no_auth: bool) -> str:
    """Auth is on beyond loopback, or whenever a password is given; --no-auth turns it off."""
    if no_auth:
        return "off"
    if password:
        return "password"
    return "off" if is_loopback(host) else "token"


def is_loopback(host: str) -> bool:
    """Whether only this machine can connect (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


def install(app: Flask, config) -> AccessControl:
    """Put access control in front of every route of app (checked after the cross-site guards)."""
    mode = auth_mode(config.host, config.password, config.no_auth)
    access = AccessControl(mode, Path(config.uploads), config.password, config.no_auth)
    if config.no_auth:
        logger.warning("access control is OFF (--no-auth): anyone who can reach this port can use the server")
    app.extensions["access"] = access
    app.register_blueprint(bp)
    app.before_request(_require_credential)
    return access


def set_listen_host(app: Flask, host: str) -> None:
    """Re-decide token mode for the address actually bound (a server on 127.0.0.1 needs no token)."""
    access: AccessControl = app.extensions["access"]
    access.mode = auth_mode(host, access.password, access.no_auth)


def _access() -> AccessControl:
    return current_app.extensions["access"]


def _client() -> str:
    return request.remote_addr or "?"


def _is_public() -> bool:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return True
    return request.endpoint == "static" and (request.view_args or {}).get("filename") in PUBLIC_STATIC


def _require_credential():
    access = _access()
    if not access.enabled or _is_public():
        return None
    if _has_session(access):
        return None
    offered = _offered_secret(access)
    if offered is None:
        return _unauthorized(access)
    wait = access.limiter.retry_after(_client())
    if wait:
        return _too_many(wait)
    if not access.secret_matches(offered):
        access.limiter.fail(_client())
        logger.warning("wrong %s from %s", access.mode, _client())
        return _unauthorized(access, wrong=True)
    if "token" in request.args and request.method in ("GET", "HEAD"):
        return _signed_in_response(access, _url_without_token())
    return None  # Basic auth or a bearer token: this request only, no cookie needed


def _has_session(access: AccessControl) -> bool:
    cookie = request.cookies.get(COOKIE_NAME, "").encode("utf-8", "replace")  # bytes: any text compares
    return hmac.compare_digest(cookie, access.session_value().encode("ascii"))


def _offered_secret(access: AccessControl) -> str | None:
    """The token or password this request carries, if any (query token, Basic or Bearer)."""
    if access.mode == "token" and "token" in request.args:
        return request.args.get("token", "")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and access.mode == "token":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]  # any user name
    return None


def _url_without_token() -> str:
    rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    return _safe_next(request.path + ("?" + urlencode(rest) if rest else ""))


def _wants_html() -> bool:
    accept = request.accept_mimetypes
    return request.method == "GET" and accept.quality("text/html") > accept.quality("application/json")


def _unauthorized(access: AccessControl, wrong: bool = False):
    if _wants_html():
        if access.mode == "password" and not wrong:
            return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}), 303)
        return _login_page(access, _wrong_secret(access) if wrong else "", 401)
    if access.mode == "password":
        what = "password (HTTP Basic, any user name)"
    else:
        what = "access token (?token=... from the server log)"
    response = jsonify({"error": ("wrong " if wrong else "this server needs its ") + what})
    response.status_code = 401
    if "Sec-Fetch-Mode" not in request.headers:
        # Only non-browser clients are asked for Basic: in a browser it would pop a native dialog.
        response.headers["WWW-Authenticate"] = 'Basic realm="edge-detect", charset="UTF-8"'
    return response


def _wrong_secret(access: AccessControl) -> str:
    return "wrong password" if access.mode == "password" else "wrong access token"


def _too_many(wait: int):
    response = jsonify({"error": f"too many failed logins from {_client()}: try again in {wait} s"})
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


def _login_page(access: AccessControl, message: str, status: int, next_path: str = "/"):
    html = render_template("login.html", mode=access.mode, message=message, next_path=_safe_next(next_path))
    response = make_response(html, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _safe_next(target: str | None) -> str:
    """Only paths on this server (no `//host` or `/\\host` open redirects)."""
    target = (target or "/")[:2000]
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(c in target for c in "\r\n\t"):
        return "/"
    return target


def _signed_in_response(access: AccessControl, target: str):
    """Set the session cookie and leave for target.

    A navigation that started on another site (a link in a chat app) would not send a SameSite=Strict
    cookie on the redirected request, so that case gets a page that moves on by itself instead.
    """
    if request.headers.get("Sec-Fetch-Site", "none") in ("none", "same-origin"):
        response = redirect(target, 303)
    else:
        response = make_response(render_template("login.html", mode="continue", next_path=target, message=""))
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        COOKIE_NAME, access.session_value(), max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="Strict", path="/"
    )
    return response


@bp.get("/login")
def login():
    access = _access()
    if not access.enabled:
        return redirect("/", 303)
    return _login_page(access, "", 200, request.args.get("next", "/"))


@bp.post("/login")
def login_post():
    access = _access()
    if not access.enabled:
        return redirect("/", 303)
    next_path = request.form.get("next", "/")
    wait = access.limiter.retry_after(_client())
    if wait:
        response = _login_page(access, f"too many failed attempts: try again in {wait} s", 429, next_path)
        response.headers["Retry-After"] = str(wait)
        return response
    if not access.secret_matches(request.form.get("password", "")):
        access.limiter.fail(_client())
        logger.warning("failed login from %s", _client())
        return _login_page(access, _wrong_secret(access), 401, next_path)
    return _signed_in_response(access, _safe_next(next_path))
