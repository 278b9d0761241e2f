"""The MJPEG wire format: multipart/x-mixed-replace parts, written by the server and read by clients."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

BOUNDARY = "frame"
MIMETYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
MAX_JPEG_BYTES = 16 * 1024 * 1024


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


class JpegSplitter:
    """Cut a stream of concatenated JPEGs (what `rpicam-vid --codec mjpeg -o -` writes) at their SOI/EOI markers."""

    def __init__(self, max_jpeg_bytes: int = MAX_JPEG_BYTES):
        self.max_jpeg_bytes = max_jpeg_bytes
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def next_jpeg(self) -> bytes | None:
        """Return the next whole JPEG fed so far, or None until more bytes arrive."""
        start = self._buffer.find(JPEG_SOI)
        if start < 0:
            del self._buffer[:-1]  # keep a trailing 0xff that may start a marker
            return None
        end = self._buffer.find(JPEG_EOI, start + 2)
        if end < 0:
            del self._buffer[:start]
            if len(self._buffer) > self.max_jpeg_bytes:  # no end marker in sight: not MJPEG
                self._buffer.clear()
            return None
        jpeg = bytes(self._buffer[start : end + 2])
        del self._buffer[: end + 2]
        return jpeg


def split_jpegs(read_chunk: Callable[[], bytes]) -> Iterator[bytes]:
    """Yield the JPEGs of a concatenated-JPEG stream, read with read_chunk() until it returns b""."""
    splitter = JpegSplitter()
    while chunk := read_chunk():
        splitter.feed(chunk)
        while (jpeg := splitter.next_jpeg()) is not None:
            yield jpeg
