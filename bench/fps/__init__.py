"""Benchmark this server's pipeline against Ultralytics' own predictor on one video, in one run.

    python -m bench.fps --video V --model M [--frames 300] [--precision fp32 int8]
        [--imgsz 640 320] [--detect-every 1 3] [--http fp32-640 int8-320-de3] [--viewers 1 8]
        [--json bench.json] [--plot bench.png]

Rows: Ultralytics on the .pt (PyTorch) and on its default ONNX export, streamed as a user of
Ultralytics would (predict(stream=True) -> results.plot() -> JPEG); then this project's
FramePipeline, FrameSource, Detector and Tracker (the code the server runs) for each variant
precision x imgsz x detect_every; then the real server over HTTP (run.py in a child process,
realtime off) read by 1 and 8 concurrent /video_feed viewers. Agreement is mAP50 of each row's
per-frame detections against this project's fp32 at 640 on every frame.

One module per job: `records` (variants and rows), `models` (the ONNX, the export, the int8 tuning), `rows` (the
in-process rows, interleaved), `server_http` (the real server and its viewers), `results` (scores, targets, table,
plot), `machine` (CPU and flags), `cli` (flags and the run), `progress`.
"""
