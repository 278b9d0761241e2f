"""Slim a YOLOv8 detect model for your own scene: prune channels, then distil from the unpruned model on your footage.

    python -m tools.slim TEACHER.pt FOOTAGE [FOOTAGE ...] --out DIR [--ratio 0.3 | --flops 0.6] [--global]
        [--steps 1] [--imgsz 320] [--frames 400] [--held-back 0.2] [--epochs 5] [--batch 8] [--lr 0.001]
        [--conf 0.25] [--raw-weight 1.0] [--zoom 0] [--dataset data.yaml] [--threads 2]
        [--student yolov8n.yaml|other.pt]

FOOTAGE: video files or folders of frames, no labels needed. The teacher labels frames sampled from them; the last
part of each source is held back, never trained on, and judges agreement (the server's int8 verdict metric) before
and after fine-tuning. Writes into DIR: <name>-slim.pt (a checkpoint the server reads as it is: an ordinary
ultralytics one after uniform pruning, Torch-Pruning's C2f_v2 form after --global), <name>-slim.onnx (the server's
own conversion of it), MODEL_CARD.md and slim.json. Stopped runs go on from the last epoch when run again (DIR
keeps pruned.pt and resume.pt; with --steps N each step's in DIR/step-K). --steps N reaches the target in N
prune-and-distil steps, each pruning the previous step's distilled model by the same share (of FLOPs; of channels
with --ratio). --student distils into another network instead of the pruned teacher (the comparison: a stock
smaller model distilled on the same footage). Development side (torch, ultralytics, torch_pruning); never on the Pi.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: nothing is downloaded

import argparse  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from server.models.convert import convert_to_onnx  # noqa: E402
from tools.slimming import card, judge  # noqa: E402
from tools.slimming.distill import Distiller, Sample, TrainSettings, dataset_samples, letterbox_square  # noqa: E402
from tools.slimming.distill import teacher_labels  # noqa: E402
from tools.slimming.footage import sample_footage  # noqa: E402
from tools.slimming.student import student_for  # noqa: E402
from tools.slimming.pruning import (  # noqa: E402
    C2f_v2,
    cost,
    pickled_from_main,
    prune_to,
    recalibrate,
    save_checkpoint,
)

logger = logging.getLogger("tools.slim")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", type=Path, help="the YOLOv8 detect .pt to slim")
    parser.add_argument("footage", type=Path, nargs="+", help="video files or folders of frames")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs (and the resume state)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="share of each layer's channels to remove (default 0.3)")
    target.add_argument("--flops", type=float, help="share of the teacher's FLOPs to keep, e.g. 0.6")
    parser.add_argument("--global", dest="global_pruning", action="store_true",
                        help="rank channels across layers (C2f parts end unequal: Torch-Pruning's C2f_v2 form)")
    parser.add_argument("--steps", type=int, default=1,
                        help="reach the target in this many prune-and-distil steps (each trains --epochs)")
    parser.add_argument("--frames", type=int, default=400, help="frames to sample from the footage")
    parser.add_argument("--held-back", type=float, default=0.2, help="share of each source held back for judging")
    parser.add_argument("--dataset", type=Path, help="a labelled YOLO data.yaml whose train images are used too")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--student", type=Path, help="distil into this network instead of pruning the teacher: a "
                                                     "YOLOv8 .yaml (random weights) or detect .pt (its weights)")
    defaults = TrainSettings()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.student and (args.ratio is not None or args.flops is not None or args.global_pruning or args.steps > 1):
        parser.error("--student replaces pruning: leave out --ratio, --flops, --global and --steps")
    if args.steps < 1:
        parser.error("--steps must be 1 or more")
    if args.ratio is None and args.flops is None and not args.student:
        args.ratio = 0.3
    return args


def load_checkpoint(path: Path) -> torch.nn.Module:
    """Load a checkpoint this tool wrote (either form) as a float model."""
    with pickled_from_main(C2f_v2):
        return torch.load(path, map_location="cpu", weights_only=False)["model"].float()


def training_samples(teacher: torch.nn.Module, images: list[torch.Tensor], args: argparse.Namespace) -> list[Sample]:
    """The footage's training frames labelled by the teacher, plus a labelled dataset's images when given."""
    labels = teacher_labels(teacher, images, args.conf, args.batch)
    logger.info("teacher labelled %d frames with %d boxes above %.2f", len(images), sum(map(len, labels)), args.conf)
    samples = [Sample(image, rows) for image, rows in zip(images, labels)]
    return samples + (dataset_samples(args.dataset, args.imgsz) if args.dataset else [])


def measured(model: torch.nn.Module, onnx_path: Path, teacher_onnx: Path, held_back: list, args) -> dict:
    macs, params = cost(model)
    judged = judge.agreement(teacher_onnx, onnx_path, held_back, args.imgsz, args.threads)
    return {"gflops_640": round(2 * macs / 1e9, 3), "params": params, **judged}


def write_model(model: torch.nn.Module, stem: Path, imgsz: int) -> tuple[Path, Path, str]:
    """Save the model as the server's readable .pt (trained at imgsz: the server's first size) and its conversion."""
    pt, onnx_path = stem.with_suffix(".pt"), stem.with_suffix(".onnx")
    form = save_checkpoint(model, pt, imgsz=imgsz)
    convert_to_onnx(pt, onnx_path)
    return pt, onnx_path, form


def train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(**{name: getattr(args, name) for name in vars(TrainSettings())})


def step_target(args: argparse.Namespace, step: int, teacher_macs: float, current_macs: float) -> dict:
    """Step `step` of args.steps' pruning target for prune_to, relative to the model the step starts from.

    Each step keeps the same share of what is left (geometric steps), so the last one lands on the target.
    """
    if args.ratio is not None:
        return {"ratio": 1 - (1 - args.ratio) ** (1 / args.steps), "flops_target": None}
    return {"ratio": None, "flops_target": args.flops ** (step / args.steps) * teacher_macs / current_macs}


def step_folder(args: argparse.Namespace, step: int) -> Path:
    """Where a step keeps its files: DIR itself for a single step, DIR/step-K for each of --steps N."""
    return args.out if args.steps == 1 else args.out / f"step-{step}"


def prune_step(args, step: int, teacher: torch.nn.Module, images: list[torch.Tensor]) -> Path:
    """Write the step's starting model (pruned from the previous step's distilled one, BatchNorm re-estimated)."""
    start = step_folder(args, step) / "pruned.pt"
    if start.is_file():
        return start
    if args.student:
        pruned = student_for(args.student, teacher.names)
    else:
        base = teacher if step == 1 else load_checkpoint(step_folder(args, step - 1) / "distilled.pt")
        target = step_target(args, step, cost(teacher)[0], cost(base)[0])
        pruned = prune_to(base, target["ratio"], target["flops_target"], args.global_pruning)
    recalibrate(pruned, torch.stack(images))
    save_checkpoint(pruned, start)
    return start


def run_step(args, step: int, teacher, teacher_onnx: Path, images, samples, held_back) -> tuple[torch.nn.Module, dict]:
    """Prune (or build the student) and distil one step; return the student and what was measured."""
    out = step_folder(args, step)
    out.mkdir(parents=True, exist_ok=True)
    start = prune_step(args, step, teacher, images)
    student = load_checkpoint(start)
    before_onnx = out / "pruned.onnx"
    convert_to_onnx(start, before_onnx)
    measures = {"before": measured(student, before_onnx, teacher_onnx, held_back, args)}
    logger.info("step %d/%d pruned: %s", step, args.steps, measures["before"])
    measures["history"] = Distiller(student, teacher, samples, train_settings(args), out / "resume.pt").run()
    student.eval()
    if step < args.steps:  # the next step starts from this one's distilled model
        _, onnx_path, _ = write_model(student, out / "distilled", args.imgsz)
        measures["after"] = measured(student, onnx_path, teacher_onnx, held_back, args)
        logger.info("step %d/%d distilled: %s", step, args.steps, measures["after"])
    return student, measures


def slim(args: argparse.Namespace) -> dict:
    """Run the whole slimming; return what the model card records."""
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher = YOLO(str(args.teacher)).model.float().eval()
    teacher_onnx = args.out / "teacher.onnx"
    convert_to_onnx(args.teacher, teacher_onnx)
    footage = sample_footage(args.footage, args.frames, args.held_back)
    images = [letterbox_square(frame, args.imgsz) for frame in footage.train]
    report = {"teacher": measured(teacher, teacher_onnx, teacher_onnx, footage.held_back, args)}
    samples = training_samples(teacher, images, args)
    started, steps = time.monotonic(), []
    for step in range(1, args.steps + 1):
        student, measures = run_step(args, step, teacher, teacher_onnx, images, samples, footage.held_back)
        steps.append(measures)
    name = args.teacher.stem
    pt, onnx_path, form = write_model(student, args.out / f"{name}-slim", args.imgsz)
    report["before"] = steps[-1]["before"]
    report["after"] = measured(student, onnx_path, teacher_onnx, footage.held_back, args)
    logger.info("distilled: %s", report["after"])
    settings = train_settings(args)
    report.update({
        "outputs": {"pt": pt.name, "onnx": onnx_path.name, "form": form},
        "footage": {"sources": footage.sources, "train_frames": len(footage.train),
                    "held_back_frames": len(footage.held_back), "dataset": str(args.dataset or "")},
        "target": ({"student": str(args.student)} if args.student else
                   {"ratio": args.ratio, "flops_kept": args.flops, "global": args.global_pruning,
                    "steps": args.steps}),
        "training": {**vars(settings), "history": [e for m in steps for e in m["history"]],
                     "seconds_this_run": round(time.monotonic() - started), "threads": args.threads},
        "steps": [{"before": m["before"], "after": m.get("after", report["after"])} for m in steps],
        "teacher_file": str(args.teacher),
        "command": "python -m tools.slim " + shlex.join(args.argv),
    })  # fmt: skip
    card.write(args.out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    slim(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
