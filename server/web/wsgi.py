"""The production WSGI server (waitress), set up for MJPEG viewers."""

from __future__ import annotations

from waitress import create_server

# Waitress buffers up to 16 MB per connection before it makes the app wait; a slow MJPEG viewer would
# then fall minutes behind. With a small buffer the viewer's generator blocks instead, and when it
# resumes it takes the latest frame: slow viewers skip frames rather than queue them.
OUTBUF_HIGH_WATERMARK = 512 * 1024
OUTBUF_OVERFLOW = 2 * OUTBUF_HIGH_WATERMARK  # never spill a connection's buffer to disk


def make_server(app, host: str, port: int, threads: int):
    """Return a waitress server bound to host:port (0 picks a free port: see .effective_port)."""
    # Waitress refuses bodies over 1 GB by itself with an HTML page. Up to twice the app's own limit
    # the app answers instead, with a JSON 413 that names the limit.
    max_body = 2 * app.config["MAX_CONTENT_LENGTH"]
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="edge-detect",
        outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
        outbuf_overflow=OUTBUF_OVERFLOW,
        max_request_body_size=max_body,
    )
