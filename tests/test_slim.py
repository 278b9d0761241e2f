"""tools/slim.py on a tiny run: the demo model and a few frames of the demo video in, files the server takes out.

One epoch at a small size (what the numbers are worth is the tool's printout on a real run, not this test's): the
outputs must upload to a real server and stream, the model card must say what was measured, and a second run
resumes instead of starting again.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from harness.client import upload, video_feed
from server.demo.video import render_frames, write_demo_video
from server.models.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEMO_PT = ROOT / "server" / "demo" / "model" / "shapes-yolov8n.pt"


def run_slim(*args: str) -> dict:
    from tools.slim import parse_args, slim  # torch and ultralytics load only here

    return slim(parse_args(list(args)))


def streams(base: str, model: Path) -> dict:
    """Upload model, stream a few frames at 320 and return the status."""
    response = upload(base, "/upload/model", model)
    assert response.status_code == 201, response.text
    requests.post(f"{base}/api/settings", json={"imgsz": 320}, timeout=5).raise_for_status()
    assert requests.post(f"{base}/stream/start", timeout=30).json() == {"streaming": True}
    with video_feed(base) as frames:
        assert all(next(frames) for _ in range(3))
    status = requests.get(f"{base}/api/status", timeout=5).json()
    requests.post(f"{base}/stream/stop", timeout=30).raise_for_status()
    return status


@pytest.mark.slow
@pytest.mark.parametrize("pruning", [["--flops", "0.6", "--steps", "2"],
                                     ["--ratio", "0.3", "--global", "--zoom", "0.3"]])
def test_a_tiny_slimming_run_writes_a_pt_and_onnx_the_server_streams_and_a_card(live_server, tmp_path, pruning):
    video = write_demo_video(tmp_path / "footage.mp4", seconds=6, fps=5)
    out = tmp_path / "slim"
    arguments = [str(DEMO_PT), str(video), "--out", str(out), "--frames", "24", "--epochs", "1", "--imgsz", "256",
                 "--batch", "8", *pruning]  # fmt: skip
    report = run_slim(*arguments)
    pt, onnx_path = out / report["outputs"]["pt"], out / report["outputs"]["onnx"]
    global_pruning = "--global" in pruning
    assert report["outputs"]["form"] == ("C2f_v2" if global_pruning else "C2f")
    assert ("__main__.C2f_v2" in read_checkpoint(pt)[1]) == global_pruning
    assert read_checkpoint(pt)[0]["train_args"]["imgsz"] == 256  # the size it was distilled at, for the server
    kept = report["after"]["gflops_640"] / report["teacher"]["gflops_640"]
    assert kept <= 0.6 if "--flops" in pruning else kept < 0.6  # the target is met (ratio 0.3 keeps about half)
    steps = 2 if "--steps" in pruning else 1
    assert len(report["steps"]) == steps and len(report["training"]["history"]) == steps  # one epoch a step
    if steps == 2:  # the second step starts from the first one's distilled model and cuts further
        first = report["steps"][0]
        assert report["after"]["gflops_640"] < first["after"]["gflops_640"] == first["before"]["gflops_640"]
        assert first["after"]["gflops_640"] < report["teacher"]["gflops_640"]
        assert (out / "step-1" / "distilled.pt").is_file() and "step 1 after" in (out / "MODEL_CARD.md").read_text()
    assert report["teacher"]["agreement"] == 1.0  # the teacher judged against itself: the metric is wired right
    assert 0 <= report["before"]["agreement"] <= 1 and 0 <= report["after"]["agreement"] <= 1
    assert report["footage"]["held_back_frames"] >= 4 and report["after"]["frames"] == report["footage"]["held_back_frames"]
    card = (out / "MODEL_CARD.md").read_text()
    assert str(DEMO_PT) in card and "python -m tools.slim" in card and str(video) in card
    assert ("zoomed by 1 +- 0.3" in card) == ("--zoom" in pruning) and "Input size: 256 px" in card
    assert json.loads((out / "slim.json").read_text())["after"] == report["after"]

    base = live_server.url
    assert upload(base, "/upload/video", video).status_code == 201
    for model in (pt, onnx_path):
        status = streams(base, model)
        assert status["error"] is None and status["stats"]["frames"] >= 3, status["error"]

    again = run_slim(*arguments)  # the epochs are done: resumed, not trained again
    assert again["training"]["history"] == report["training"]["history"]


def test_the_held_back_frames_are_the_end_of_each_source_never_trained_on(tmp_path):
    from tools.slimming.footage import sample_footage

    first = write_demo_video(tmp_path / "a.mp4", seconds=4, fps=5, seed=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, frame in enumerate(render_frames(seconds=2, fps=5, seed=2)):
        assert cv2.imwrite(str(frames / f"{index:03d}.png"), frame)
    footage = sample_footage([first, frames], frames=30, held_back=0.25)
    # every frame of both (20 and 10); a quarter of each held back, rounded: 5 and 2
    assert (len(footage.train), len(footage.held_back)) == (15 + 8, 5 + 2)
    last_png = cv2.imread(str(frames / "009.png"))
    assert np.array_equal(footage.held_back[-1], last_png) and not any(np.array_equal(f, last_png) for f in footage.train)


def test_a_student_from_another_checkpoint_keeps_its_weights_and_takes_the_teachers_classes():
    import torch
    from ultralytics import YOLO

    from tools.slimming.student import student_for

    railway = ROOT / "tests" / "data" / "railway-obstacles-yolov8.pt"
    source = YOLO(str(railway)).model.float().state_dict()
    classes = {0: "circle", 1: "square", 2: "triangle"}
    student = student_for(railway, classes)
    weights = student.state_dict()
    assert student.names == classes and student.model[-1].nc == 3
    assert torch.equal(weights["model.0.conv.weight"], source["model.0.conv.weight"])  # the backbone's
    class_out = [k for k in weights if k.startswith("model.22.cv3.") and k.endswith("2.weight")]
    assert class_out and all(weights[k].shape[0] == 3 != source[k].shape[0] for k in class_out)  # new: 3 classes
    fresh = student_for(Path("yolov8n.yaml"), classes)  # ultralytics' own yaml, random weights
    assert fresh.model[-1].nc == 3 and not torch.equal(fresh.state_dict()["model.0.conv.weight"],
                                                       source["model.0.conv.weight"])


def test_a_student_replaces_pruning_and_cannot_be_combined_with_a_pruning_target(tmp_path):
    from tools.slim import parse_args

    common = [str(DEMO_PT), str(tmp_path / "v.mp4"), "--out", str(tmp_path)]
    assert parse_args([*common, "--student", "yolov8n.yaml"]).ratio is None
    with pytest.raises(SystemExit):
        parse_args([*common, "--student", "yolov8n.yaml", "--flops", "0.5"])


def test_pruned_layers_keep_whole_packs_of_channels_for_ncnn():
    import torch
    from ultralytics import YOLO

    from tools.slimming.pruning import CHANNEL_MULTIPLE, head_outputs, prune

    teacher = YOLO(str(DEMO_PT)).model.float().eval()
    pruned = prune(teacher, 0.3)
    head = {id(layer) for layer in head_outputs(pruned)}
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    inner = [m.out_channels for m in convs if id(m) not in head and m.out_channels > 1]
    assert len(inner) > 40 and all(width % CHANNEL_MULTIPLE == 0 for width in inner), inner
    full = sum(m.out_channels for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    assert sum(m.out_channels for m in convs) < 0.85 * full  # channels really went


def test_a_layer_keeps_the_nearest_whole_pack_not_the_one_below():
    from ultralytics import YOLO

    from tools.slimming.pruning import prune

    teacher = YOLO(str(DEMO_PT)).model.float().eval()
    stem = teacher.model[0].conv.out_channels
    # 10% of the stem's 16 channels is 1.6: the nearest pack keeps all 16 (Torch-Pruning's own rounding keeps 8)
    assert stem == 16 and prune(teacher, 0.1).model[0].conv.out_channels == 16
    assert prune(teacher, 0.4).model[0].conv.out_channels == 8  # 9.6 kept: the nearest pack is one


def test_a_zoomed_view_moves_its_labels_with_the_objects_and_drops_the_ones_that_leave():
    import torch

    from tools.slimming.distill import zoomed

    image = torch.full((1, 3, 100, 100), 114 / 255)
    image[:, :, 20:40, 60:80] = 1.0  # a white square: centre (0.7, 0.3), 0.2 wide
    image[:, :, 85:95, 2:12] = 0.0  # a black one near the lower left corner
    labels = [torch.tensor([[0, 0.7, 0.3, 0.2, 0.2], [1, 0.07, 0.9, 0.1, 0.1]])]
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        view, (rows,) = zoomed(image, labels, 0.5, generator)
        white = torch.nonzero(view[0, 0] > 0.9)
        (y0, x0), (y1, x1) = white.min(0).values.tolist(), white.max(0).values.tolist()
        square = rows[rows[:, 0] == 0][0]
        found = torch.tensor([(x0 + x1 + 1) / 200, (y0 + y1 + 1) / 200, (x1 - x0 + 1) / 100, (y1 - y0 + 1) / 100])
        assert torch.allclose(square[1:], found, atol=0.03), (square, found)  # the label follows the square
        factor = found[2].item() / 0.2  # the zoom, read off the white square
        black_inside = (view[0, 0] < 0.1).sum().item() / (100 * factor**2)  # share of the black square in view
        if abs(black_inside - 0.5) > 0.1:  # clearly in or clearly out: kept exactly when at least half is seen
            assert bool((rows[:, 0] == 1).any()) == (black_inside > 0.5), (black_inside, rows)
