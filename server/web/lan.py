"""The addresses other devices on the LAN can open."""

from __future__ import annotations

import socket

import psutil

WILDCARDS = {"", "0.0.0.0", "::"}


def lan_addresses() -> list[str]:
    """Return this machine's IPv4 addresses other than loopback and link-local."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            ip = address.address
            if address.family == socket.AF_INET and not ip.startswith(("127.", "169.254.")):
                found.append(ip)
    return sorted(set(found))


def lan_urls(host: str, port: int) -> list[str]:
    """Return the URLs to open the page at, given the address the server listens on."""
    hosts = lan_addresses() if host in WILDCARDS else [host]
    return [f"http://{h}:{port}/" for h in hosts] or [f"http://127.0.0.1:{port}/"]
