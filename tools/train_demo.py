"""Train the demo YOLOv8n on synthetic shapes from scratch, offline, and write it to server/demo/model/.

    python -m tools.train_demo [--epochs 9 --imgsz 320 --train 2000 --val 300 --workdir DIR]

Writes shapes-yolov8n.pt (stripped), shapes-yolov8n.onnx (dynamic input) and MODEL_CARD.md.
"""

from __future__ import annotations

import os

# Must be set before ultralytics is imported: it decides at import time whether it is online.
os.environ["YOLO_OFFLINE"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from server.demo import DEMO_ONNX, DEMO_PT, MODEL_DIR  # noqa: E402
from server.demo.dataset import write_dataset  # noqa: E402
from server.demo.shapes import CLASSES  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "shapes-demo-train"
CARD = MODEL_DIR / "MODEL_CARD.md"


@dataclass
class TrainSettings:
    """What to train on and for how long."""

    epochs: int = 9
    imgsz: int = 320
    train: int = 2000
    val: int = 300
    seed: int = 0
    batch: int = 16
    lr0: float = 0.002
    threads: int = 2
    workers: int = 2
    workdir: str = str(DEFAULT_WORKDIR)


def prepare_offline_ultralytics(threads: int) -> None:
    """Limit torch threads and stop ultralytics from reaching the network for fonts."""
    import torch
    import ultralytics.data.utils

    torch.set_num_threads(threads)
    # check_det_dataset() probes the web for Arial.ttf; nothing here draws text.
    ultralytics.data.utils.check_font = lambda *args, **kwargs: None


def elapsed_logger(started: float, epochs: int):
    """Return an ultralytics callback that logs overall elapsed time and a rough ETA after each epoch."""

    def log_elapsed(trainer) -> None:
        done = trainer.epoch + 1
        if done > epochs:  # the final validation of best.pt fires this callback once more
            return
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (epochs - done)
        map50 = trainer.metrics.get("metrics/mAP50(B)", 0)
        map5095 = trainer.metrics.get("metrics/mAP50-95(B)", 0)
        print(
            f"[demo-train] epoch {done}/{epochs} elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min, "
            f"val mAP50 {map50:.3f} mAP50-95 {map5095:.3f}",
            flush=True,
        )

    return log_elapsed


def train(settings: TrainSettings, data_yaml: Path) -> Path:
    """Train YOLOv8n from its yaml (no pretrained weights) and return the best checkpoint path."""
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_fit_epoch_end", elapsed_logger(time.perf_counter(), settings.epochs))
    model.train(
        data=str(data_yaml),
        epochs=settings.epochs,
        imgsz=settings.imgsz,
        batch=settings.batch,
        workers=settings.workers,
        seed=settings.seed,
        device="cpu",
        pretrained=False,
        amp=False,
        plots=False,
        # From scratch on a short CPU budget: every batch is an optimizer step, a brisk AdamW,
        # a one-epoch warm-up, and images cached in RAM so the two cores compute rather than decode.
        nbs=settings.batch,
        optimizer="AdamW",
        lr0=settings.lr0,
        warmup_epochs=1,
        close_mosaic=max(1, settings.epochs // 5),
        cache="ram",
        project=str(Path(settings.workdir) / "runs"),
        name="shapes",
        exist_ok=True,
        verbose=True,
    )
    return Path(model.trainer.best)


def validate(weights: Path, data_yaml: Path, imgsz: int, workdir: Path) -> dict[str, float]:
    """Return ultralytics' val mAP50 and mAP50-95 of a checkpoint."""
    from ultralytics import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(data_yaml), imgsz=imgsz, batch=16, device="cpu", plots=False, project=str(workdir / "runs")
    )
    return {"mAP50": float(metrics.box.map50), "mAP50-95": float(metrics.box.map)}


def export_onnx(weights: Path, imgsz: int) -> Path:
    """Export a checkpoint to ONNX with a dynamic input and return the file."""
    from ultralytics import YOLO

    exported = YOLO(str(weights)).export(format="onnx", dynamic=True, simplify=True, imgsz=imgsz, device="cpu")
    return Path(exported)


def pipeline_accuracy(data_yaml: Path, sizes: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """Return {imgsz: (mAP50, mAP50-95)} of the server's own ONNX pipeline on the val set."""
    from tools.evaluate import evaluate_model, labelled_images, val_images_dir

    samples = labelled_images(val_images_dir(data_yaml))
    results = {size: evaluate_model(DEMO_ONNX, samples, size)[0] for size in sizes}
    return {size: (result.map50, result.map50_95) for size, result in results.items()}


def accuracy_rows(pipeline: dict[int, tuple[float, float]]) -> str:
    """Return markdown table rows of the server pipeline's accuracy per input size."""
    from server.vision.processing import input_shape_for

    rows = []
    for size, (map50, map50_95) in pipeline.items():
        height, width = input_shape_for((480, 640), size)
        rows.append(f"| server pipeline, imgsz {size} ({height}x{width} input) | {map50:.3f} | {map50_95:.3f} |")
    return "\n".join(rows)


def model_card(
    settings: TrainSettings, metrics: dict[str, float], pipeline: dict[int, tuple[float, float]], minutes: float
) -> str:
    """Return the MODEL_CARD.md text."""
    classes = ", ".join(f"{index}: {name}" for index, name in enumerate(CLASSES))
    mosaic_off = max(1, settings.epochs // 5)
    sizes = f"--train {settings.train} --val {settings.val} --seed {settings.seed}"
    return f"""# shapes-yolov8n — demo model

A YOLOv8n trained **from scratch** (no pretrained weights) on synthetic shapes rendered by
`server/demo/shapes.py`: coloured circles, squares, triangles, stars and crosses with random sizes
(30-150 px on a 640x480 frame), rotations, shading, overlaps, occluding bars and partly off-frame,
over textured backgrounds (gradients, noise, stripes, checkers, blurred blobs).
It exists so the server has a demo that works offline (`run.py --demo`), not for real-world use.

| | |
|---|---|
| classes | {classes} |
| input size | {settings.imgsz} (ONNX input is dynamic: any stride-32 multiple works) |
| epochs | {settings.epochs} |
| dataset | {settings.train} train / {settings.val} val images, 640x480, seed {settings.seed} |
| optimizer | AdamW lr0 {settings.lr0}, batch {settings.batch} (nbs {settings.batch}), 1 warm-up epoch |
| augmentation | ultralytics defaults (mosaic, HSV, flips, scale 0.5); mosaic off for the last {mosaic_off} epoch(s) |
| hardware | CPU, {settings.threads} torch threads, {settings.workers} dataloader workers |
| training time | {minutes:.1f} min on a shared 2-core x86 CPU |
| trained | {datetime.date.today().isoformat()} |

Files: `shapes-yolov8n.pt` (stripped checkpoint), `shapes-yolov8n.onnx`
(ultralytics export, `dynamic=True, simplify=True, imgsz={settings.imgsz}`).

## Accuracy on the {settings.val} val images

| | mAP50 | mAP50-95 |
|---|---|---|
| ultralytics val of the .pt, imgsz {settings.imgsz} | {metrics["mAP50"]:.3f} | {metrics["mAP50-95"]:.3f} |
{accuracy_rows(pipeline)}

The server pipeline rows come from `tools.evaluate` (conf 0.001, NMS IoU 0.7, 300 detections, as
ultralytics val). Run the demo at imgsz {settings.imgsz}: the model was trained at that scale, and at 640
the shapes look twice as big as anything it saw in training.

## Reproduce

```
python -m tools.train_demo --epochs {settings.epochs} --imgsz {settings.imgsz} \\
    --train {settings.train} --val {settings.val} --seed {settings.seed} --lr0 {settings.lr0}
```

The dataset alone: `python -m server.demo.dataset --out DIR {sizes}`.
Accuracy of the server's own ONNX pipeline (and of quantized variants) on the val set:
`python -m tools.evaluate --model server/demo/model/shapes-yolov8n.onnx --data DIR --imgsz 640 320 --ultralytics`.
"""


def dataset(root: Path, settings: TrainSettings) -> Path:
    """Write the dataset, or reuse one written earlier with the same sizes and seed."""
    recipe = f"{settings.train} {settings.val} {settings.seed}\n"
    marker = root / "recipe.txt"
    if marker.exists() and marker.read_text() == recipe and (root / "data.yaml").exists():
        return root / "data.yaml"
    data_yaml = write_dataset(root, settings.train, settings.val, settings.seed)
    marker.write_text(recipe)
    return data_yaml


def run(settings: TrainSettings) -> dict[str, float]:
    """Generate the dataset, train, validate, export and write the model files and card."""
    started = time.perf_counter()
    workdir = Path(settings.workdir).resolve()
    data_yaml = dataset(workdir / "dataset", settings)
    print(f"[demo-train] dataset ready in {time.perf_counter() - started:.0f}s: {data_yaml}", flush=True)
    prepare_offline_ultralytics(settings.threads)
    best = train(settings, data_yaml)
    minutes = (time.perf_counter() - started) / 60
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, DEMO_PT)
    metrics = validate(DEMO_PT, data_yaml, settings.imgsz, workdir)
    shutil.move(export_onnx(DEMO_PT, settings.imgsz), DEMO_ONNX)
    pipeline = pipeline_accuracy(data_yaml, tuple(dict.fromkeys((settings.imgsz, 640))))
    CARD.write_text(model_card(settings, metrics, pipeline, minutes))
    total = (time.perf_counter() - started) / 60
    print(f"[demo-train] done in {total:.1f} min: {metrics} {asdict(settings)}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the training."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(TrainSettings(**vars(args)))


if __name__ == "__main__":
    main()
