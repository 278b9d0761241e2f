"""Detect boxes on chosen frames of a video with the server's own detect path, and print them as JSON.

    python -m tools.pi.detections --model M.onnx --video V --frames 0,1,2 [--imgsz 320] > boxes.json
        [--save-tensors T.npz]       keep the first frame's network input and raw output (no extra inference)
        [--compare-tensors T.npz]    also run the network on that input and report how far its output is

tools/pi/check.sh runs it on both sides of the aarch64 check, each with the ONNX its own server made from
the same upload: inside the emulated root with the runtime venv (only requirements.txt installed), and on
the x86_64 host. Same frames in, the same boxes must come out (compared by `tools.pi.drive boxes`). The
tensors tell apart the two places where the CPUs may differ: the preprocessing (OpenCV's resize rounds
differently with NEON than with AVX) and the network itself (ONNX Runtime's kernels).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import cv2
import numpy as np

from server.vision import processing
from server.vision.detector import Detector

logger = logging.getLogger("tools.pi.detections")


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


def detect_frames(args) -> dict:
    """Boxes for each wanted frame; the first frame's input and raw output saved or compared on request."""
    detector = RecordingDetector(args.model)
    frames = {int(f) for f in args.frames.split(",") if f.strip()}
    found, raw = {}, None
    for index, image in frames_at(args.video, set(frames)):
        detections = detector.detect(image, args.imgsz, args.conf, args.iou)
        if index == min(frames) and args.save_tensors:
            tensor, output = detector.last
            np.savez(args.save_tensors, frame=index, tensor=tensor, output=output)
        if index == min(frames) and args.compare_tensors:
            raw = compare_tensors(args.compare_tensors, detector, index, image, args.imgsz)
            logger.info("frame %d on the other side's input: %s", index, raw)
        found[str(index)] = {
            "boxes": detections.boxes.astype(float).round(4).tolist(),
            "scores": detections.scores.astype(float).round(6).tolist(),
            "classes": detections.class_ids.astype(int).tolist(),
        }
        logger.info("frame %d: %d boxes", index, len(detections))
    return {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou, "frames": found, "raw": raw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", required=True, help="comma-separated frame indices")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--save-tensors", help="write the first frame's input and raw output here (.npz)")
    parser.add_argument("--compare-tensors", help="an .npz from --save-tensors on the other side")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    json.dump(detect_frames(args), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
