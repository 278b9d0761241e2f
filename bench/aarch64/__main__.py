"""The benchmark's aarch64 mode: instructions per displayed frame on an emulated Raspberry Pi 5 core.

    python -m bench.aarch64 prepare [--no-peer] [--slim S.pt]   models on the host, project and venvs in the root
    python -m bench.aarch64 run [VARIANT ...] [--short 2 --extra 3] [--jobs 1]
    python -m bench.aarch64 table [--json out.json]

Variants: ours as ENGINE-PRECISION-IMGSZ[-deN][-slim] (ort-fp32-640, ort-int8-320-de3, ncnn-fp16-640, ...; -slim:
the model given to prepare --slim, made by tools/slim.py from WORK/host/models/yolov8n-shapes80.pt), the peers as
ultralytics-onnx and ultralytics-ncnn (Ultralytics' predictor on its own export at 640, + results.plot() + JPEG).
With no variant, run counts the peers and ours over every engine x precision x {640, 416, 320} x detect-every
{1, 2, 3}; `-deauto` is the motion rule, `-still` the still scene. Each variant is two
whole emulated processes, of N and N + k frames (k rounded up to whole detect-every cycles); a finished run is
kept in WORK/runs and not counted again, so run can be stopped and started. The table (and --json) is rewritten
after every variant. docs/aarch64-meter.md has the method and its limits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.aarch64 import counts, emulator, table
from bench.aarch64.counts import Variant

logger = logging.getLogger("bench.aarch64")

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS = ("ultralytics-onnx", "ultralytics-ncnn")
SIZES = (640, 416, 320)
EVERY = (1, 2, 3)
PRECISIONS = {"ort": ("fp32", "int8"), "ncnn": ("fp16", "fp32")}


def default_variants(engines: tuple[str, ...] = ("ort", "ncnn")) -> list[Variant]:
    """The peers, then ours: each engine's 640 rows first (the targets' rows), then the rest of the grid."""
    variants = [Variant.parse(p) for p in PEERS]
    grid = [Variant("ours", e, p, s, d) for e in engines for p in PRECISIONS[e] for s in SIZES for d in EVERY]
    first = [v for v in grid if v.imgsz == 640 and v.detect_every == 1]
    return variants + first + [v for v in grid if v not in first]


def model_paths(place: emulator.Place) -> dict[str, str]:
    """The model files as the guest opens them (host paths inside the root)."""
    names = json.loads(place.host("models/models.json").read_text())
    return {role: str(place.host(f"models/{name}")) for role, name in names.items()}


def prepare(args: argparse.Namespace, place: emulator.Place) -> None:
    """Make the models and video on the host, then the folder, project copy and venvs in the root."""
    import shutil  # noqa: PLC0415

    from bench.aarch64 import models  # noqa: PLC0415

    host = args.work / "host"
    host.mkdir(parents=True, exist_ok=True)
    video, still = host / "video.mp4", host / "still.mp4"
    if not video.exists():
        from server.demo.video import write_demo_video  # noqa: PLC0415

        write_demo_video(video, seconds=4, fps=25, size=(640, 480), seed=0)
    if not still.exists():  # nothing moves for 4 s (the counted frames), then a shape enters
        from bench.keyframes_eval import write_still_scene  # noqa: PLC0415

        write_still_scene(still, seconds=4)
    files = models.prepare(host / "models", video, with_ncnn=not args.no_peer, slim=args.slim)
    target = place.host("models")
    target.mkdir(parents=True, exist_ok=True)
    # The names say what each file is as ultralytics and the server read names: "_ncnn_model" is the NCNN
    # export's folder, ".int8" marks the tuned model.
    roles = {"fp32": (files.fp32, "yolov8n80.onnx"), "int8": (files.int8, "yolov8n80.int8.onnx"),
             "ultralytics-onnx": (files.ultralytics_onnx, "ultralytics.onnx"),
             "ultralytics-ncnn": (files.ultralytics_ncnn, "ultralytics_ncnn_model"), "video": (video, "video.mp4"),
             "still": (still, "still.mp4")}
    if files.slim:
        roles.update({"slim-fp32": (files.slim[0], "yolov8n80-slim.onnx"),
                      "slim-int8": (files.slim[1], "yolov8n80-slim.int8.onnx")})
    names = {}
    for role, (path, name) in roles.items():
        if path is None:
            continue
        names[role], destination = name, target / name
        if path.is_dir():
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(path, destination)
        else:
            shutil.copy2(path, destination)
    if files.slim:
        forget_other_slim(args.work, files.slim[0].name)  # the conversion's name is the slimmed .pt's sha256
    (target / "models.json").write_text(json.dumps(names))
    emulator.copy_project(place)
    if args.ncnn_tree:  # another tree's NCNN engine (this tree has its own)
        emulator.copy_project(place, args.ncnn_tree, "project-ncnn")
    for role in ("fp32", "slim-fp32") if files.slim else ("fp32",):
        emulator.write_ncnn_cache(args.ncnn_tree or REPO_ROOT, target / names[role])
        emulator.write_ncnn_int8(args.ncnn_tree or REPO_ROOT, target / names[role], video)
    if not args.skip_venvs:
        emulator.make_venvs(place, args.work / "venv.log", peer=not args.no_peer)


def forget_other_slim(work: Path, source: str) -> None:
    """Delete the -slim rows' counts and x86 detections when they were made with another slimmed model than
    source (WORK/slim-source names the one they were made with)."""
    marker = work / "slim-source"
    if marker.exists() and marker.read_text() != source:
        stale = [*work.glob("runs/*-slim-f*.json"), *work.glob("runs/*-slim.error"), *work.glob("x86/*-slim.json")]
        for path in stale:
            path.unlink()
        logger.info("another slimmed model: %d counts and detections of the earlier one deleted", len(stale))
    marker.write_text(source)


def count_variant(variant: Variant, args: argparse.Namespace, place: emulator.Place, runs: Path) -> None:
    """Count the short and the long run of one variant (whichever is not on disk yet), logging progress."""
    paths = place.host("models/models.json")
    if not paths.exists():
        raise SystemExit("no models in the root: run `python -m bench.aarch64 prepare` first")
    models = model_paths(place)
    lengths = counts.run_lengths(variant.detect_every, args.short, args.extra)
    for frames in {"both": lengths, "short": lengths[:1], "long": lengths[1:]}[args.which]:
        path = table.record_path(runs, variant, frames)
        if path.exists():
            continue
        progress(args, f"start {variant.name} x{frames}")
        try:
            record = emulator.count_run(place, variant, frames, models, runs)
        except (RuntimeError, OSError, ValueError) as error:
            (runs / f"{variant.slug}.error").write_text(str(error))
            progress(args, f"FAILED {variant.name} x{frames}: {str(error)[-300:]}")
            return
        record.save(path)
        progress(args, f"done {variant.name} x{frames}: {record.total:,} instructions in {record.seconds:.0f}s")


def progress(args: argparse.Namespace, line: str) -> None:
    stamped = f"{time.strftime('%H:%M:%S', time.gmtime())} {line}"
    with open(args.work / "progress.log", "a") as log:
        log.write(stamped + "\n")
    sys.stderr.write(stamped + "\n")


def x86_detections(args: argparse.Namespace, place: emulator.Place, variants: list[Variant]) -> dict:
    """Our variants' detections over the whole video, run on the x86 host (cached in WORK/x86/), for agreement."""
    folder = args.work / "x86"
    folder.mkdir(exist_ok=True)
    models = model_paths(place)
    found = {}
    wanted = [v for v in variants if v.kind == "ours"]
    if table.REFERENCE not in {v.name for v in wanted}:
        wanted.insert(0, Variant.parse(table.REFERENCE))
    for variant in wanted:
        path = folder / f"{variant.slug}.json"
        if not path.exists():
            tree = emulator.source_tree(place, variant, host=True)
            try:
                frames = emulator.host_detections(variant, args.x86_frames, models, tree)
            except RuntimeError as error:
                logger.warning("%s", error)
                continue
            path.write_text(json.dumps(frames))
        found[variant.name] = json.loads(path.read_text())
    return found


def write_table(args: argparse.Namespace, variants: list[Variant], runs: Path, place: emulator.Place) -> str:
    """Build, print-ready and save the table (WORK/table.txt, and --json) from the runs on disk."""
    x86 = x86_detections(args, place, variants) if args.x86_frames else None
    rows = table.build_rows(variants, runs, lambda v: table.lengths_on_disk(
        runs, v, counts.run_lengths(v.detect_every, args.short, args.extra)), x86)
    if args.peers_from:
        rows = table.with_earlier_peers(rows, json.loads(args.peers_from.read_text()))
    checks = counts.verdicts(rows, args.min_agreement)
    text = counts.format_table(rows, checks)
    (args.work / "table.txt").write_text(text + "\n")
    results = {"method": {"short_frames": args.short, "extra_frames": args.extra, "cpu": "cortex-a76 (qemu user)",
                          "threads": 1, "published_pi5_ms": counts.PUBLISHED_PI5_MS,
                          "estimate": "ours / same-engine peer x peer's published Pi 5 ms (estimated)",
                          "x86_agreement_frames": args.x86_frames},
               "rows": [row.as_dict() for row in rows], "targets": [c.as_dict() for c in checks]}
    json_path = args.json or args.work / "aarch64.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2))
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.aarch64", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("prepare", "run", "table"))
    parser.add_argument("variants", nargs="*", help="variants to count (run, table); none: the full grid")
    parser.add_argument("--short", type=int, default=2, help="N: frames of the short run")
    parser.add_argument("--extra", type=int, default=3, help="k: frames the long run adds (rounded up to whole "
                                                            "detect-every cycles)")
    parser.add_argument("--jobs", type=int, default=1, help="emulated processes at once")
    parser.add_argument("--which", choices=("both", "short", "long"), default="both",
                        help="run: count only the short or the long run of each variant (to run both at once "
                             "from two commands)")
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/pi-root"), help="the Pi root (pi-root.sh)")
    parser.add_argument("--folder", default="/work-meter", help="the meter's own folder inside the root")
    parser.add_argument("--qemu", type=Path, default=Path("/var/tmp/qemu-count"),
                        help="qemu-count.sh's build: qemu-aarch64, libinsn.so, libmarks.so")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "bench-results" / "aarch64",
                        help="host folder for models, runs, progress.log and table.txt")
    parser.add_argument("--ncnn-tree", type=Path, help="a project tree with the NCNN engine, for the NCNN rows")
    parser.add_argument("--no-peer", action="store_true", help="prepare: skip the peer's venv and NCNN export")
    parser.add_argument("--skip-venvs", action="store_true", help="prepare: leave the root's venvs as they are")
    parser.add_argument("--slim", type=Path, help="prepare: the meter's model slimmed by tools/slim.py (a .pt), "
                                                  "for the -slim rows (docs/slimming.md)")
    parser.add_argument("--x86-frames", type=int, default=0,
                        help="table: also run our variants on the x86 host over this many frames (no counting) "
                             "for an agreement over more frames than the emulated runs have")
    parser.add_argument("--peers-from", type=Path,
                        help="table: the peers' rows from an earlier table's JSON (docs/aarch64-meter.json) where this "
                             "run has not counted them (the same model, video and root: check one of ours matches)")
    parser.add_argument("--min-agreement", type=float, default=0.90)
    parser.add_argument("--json", type=Path, help="write the table here too (default WORK/aarch64.json)")
    args = parser.parse_intermixed_args(argv)
    try:
        args.variant_list = [Variant.parse(v) for v in args.variants] or default_variants()
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    place = emulator.Place(args.root, args.folder, args.qemu)
    runs = args.work / "runs"
    runs.mkdir(exist_ok=True)
    if args.command == "prepare":
        prepare(args, place)
        return
    if args.command == "run":
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for variant in pool.map(lambda v: (count_variant(v, args, place, runs), v)[1], args.variant_list):
                write_table(args, args.variant_list, runs, place)
                progress(args, f"table updated after {variant.name}")
    if args.command == "table" and not args.variants:  # the table of what has been counted so far
        args.variant_list = [v for v in args.variant_list if list(runs.glob(f"{v.slug}-f*.json"))
                             or (runs / f"{v.slug}.error").exists()]
    sys.stdout.write(write_table(args, args.variant_list, runs, place) + "\n")


if __name__ == "__main__":
    main()
