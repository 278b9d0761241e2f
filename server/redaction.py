"""Secrets in URLs kept out of logs and status: the one masking rule for live sources, the webhook and MQTT.

Threat: a camera's rtsp://user:password@..., a webhook's token in user:password@ and a broker's login all reach
log lines, /api/status and error messages as URLs; each goes through redact first, so only the owner's user
name and the host are ever shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """Return url with any password replaced by ***; the user name stays so the owner recognises it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    # A lone user part may itself be the secret (an API token): mask it too.
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if has_password and user else f"***@{host}"))
