"""Ultralytics' own export, build and prune, run in a child process: the peer of the converter tests and of
bench/acceptance_cost.py (the server never imports any of this).

python -m bench.ultralytics_reference export IN.pt OUT.onnx     ultralytics' own export(format="onnx", dynamic=True)
python -m bench.ultralytics_reference build YAML OUT.pt [--nc N] [--fp32] [--fused]
                                                                a checkpoint from an ultralytics yaml, random weights
python -m bench.ultralytics_reference prune IN.pt OUT_DIR --ratio R [--global]
                                                                channel-pruned by tools.slimming.pruning: pruned.pt
                                                                (C2f, or Torch-Pruning's __main__.C2f_v2 when global),
                                                                export.onnx (exported from the pruning process, as
                                                                Torch-Pruning's example does) and, when global,
                                                                unequal-c2f.pt (C2f with unequal parts)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

# Set before ultralytics is imported: no downloads, no pip installs.
ULTRALYTICS_ENVIRONMENT = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "ULTRALYTICS_SAFE_LOAD": "1"}


def block_network() -> None:
    """Make every outgoing connection fail, so nothing in this process can download anything."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled here")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def export(weights: Path, output: Path) -> None:
    """Export weights with ultralytics (dynamic H/W, simplified, CPU), as the server's export child used to."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="export-") as work:
        os.chdir(work)  # ultralytics writes next to the weights and into the cwd
        local = Path(work) / "model.pt"  # a neutral name: ultralytics renames "yolov5n.pt"-like names
        shutil.copyfile(weights, local)
        exported = YOLO(str(local)).export(format="onnx", dynamic=True, simplify=True, device="cpu")
        shutil.move(exported, output)


def build(yaml: str, output: Path, nc: int | None, fp32: bool, fused: bool, imgsz: int = 640) -> None:
    """Save a checkpoint built from an ultralytics yaml: fp16 like YOLO.save, or fp32 / BatchNorm-fused ones.

    imgsz is the size it says it was trained at (train_args), as tools/slim.py writes the size it distilled at; the
    model's own args keep ultralytics' default (640)."""
    import torch
    from ultralytics import YOLO

    model = YOLO(yaml).model if nc is None else YOLO(yaml).model.__class__(yaml, nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(model.model[-1].nc)}
    model.eval()
    if fused:
        model.fuse()
    model = model.float() if fp32 else model.half()
    torch.save({"model": model, "train_args": {"imgsz": imgsz}, "version": "reference", "date": None}, output)


def demo_images(imgsz: int):
    """Frames of the demo video, letterboxed as the tool trains on them (to recalibrate BatchNorm after pruning)."""
    import torch

    from server.demo.video import render_frames
    from tools.slimming.distill import letterbox_square

    return torch.stack([letterbox_square(frame, imgsz) for frame in render_frames(seconds=8, fps=4)])


def prune(weights: Path, output: Path, ratio: float, global_pruning: bool) -> None:
    """Prune weights, save the checkpoint forms and export the pruned network from this process (see the docstring)."""
    from ultralytics import YOLO

    from tools.slimming.pruning import prune as prune_model
    from tools.slimming.pruning import recalibrate, save_checkpoint

    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prune-") as work:
        os.chdir(work)
        local = Path(work) / "model.pt"
        shutil.copyfile(weights, local)
        yolo = YOLO(str(local))
        pruned = prune_model(yolo.model, ratio, global_pruning)
        recalibrate(pruned, demo_images(320))
        pruned = pruned.half().float()  # the weights the .pt will hold
        save_checkpoint(pruned, output / "pruned.pt")
        if global_pruning:
            save_checkpoint(pruned, output / "unequal-c2f.pt", unequal=True)
        yolo.model = pruned
        shutil.move(yolo.export(format="onnx", dynamic=True, simplify=True, device="cpu"), output / "export.onnx")


def main(argv: list[str] | None = None) -> int:
    os.environ.update(ULTRALYTICS_ENVIRONMENT)
    block_network()
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    export_command = commands.add_parser("export")
    export_command.add_argument("weights", type=Path)
    export_command.add_argument("output", type=Path)
    build_command = commands.add_parser("build")
    build_command.add_argument("yaml")
    build_command.add_argument("output", type=Path)
    build_command.add_argument("--nc", type=int)
    build_command.add_argument("--fp32", action="store_true")
    build_command.add_argument("--fused", action="store_true")
    build_command.add_argument("--imgsz", type=int, default=640)
    prune_command = commands.add_parser("prune")
    prune_command.add_argument("weights", type=Path)
    prune_command.add_argument("output", type=Path)
    prune_command.add_argument("--ratio", type=float, required=True)
    prune_command.add_argument("--global", dest="global_pruning", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.weights.resolve(), args.output.resolve())
    elif args.command == "prune":
        prune(args.weights.resolve(), args.output.resolve(), args.ratio, args.global_pruning)
    else:
        build(args.yaml, args.output.resolve(), args.nc, args.fp32, args.fused, args.imgsz)
    return 0


if __name__ == "__main__":
    sys.exit(main())
