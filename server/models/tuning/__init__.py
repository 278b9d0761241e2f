"""On-device tuning: what this device runs fastest within the agreement asked for.

One job per model (job.TuningJob, on a thread of its own) builds ONNX Runtime's int8 recipes (recipes, calibration),
makes NCNN int8, times every engine x precision x threads the model offers in the same interleaved rounds on the
stream's own frames and judges each against ONNX Runtime fp32 on held-back frames (judging); tune.tune is one such
run, cached beside the model per device. server.models.choice picks the row `auto` runs from its table.
"""
