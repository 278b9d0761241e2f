"""Serve HTTP MJPEG (multipart/x-mixed-replace) to any number of clients from ffmpeg's output.

ffmpeg encodes (--frames: loops a folder of JPEG frames at --fps; --stdin: re-muxes an MJPEG stream read from
stdin) and writes JPEGs to a pipe; this server cuts them at JPEG markers and sends the newest to every client.
Standard library and the project's stdlib-only MJPEG helpers only, so it runs with any python3.
"""
import argparse
import http.server
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, with any python3
from server.vision.mjpeg import split_jpegs  # noqa: E402

BOUNDARY = b"ffmpeg"


class Latest:
    def __init__(self):
        self.cond = threading.Condition()
        self.jpeg = None
        self.seq = 0
        self.ended = False

    def publish(self, jpeg):
        with self.cond:
            self.jpeg, self.seq = jpeg, self.seq + 1
            self.cond.notify_all()

    def end(self):
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait(self, seen):
        with self.cond:
            self.cond.wait_for(lambda: self.ended or self.seq > seen, 5)
            return (self.seq, self.jpeg) if self.seq > seen else (seen, None)


def ffmpeg_command(args):
    if args.stdin:
        source = ["-f", "mjpeg", "-i", "pipe:0", "-c:v", "copy"]
    else:
        source = ["-re", "-stream_loop", "-1", "-framerate", str(args.fps), "-i", args.frames, "-c:v", "mjpeg", "-q:v", "4"]
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin" if not args.stdin else "-y", *source, "-f", "mjpeg", "pipe:1"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--frames")
    parser.add_argument("--stdin", action="store_true")
    args = parser.parse_args()
    latest = Latest()
    ffmpeg = subprocess.Popen(ffmpeg_command(args), stdin=sys.stdin if args.stdin else subprocess.DEVNULL, stdout=subprocess.PIPE)

    def pump():
        for jpeg in split_jpegs(lambda: ffmpeg.stdout.read1(65536)):
            latest.publish(jpeg)
        latest.end()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=" + BOUNDARY.decode())
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = 0
            try:
                while not latest.ended:
                    seen, jpeg = latest.wait(seen)
                    if jpeg is None:
                        continue
                    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(jpeg))
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=pump, daemon=True).start()
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        ffmpeg.kill()


if __name__ == "__main__":
    main()
