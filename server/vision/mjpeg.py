"""The MJPEG wire format: multipart/x-mixed-replace parts, written by the server and read by clients."""

from __future__ import annotations

from typing import Iterable, Iterator

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def part(jpeg: bytes) -> bytes:
    """Wrap one JPEG as a multipart part."""
    header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return header.encode() + jpeg + b"\r\n"


def _content_length(headers: bytes) -> int:
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("multipart part without Content-Length")


def iter_jpegs(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the JPEG payloads of an MJPEG byte stream given in arbitrary chunks."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while True:
            header_end = buffer.find(b"\r\n\r\n")
            if header_end < 0:
                break
            length = _content_length(buffer[:header_end])
            body_start = header_end + 4
            if len(buffer) < body_start + length + 2:
                break
            yield buffer[body_start : body_start + length]
            buffer = buffer[body_start + length + 2 :]
