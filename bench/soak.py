"""Soak test: the real server streams the demo for a long time; memory must stay flat.

    python -m bench.soak [--minutes 20] [--viewers 4] [--json soak.json]
    python -m bench.soak --churn [--minutes 12] [--max-growth-mb 50]

It starts the server as production does (run.py, in a child process on 127.0.0.1: harness.server_process),
uploads the generated demo video and the demo model over HTTP, starts a looping stream, connects viewers that read
every part, and samples the server's resident memory (anonymous and file-backed apart), threads and open files
every --every seconds. The baseline is taken after --warmup seconds (sessions loaded, buffers grown), so the growth
printed at the end is what a long run adds. Exit status 1 when the growth exceeds --max-growth-mb.

Without --churn the stream runs in realtime with the same settings throughout. With --churn it plays as a user who
plays with the settings would (bench.soak_churn): the stream runs flat out (realtime off), the settings change every
--change-every seconds (engine, precision, detect_every, input size), Stop and Start every --restart-every seconds,
and the viewers come and go. Its samples then depend on how far the on-device tuning had got (Stop cancels it and
Start begins it again), so the growth is measured at each Stop once the tuning has ended: the last against the first
after the warm-up.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

from bench.soak_churn import Churn, Crowd
from harness.client import upload
from harness.server_process import ServerProcess
from server.demo import DEMO_ONNX
from server.demo.video import write_demo_video

logger = logging.getLogger("soak")


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    anon_mb: float  # the heap, arenas, sessions' buffers: what a leak grows
    file_mb: float  # mapped libraries and model files
    threads: int
    open_files: int
    frames_served: int
    server_frames: int
    changes: int  # settings changes made so far (--churn)
    tuning: bool  # the on-device tuning was running (it loads a dozen sessions for a while)


def resident_mb(pid: int) -> tuple[float, float, float]:
    """Return the process' resident, anonymous and file-backed memory in MB (/proc/PID/smaps_rollup)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    rss, anon = fields["Rss"], fields["Anonymous"]
    return round(rss, 1), round(anon, 1), round(rss - anon, 1)


def memory_mb(pid: int) -> dict:
    return dict(zip(("rss_mb", "anon_mb", "file_mb"), resident_mb(pid)))


def sample(process: psutil.Process, url: str, crowd: Crowd, churn: Churn | None, started: float) -> Sample:
    """Read the server process' memory, threads and descriptors, and the frames counted so far."""
    status = requests.get(f"{url}/api/status", timeout=10).json()
    return Sample(
        round(time.monotonic() - started, 1), *resident_mb(process.pid),
        threads=process.num_threads(),
        open_files=process.num_fds(),
        frames_served=crowd.frames(),
        server_frames=int(status["stats"].get("frames", 0)),
        changes=churn.changes if churn else 0,
        tuning=bool(status["precision"].get("building")),
    )  # fmt: skip


def start_stream(url: str, work: Path, realtime: bool) -> None:
    """Upload the demo video and model, loop (in realtime or flat out) at the demo model's size, start."""
    video = write_demo_video(work / "demo-shapes.mp4")
    upload(url, "/upload/video", Path(video), timeout=600).raise_for_status()
    upload(url, "/upload/model", DEMO_ONNX, timeout=600).raise_for_status()
    requests.post(f"{url}/api/settings", json={"loop": True, "realtime": realtime}, timeout=10).raise_for_status()
    requests.post(f"{url}/stream/start", timeout=60).raise_for_status()


def soak(args: argparse.Namespace) -> dict:
    """Run the soak and return its samples and verdict."""
    warmup = min(args.warmup, args.minutes * 30)
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        server = ServerProcess(Path(work) / "uploads", log_path=args.server_log)
        crowd = Crowd(server.url, args.viewers, lifetime_s=(5, 40) if args.churn else None)
        memory = functools.partial(memory_mb, server.process.pid)
        churn = Churn(server.url, args.change_every, args.restart_every, memory) if args.churn else None
        try:
            start_stream(server.url, Path(work), realtime=not args.churn)
            process = psutil.Process(server.process.pid)
            started = time.monotonic()
            samples, baseline, next_sample = [sample(process, server.url, crowd, churn, started)], None, args.every
            while samples[-1].seconds < args.minutes * 60:
                crowd.keep_up()
                if churn:
                    churn.step(time.monotonic() - started)
                time.sleep(0.5)
                if time.monotonic() - started >= next_sample:
                    next_sample += args.every
                    samples.append(sample(process, server.url, crowd, churn, started))
                    if baseline is None and samples[-1].seconds >= warmup:
                        baseline = samples[-1]
                    logger.info("%s", samples[-1])
        finally:
            crowd.leave()
            server.close()
    baseline = baseline or samples[0]
    end = samples[-1]
    growth = end.rss_mb - baseline.rss_mb
    if churn:  # like for like: the memory at the last Stop against the first Stop after the warm-up
        stopped = [s for s in churn.stopped if s["seconds"] >= warmup] or churn.stopped
        growth = stopped[-1]["rss_mb"] - stopped[0]["rss_mb"] if stopped else growth
    return {
        "minutes": args.minutes,
        "viewers": args.viewers,
        "churn": churn.summary() if churn else None,
        "baseline": asdict(baseline),
        "end": asdict(end),
        "peak_rss_mb": max(s.rss_mb for s in samples),
        "rss_growth_mb": round(growth, 1),
        "frames_served": end.frames_served,
        "server_frames": end.server_frames,
        "viewer_errors": crowd.errors,
        "samples": [asdict(s) for s in samples],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long to stream (default 20)")
    parser.add_argument("--viewers", type=int, default=4, help="viewers reading the stream (default 4)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory baseline (default 60)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="allowed RSS growth (default 20)")
    parser.add_argument("--churn", action="store_true",
                        help="flat out, settings changing, Stop/Start, viewers coming and going")
    parser.add_argument("--change-every", type=float, default=5.0, help="--churn: seconds between settings changes")
    parser.add_argument("--restart-every", type=float, default=60.0, help="--churn: seconds between Stop/Starts")
    parser.add_argument("--json", type=Path, help="write the samples and the verdict here")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    return parser.parse_args(argv)


def curve(samples: list[dict]) -> str:
    """One line per sample: time, RSS (anonymous), threads, open files, whether the tuning ran."""
    return "\n".join(f"  {s['seconds']:6.0f} s  RSS {s['rss_mb']:6.1f} MB (anon {s['anon_mb']:6.1f})  "
                     f"threads {s['threads']:3d}  open files {s['open_files']:3d}  changes {s['changes']:3d}"
                     f"{'  (tuning)' if s['tuning'] else ''}"
                     for s in samples)


def summary(result: dict) -> str:
    """The curves and the verdict's figures, as printed at the end."""
    base, end, churn = result["baseline"], result["end"], result["churn"]
    lines = [curve(result["samples"])]
    if churn:
        lines.append("at each Stop, once the tuning it cancels has ended:")
        lines += [f"  {s['seconds']:6.0f} s  RSS {s['rss_mb']:6.1f} MB (anon {s['anon_mb']:6.1f})"
                  for s in churn["stopped"]]
        moves = {name: value for name, value in churn.items() if name != "stopped"}
    growth = "at Stop" if churn else f"from {base['seconds']:.0f} s"
    lines.append(
        f"soak {result['minutes']:g} min, {result['viewers']} viewers: RSS {base['rss_mb']} MB at "
        f"{base['seconds']:.0f} s -> {end['rss_mb']} MB at {end['seconds']:.0f} s "
        f"(growth {growth} {result['rss_growth_mb']} MB, peak {result['peak_rss_mb']} MB); "
        f"threads {base['threads']} -> {end['threads']}, open files {base['open_files']} -> {end['open_files']}; "
        f"{result['server_frames']} frames produced, {result['frames_served']} parts served; "
        f"churn: {moves if churn else 'off'}; viewer errors: {result['viewer_errors'] or 'none'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = soak(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(summary(result))
    refused = result["churn"]["refused"] if result["churn"] else []
    return 0 if result["rss_growth_mb"] <= args.max_growth_mb and not result["viewer_errors"] and not refused else 1


if __name__ == "__main__":
    sys.exit(main())
