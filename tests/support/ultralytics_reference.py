"""Ultralytics' side of the converter tests, run in a child process (the server never imports any of this).

python -m tests.support.ultralytics_reference export IN.pt OUT.onnx     ultralytics' own export(format="onnx", dynamic=True)
python -m tests.support.ultralytics_reference build YAML OUT.pt [--nc N] [--fp32] [--fused]
                                                                a checkpoint from an ultralytics yaml, random weights
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


def build(yaml: str, output: Path, nc: int | None, fp32: bool, fused: bool) -> None:
    """Save a checkpoint built from an ultralytics yaml: fp16 like YOLO.save, or fp32 / BatchNorm-fused ones."""
    import torch
    from ultralytics import YOLO

    model = YOLO(yaml).model if nc is None else YOLO(yaml).model.__class__(yaml, nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(model.model[-1].nc)}
    model.eval()
    if fused:
        model.fuse()
    model = model.float() if fp32 else model.half()
    torch.save({"model": model, "train_args": {"imgsz": 640}, "version": "reference", "date": None}, output)


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
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.weights.resolve(), args.output.resolve())
    else:
        build(args.yaml, args.output.resolve(), args.nc, args.fp32, args.fused)
    return 0


if __name__ == "__main__":
    sys.exit(main())
