"""Cross-site and DNS-rebinding guards, and the security headers every response carries.

Threats:
- Cross-site request forgery: any web page a LAN user opens can make their browser POST a form or a
  multipart upload to `http://192.168.1.23:5000/reset`. Browsers mark such requests with `Origin`
  (or `Referer`) and `Sec-Fetch-Site`; state-changing requests whose origin is not this server are
  refused with 403. Requests that carry none of these headers are not from a browser page (scripts,
  curl) and pass to access control.
- DNS rebinding: a page on `evil.example` makes its own name resolve to this server's address, and is
  then "same-origin" with it. Its requests still say `Host: evil.example`, so only Host names this
  machine answers to are served (IP literals, localhost, its host names and `<hostname>.local`, plus
  --allowed-hosts); anything else gets 400.
- Framing (clickjacking), MIME sniffing, injected scripts: CSP allowing only this origin (images also
  from blob: and data:), frames refused, nosniff, and no Referer leaking the page's URL elsewhere.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from flask import Flask, jsonify, request

logger = logging.getLogger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# `none`: the user typed the URL or used a bookmark; every other value means another origin started it.
ALLOWED_FETCH_SITES = {"same-origin", "none"}
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def machine_host_names() -> set[str]:
    """The names this machine answers to: localhost, its host names, and its mDNS name."""
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().rstrip(".")
        if name:
            names.add(name)
            names.add(name.split(".")[0] + ".local")
    return names


def parse_allowed_hosts(text: str) -> set[str]:
    """`--allowed-hosts a.example,.lan`: exact names, or suffixes when they start with a dot."""
    return {item.strip().lower().rstrip(".") for item in text.split(",") if item.strip()}


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower-cased, without port or trailing dot ('' when malformed)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else ""
    return host.rsplit(":", 1)[0].rstrip(".") if host.count(":") <= 1 else host


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class HostAllowList:
    def __init__(self, extra: str = ""):
        self.names = machine_host_names() | {n for n in parse_allowed_hosts(extra) if not n.startswith(".")}
        self.suffixes = tuple(n for n in parse_allowed_hosts(extra) if n.startswith("."))

    def allows(self, host_header: str) -> bool:
        name = host_name(host_header)
        if not name:
            return False
        return is_ip_literal(name) or name in self.names or name.endswith(self.suffixes or ("\0",))


def same_origin(url: str, host_header: str) -> bool:
    """Whether an Origin or Referer URL names the host:port this request was sent to."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.strip().lower()


def cross_site_reason() -> str | None:
    """Why this state-changing request looks started by another site (None when it does not)."""
    host = request.host
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
        return f"Sec-Fetch-Site: {site[:40]}"
    origin = request.headers.get("Origin")
    if origin is not None:
        return None if same_origin(origin, host) else f"Origin {origin[:100]}"
    referer = request.headers.get("Referer")
    if referer is not None and not same_origin(referer, host):
        return f"Referer {referer[:100]}"
    return None


def install(app: Flask, allowed_hosts: str = "") -> None:
    """Check Host and origin before anything else, and add the security headers to every response."""
    allow_list = HostAllowList(allowed_hosts)

    def check_host_and_origin():
        if not allow_list.allows(request.host):
            logger.warning("refused Host %r from %s", request.host[:100], request.remote_addr)
            return _json_error("unknown Host: add it with --allowed-hosts if this server should answer to it", 400)
        if request.method not in SAFE_METHODS:
            reason = cross_site_reason()
            if reason:
                logger.warning("refused cross-site %s %s (%s)", request.method, request.path[:100], reason)
                return _json_error(f"cross-site request refused ({reason})", 403)
        return None

    # First in line: before access control, so a forged request never even counts as a failed login.
    app.before_request_funcs.setdefault(None, []).insert(0, check_host_and_origin)
    app.after_request(add_security_headers)


def add_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _json_error(message: str, status: int):
    response = jsonify({"error": message})
    response.status_code = status
    return response
