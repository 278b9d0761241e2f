"""Serve an RTSP stream with GStreamer's RTSP server (run with Debian's /usr/bin/python3: python3-gi).

Two inputs: --frames 'dir/%05d.jpg' loops a folder of JPEG frames; --stdin reads an MJPEG byte stream
(concatenated JPEGs) from stdin and serves each frame as it arrives (for lag measurement).
"""
import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

# Run by Debian's python3 (python3-gi), outside the venv: the project's stdlib-only MJPEG helpers by path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: run as a script
from server.vision.mjpeg import split_jpegs  # noqa: E402

ENCODE = (
    "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
    "key-int-max={gop} bframes=0 ! rtph264pay name=pay0 pt=96 config-interval=1"
)


def frames_pipeline(pattern, fps):
    return (
        f"( multifilesrc location={pattern} loop=true caps=image/jpeg,framerate={fps}/1 ! jpegdec ! "
        + ENCODE.format(gop=fps) + " )"
    )


def stdin_pipeline(fps):
    return (
        # Like a camera, drop frames rather than queue them when the encoder falls behind (a busy machine):
        # a queue here would be lag the server under test is not to blame for.
        f"( appsrc name=src is-live=true format=time do-timestamp=true leaky-type=downstream max-buffers=2 "
        f"caps=image/jpeg,framerate={fps}/1 ! jpegdec ! queue leaky=downstream max-size-buffers=1 "
        "max-size-bytes=0 max-size-time=0 ! " + ENCODE.format(gop=fps) + " )"
    )


class StdinFeeder:
    """Split stdin into JPEGs and push each into every appsrc of the (shared) media."""

    def __init__(self):
        self.sources = []
        self.lock = threading.Lock()

    def attach(self, factory, media):
        src = media.get_element().get_by_name("src")
        with self.lock:
            self.sources = [src]

    def run(self):
        for jpeg in split_jpegs(lambda: sys.stdin.buffer.read1(65536)):
            with self.lock:
                sources = list(self.sources)
            for src in sources:
                src.emit("push-buffer", Gst.Buffer.new_wrapped(jpeg))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/stream")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--frames", help="printf pattern of JPEG files to loop, e.g. dir/%%05d.jpg")
    parser.add_argument("--stdin", action="store_true", help="serve MJPEG read from stdin")
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(True)
    if args.stdin:
        feeder = StdinFeeder()
        factory.set_launch(stdin_pipeline(args.fps))
        factory.connect("media-configure", feeder.attach)
        threading.Thread(target=feeder.run, daemon=True).start()
    else:
        factory.set_launch(frames_pipeline(args.frames, args.fps))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))  # the stdin reader thread would block a clean exit
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
