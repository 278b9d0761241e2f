"""The models the rows run: this server's ONNX (converted its way), Ultralytics' own export, the tuned int8."""

from __future__ import annotations

import ast
from pathlib import Path

from bench.fps.progress import ProgressLine
from server.vision.detector import Detector
from server.vision.sources import CALIBRATION_FRAMES


def class_names(onnx_path: Path) -> list[str]:
    """Read class names from an ultralytics ONNX export's metadata."""
    meta = Detector(onnx_path, threads=1).session.get_modelmeta().custom_metadata_map
    names = ast.literal_eval(meta.get("names", "{}"))
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def our_onnx(model: Path, cache: Path) -> Path:
    """Return the ONNX the server would run for these weights, converting a .pt the server's way."""
    if model.suffix == ".onnx":
        return model
    from server.models import convert  # noqa: PLC0415  (only for .pt weights)

    return convert.convert_cached(model, cache, timeout=900).onnx_path


def ultralytics_onnx(model: Path, cache: Path) -> Path:
    """Export a .pt with Ultralytics' defaults (static 640x640), as its users do; reuse an earlier export."""
    if model.suffix == ".onnx":
        return model
    folder = cache / "ultralytics-export"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / model.name
    exported = copy.with_suffix(".onnx")
    if exported.is_file() and exported.stat().st_mtime >= model.stat().st_mtime:
        return exported
    copy.write_bytes(model.read_bytes())
    from ultralytics import YOLO  # noqa: PLC0415

    return Path(YOLO(str(copy)).export(format="onnx", imgsz=640, verbose=False))


def int8_model(onnx_path: Path, video: Path, threads: int, retune: bool) -> tuple[Path, dict]:
    """Tune int8 on frames of the video (or reuse a tuning of this very model on this CPU)."""
    from server.models.tuning import tune as tuning  # noqa: PLC0415
    from server.vision.sources import sample_frames  # noqa: PLC0415

    out = tuning.int8_path_for(onnx_path)
    report = None if retune else tuning.cached_tuning(onnx_path, out)
    if report is None:
        progress = ProgressLine("int8 tuning", 100)
        report = tuning.time_engines(
            onnx_path, sample_frames(video, CALIBRATION_FRAMES), tuning.TimingRequest(640, threads=threads),
            tuning.TimingHooks(on_progress=lambda stage, done, message: progress.update(round(done * 100), message[:40])),
        )
        progress.close(report.note)
    return Path(report.path), report.as_dict()  # the chosen recipe's model
