"""Detect boxes on chosen frames of a video with the server's own detect path, and print them as JSON.

    PYTHONPATH=. python .ci/pi/detections.py --model M.onnx --video V --frames 0,1,2 [--imgsz 320] > boxes.json
        [--save-tensors T.npz]       keep the first frame's network input and raw output (no extra inference)
        [--compare-tensors T.npz]    also run the network on that input and report how far its output is
        [--ncnn OUT.json]            also run NCNN (the files the server wrote beside the ONNX): fp16 on the
                                     frames, fp32 on the first frame's input; both against ONNX Runtime's

.ci/pi/check.sh runs it on both sides of the aarch64 check, each with the ONNX its own server made from
the same upload: inside the emulated root with the runtime venv (only requirements.txt installed), and on
the x86_64 host. Same frames in, the same boxes must come out (compared by `.ci/pi/drive.py boxes`). The
tensors tell apart the two places where the CPUs may differ: the preprocessing (OpenCV's resize rounds
differently with NEON than with AVX) and the network itself (ONNX Runtime's kernels).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from server.models.ncnn import cached
from server.vision import processing
from server.vision.detector import Detector, default_threads
from server.vision.engines.ncnn_engine import NcnnEngine, NcnnFiles

logger = logging.getLogger("ci.pi.detections")


def frames_at(path: str, wanted: set[int]):
    """Yield (index, BGR image) for the wanted frame indices, decoding the video in order."""
    capture = cv2.VideoCapture(path)
    index = 0
    try:
        while wanted:
            ok, image = capture.read()
            if not ok:
                break
            if index in wanted:
                wanted.discard(index)
                yield index, image
            index += 1
    finally:
        capture.release()
    if wanted:
        raise SystemExit(f"the video has no frames {sorted(wanted)}")


class RecordingDetector(Detector):
    """The server's Detector, keeping the last network input and raw output it saw."""

    last: tuple[np.ndarray, np.ndarray] | None = None

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        output = super().infer(tensor)
        self.last = (tensor, output)
        return output


def compare_tensors(path: str, detector: Detector, index: int, image: np.ndarray, imgsz: int) -> dict:
    """Run the network on the other side's input for this frame; report output and input differences."""
    other = np.load(path)
    if int(other["frame"]) != index:
        raise SystemExit(f"{path} holds frame {int(other['frame'])}, not {index}")
    difference = np.abs(detector.infer(other["tensor"]) - other["output"])[0]
    own_tensor, _ = processing.preprocess(image, detector.input_hw(image.shape[:2], imgsz))
    inputs = np.abs(own_tensor - other["tensor"])
    return {
        "frame": index,
        "max_box_diff": float(difference[:4].max()),
        "max_score_diff": float(difference[4:].max()),
        "input_values_differing": int((inputs > 0).sum()),
        "input_values": int(inputs.size),
        "max_input_diff_levels": round(float(inputs.max()) * 255, 2),
    }


def boxes_of(detections: processing.Detections) -> dict:
    return {
        "boxes": detections.boxes.astype(float).round(4).tolist(),
        "scores": detections.scores.astype(float).round(6).tolist(),
        "classes": detections.class_ids.astype(int).tolist(),
    }


def ncnn_against(args, reference: tuple[np.ndarray, np.ndarray], images: dict[int, np.ndarray]) -> dict:
    """NCNN on the same CPU: fp16 boxes on the frames, fp32 raw output on ONNX Runtime's first input tensor."""
    files = NcnnFiles.beside(args.model)
    if not cached(Path(args.model), files):
        raise SystemExit(f"no NCNN model beside {args.model}: the server did not write one")
    tensor, expected = reference
    fp32 = NcnnEngine(files, default_threads(), "fp32").infer(tensor)
    relative = np.abs(fp32 - expected) / (np.abs(expected) + 1)
    fp16 = Detector(NcnnEngine(files, default_threads(), "fp16"))
    found = {str(index): boxes_of(fp16.detect(image, args.imgsz, args.conf, args.iou)) for index, image in images.items()}
    logger.info("ncnn fp32 on ONNX Runtime's input: max relative difference %.2g", float(relative.max()))
    return {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou, "frames": found,
            "raw_fp32": {"max_relative_diff": float(relative.max())}}


def detect_frames(args) -> dict:
    """Boxes for each wanted frame; the first frame's input and raw output saved or compared on request."""
    detector = RecordingDetector(args.model)
    frames = {int(f) for f in args.frames.split(",") if f.strip()}
    found, raw, first, images = {}, None, None, {}
    for index, image in frames_at(args.video, set(frames)):
        detections = detector.detect(image, args.imgsz, args.conf, args.iou)
        images[index] = image
        if index == min(frames):
            first = detector.last
        if index == min(frames) and args.save_tensors:
            tensor, output = detector.last
            np.savez(args.save_tensors, frame=index, tensor=tensor, output=output)
        if index == min(frames) and args.compare_tensors:
            raw = compare_tensors(args.compare_tensors, detector, index, image, args.imgsz)
            logger.info("frame %d on the other side's input: %s", index, raw)
        found[str(index)] = boxes_of(detections)
        logger.info("frame %d: %d boxes", index, len(detections))
    if args.ncnn:
        Path(args.ncnn).write_text(json.dumps(ncnn_against(args, first, images), indent=1))
    return {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou, "frames": found, "raw": raw}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", required=True, help="comma-separated frame indices")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--save-tensors", help="write the first frame's input and raw output here (.npz)")
    parser.add_argument("--compare-tensors", help="an .npz from --save-tensors on the other side")
    parser.add_argument("--ncnn", help="also run NCNN against ONNX Runtime here and write its boxes (.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    json.dump(detect_frames(args), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
