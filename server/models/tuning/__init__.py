"""The device's engine timing: what this device runs fastest within the agreement asked for.

One job per model (job.EngineTiming, on a server.jobs.Worker) builds ONNX Runtime's int8 recipes (recipes,
calibration), lets each backend make what it needs from the frames (NCNN int8), times every engine x precision x
threads the model offers in the same interleaved rounds on the stream's own frames and judges each against ONNX
Runtime fp32 on held-back frames (judging); tune.time_engines is one such run, its report (report) cached beside
the model per device. server.models.choice picks the row `auto` runs from its table.
"""
