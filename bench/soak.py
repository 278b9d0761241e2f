"""Soak test: the real server streams the demo to several viewers for a long time; memory must stay flat.

    python -m bench.soak [--minutes 20] [--viewers 4] [--json soak.json]

It starts the server as production does (run.py, in a child process on 127.0.0.1: harness.server_process),
uploads the generated demo video and the demo model over HTTP, starts a looping realtime stream, connects
viewers that read every part, and samples the server's resident memory, threads and open files every
--every seconds. The baseline is taken after --warmup seconds (sessions loaded, buffers grown), so the growth
printed at the end is what a long run adds. Exit status 1 when the growth exceeds --max-growth-mb.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

from bench.fps.server_http import Viewer
from harness.client import upload
from harness.server_process import ServerProcess
from server.demo import DEMO_ONNX
from server.demo.video import write_demo_video

logger = logging.getLogger("soak")


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    threads: int
    open_files: int
    frames_served: int
    server_frames: int


def sample(process: psutil.Process, url: str, viewers: list[Viewer], started: float) -> Sample:
    """Read the server process' memory, threads and descriptors, and the frames counted so far."""
    stats = requests.get(f"{url}/api/status", timeout=10).json()["stats"]
    return Sample(
        seconds=round(time.monotonic() - started, 1),
        rss_mb=round(process.memory_info().rss / 2**20, 1),
        threads=process.num_threads(),
        open_files=process.num_fds(),
        frames_served=sum(v.frames for v in viewers),
        server_frames=int(stats.get("frames", 0)),
    )


def start_stream(url: str, work: Path) -> None:
    """Upload the demo video and model, loop in realtime at the demo model's size, start."""
    video = write_demo_video(work / "demo-shapes.mp4")
    upload(url, "/upload/video", Path(video), timeout=600).raise_for_status()
    upload(url, "/upload/model", DEMO_ONNX, timeout=600).raise_for_status()
    requests.post(f"{url}/api/settings", json={"loop": True, "realtime": True}, timeout=10).raise_for_status()
    requests.post(f"{url}/stream/start", timeout=60).raise_for_status()


def soak(minutes: float, viewer_count: int, warmup: float, every: float) -> dict:
    """Run the soak and return its samples and verdict."""
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        server = ServerProcess(Path(work) / "uploads")
        viewers: list[Viewer] = []
        try:
            start_stream(server.url, Path(work))
            viewers = [Viewer(server.url) for _ in range(viewer_count)]
            for viewer in viewers:
                viewer.start()
            process = psutil.Process(server.process.pid)
            started = time.monotonic()
            samples = [sample(process, server.url, viewers, started)]
            baseline = None
            while samples[-1].seconds < minutes * 60:
                time.sleep(every)
                samples.append(sample(process, server.url, viewers, started))
                if baseline is None and samples[-1].seconds >= warmup:
                    baseline = samples[-1]
                logger.info("%s", samples[-1])
            errors = [v.error for v in viewers if v.error]
        finally:
            for viewer in viewers:
                viewer.stop.set()
            server.close()
    baseline = baseline or samples[0]
    end = samples[-1]
    return {
        "minutes": minutes,
        "viewers": viewer_count,
        "baseline": asdict(baseline),
        "end": asdict(end),
        "peak_rss_mb": max(s.rss_mb for s in samples),
        "rss_growth_mb": round(end.rss_mb - baseline.rss_mb, 1),
        "frames_served": end.frames_served,
        "server_frames": end.server_frames,
        "viewer_errors": errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long to stream (default 20)")
    parser.add_argument("--viewers", type=int, default=4, help="viewers reading the stream (default 4)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory baseline (default 60)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="allowed RSS growth (default 20)")
    parser.add_argument("--json", type=Path, help="write the samples and the verdict here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = soak(args.minutes, args.viewers, min(args.warmup, args.minutes * 30), args.every)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    base, end = result["baseline"], result["end"]
    print(
        f"soak {result['minutes']:g} min, {result['viewers']} viewers: RSS {base['rss_mb']} MB at "
        f"{base['seconds']:.0f} s -> {end['rss_mb']} MB at {end['seconds']:.0f} s "
        f"(growth {result['rss_growth_mb']} MB, peak {result['peak_rss_mb']} MB); threads {base['threads']} -> "
        f"{end['threads']}, open files {base['open_files']} -> {end['open_files']}; "
        f"{result['server_frames']} frames produced, {result['frames_served']} parts served; "
        f"viewer errors: {result['viewer_errors'] or 'none'}"
    )
    return 0 if result["rss_growth_mb"] <= args.max_growth_mb and not result["viewer_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
