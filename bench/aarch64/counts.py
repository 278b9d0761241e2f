"""The meter's arithmetic, with no emulation: read counts, subtract start-up, attribute stages, compare, estimate.

Every function here is pure (text or numbers in, numbers out), so tests/test_bench_aarch64.py checks them on
made-up logs without running qemu.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

# The guest's marks (bench/aarch64/guest.py) and the stage each one ends.
MARK_CODES = {
    "begin": 1, "decode": 2, "preprocess": 3, "inference": 4, "postprocess": 5, "track": 6, "draw": 7,
    "encode": 8, "publish": 9, "end": 10, "calibrate": 11,
}
STAGE_OF_CODE = {code: name for name, code in MARK_CODES.items()}
STAGES = ("decode", "preprocess", "inference", "postprocess", "track", "draw", "encode", "publish")
FRAME_END = {"ours": "publish", "ultralytics": "encode"}  # the last mark of a frame, per kind of program

# Ultralytics' Raspberry Pi 5 guide (docs/en/guides/raspberry-pi.md in ultralytics/ultralytics): YOLOv8n at 640,
# inference only, ms per image.
PUBLISHED_PI5_MS = {"onnx": 198.7, "ncnn": 94.3}
PI5_FPS_GOAL = 30  # issue 21 (issue 17's was 25): at most 158 M instructions per frame on the NCNN scale
STILL_GOAL = 10.0  # issue 21: a still scene's frames with auto, against every frame
SLIM_GOAL = 1.5  # issue 22: a slimmed model's NCNN fp16 inference at 640, against the unpruned model's
PEER_ONNX = "ultralytics-onnx-640"
PEER_NCNN = "ultralytics-ncnn-640"
PEER_ENGINE = {PEER_ONNX: "onnx", PEER_NCNN: "ncnn"}
# Which peer a row is fairly compared with: the same engine (ONNX Runtime runs an ONNX export).
SAME_ENGINE_PEER = {"ort": PEER_ONNX, "onnx": PEER_ONNX, "ncnn": PEER_NCNN}

TOTAL_RE = re.compile(r"^total insns:\s*(\d+)\s*$", re.MULTILINE)
INSTRUCTIONS_RE = re.compile(r"^instructions:\s*(\d+)\s*$", re.MULTILINE)
MARK_RE = re.compile(r"^mark (\d+) (\d+) (\d+) (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Variant:
    """One counted pipeline: ours (engine ort/ncnn, a precision, a size, detect-every N or auto, a scene) or a peer.

    Ours between keyframes interpolates, as the server does for a file. The scene is the demo video, or `still`: a
    fixed camera's view with sensor noise where nothing moves (tools/keyframes_eval.write_still_scene).
    """

    kind: str  # "ours" or "ultralytics"
    engine: str  # ours: "ort" or "ncnn"; peers: "onnx" or "ncnn" (the export Ultralytics runs)
    precision: str = "fp32"
    imgsz: int = 640
    detect_every: int | str = 1  # or "auto"
    scene: str = "demo"  # or "still"
    model: str = "base"  # or "slim": the meter's model slimmed by tools/slim.py (prepare --slim)

    @property
    def name(self) -> str:
        if self.kind == "ultralytics":
            return f"ultralytics-{self.engine}-{self.imgsz}"
        suffix = f"-de{self.detect_every}" if self.detect_every != 1 else ""
        suffix += "-still" if self.scene == "still" else ""
        suffix += "-slim" if self.model == "slim" else ""
        return f"ours {self.engine}-{self.precision}-{self.imgsz}{suffix}"

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")

    @classmethod
    def parse(cls, text: str) -> Variant:
        """Parse ort-fp32-640, ncnn-fp16-320-de3, ncnn-fp16-640-deauto-still, ncnn-fp16-640-de2-slim (ours) or
        ultralytics-onnx / -ncnn."""
        parts = text.removeprefix("ours ").replace(" ", "-").split("-")
        if parts[0] == "ultralytics":
            if len(parts) not in (2, 3) or parts[1] not in ("onnx", "ncnn") or parts[2:] not in ([], ["640"]):
                raise ValueError(f"{text!r}: a peer is ultralytics-onnx or ultralytics-ncnn (at 640)")
            return cls("ultralytics", parts[1])
        try:
            engine, precision, imgsz, *rest = parts
            model = "slim" if rest[-1:] == ["slim"] else "base"
            rest = rest[:-1] if model == "slim" else rest
            scene = "still" if rest[-1:] == ["still"] else "demo"
            rest = rest[:-1] if scene == "still" else rest
            if len(rest) > 1 or (rest and not rest[0].startswith("de")):
                raise ValueError
            every = rest[0].removeprefix("de") if rest else "1"
            every = every if every == "auto" else int(every)
            variant = cls("ours", engine, precision, int(imgsz), every, scene, model)
        except ValueError:
            raise ValueError(f"{text!r} is not like ort-fp32-640, ort-int8-320-de3, ncnn-fp16-416-de2, "
                             f"ncnn-fp16-640-deauto-still or ncnn-fp16-640-slim") from None
        allowed = {"ort": ("fp32", "int8"), "ncnn": ("fp32", "fp16", "int8")}
        if precision not in allowed.get(engine, ()) or (every != "auto" and every < 1):
            raise ValueError(f"{text!r}: engines and precisions are {allowed}, detect-every >= 1 or auto")
        return variant


def run_lengths(detect_every: int | str, short: int, extra: int) -> tuple[int, int]:
    """The frames of the short and the long run: the long one adds whole detect-every cycles, at least extra frames.

    With detect-every d the k counted frames must hold exactly k/d detections, or a de2 row would count 2 detections
    in 3 frames; frames are detected at index 0, d, 2d, ..., so k a multiple of d does it whatever N is. With
    interpolation the frames held at the end become a keyframe in both runs, so the difference keeps that ratio.
    `auto` has no cycle: its k frames hold what the motion rule chose (the guest prints how many).
    """
    cycle = 1 if detect_every == "auto" else detect_every
    k = -(-extra // cycle) * cycle
    return short, short + k


class CountError(ValueError):
    """A count is missing or does not add up (a crashed run, a wrong N)."""


@dataclass(frozen=True)
class Mark:
    code: int
    vcpu: int
    vcpu_count: int  # instructions that vCPU (guest thread) had run up to this mark
    total: int  # all vCPUs

    @property
    def stage(self) -> str:
        return STAGE_OF_CODE.get(self.code, f"code{self.code}")


def parse_total(text: str) -> int:
    """Return the instruction total of a plugin log ("total insns: N") or of qemu-count.sh's output."""
    found = TOTAL_RE.findall(text) or INSTRUCTIONS_RE.findall(text)
    if not found:
        raise CountError("no instruction count in the output (did the emulated program crash?)")
    return int(found[-1])


def parse_marks(text: str) -> list[Mark]:
    """Return the marks of a libmarks.so log, in the order the guest made them."""
    return [Mark(*map(int, match)) for match in MARK_RE.findall(text)]


def per_frame(total_long: int, total_short: int, frames_long: int, frames_short: int) -> float:
    """Instructions per frame: the run of N + k frames minus the run of N, over k (start-up cancels out)."""
    extra = frames_long - frames_short
    if extra <= 0:
        raise CountError(f"the long run must have more frames than the short one ({frames_long} vs {frames_short})")
    difference = total_long - total_short
    if difference <= 0:
        raise CountError(f"the run of {frames_long} frames counted no more than the run of {frames_short}")
    return difference / extra


def mark_cost(marks: list[Mark]) -> int:
    """What one mark costs by itself: the guest marks "calibrate" twice in a row before its frames."""
    pairs = [(a, b) for a, b in zip(marks, marks[1:]) if a.code == b.code == MARK_CODES["calibrate"]]
    if not pairs:
        return 0
    first, second = pairs[0]
    return second.vcpu_count - first.vcpu_count


def stage_counts(marks: list[Mark], kind: str, skip_frames: int) -> tuple[dict[str, float], int]:
    """Mean instructions per frame in each stage, over the frames after the first skip_frames; and their number.

    A stage's count is the guest thread's count from the previous mark to the mark that ends the stage (less one
    mark's own cost); a stage marked twice in a frame adds up. Frames end at FRAME_END[kind]; counting starts at
    the "begin" mark, so start-up is left out.
    """
    vcpu = next((m.vcpu for m in marks if m.code == MARK_CODES["begin"]), None)
    if vcpu is None:
        raise CountError("no begin mark: the guest did not reach its frames")
    own = mark_cost(marks)
    end_code = MARK_CODES[FRAME_END[kind]]
    sums = dict.fromkeys(STAGES, 0.0)
    frame, previous, counted = 0, None, 0
    for mark in marks:
        if mark.vcpu != vcpu:
            continue
        if mark.code == MARK_CODES["begin"]:
            previous = mark
            continue
        if previous is None:  # the calibration before the frames
            continue
        if mark.code == MARK_CODES["end"]:
            break
        if frame >= skip_frames and mark.stage in sums:
            sums[mark.stage] += mark.vcpu_count - previous.vcpu_count - own
        previous = mark
        if mark.code == end_code:
            counted += frame >= skip_frames
            frame += 1
    if counted == 0:
        raise CountError(f"no frame after the first {skip_frames} was marked")
    return {stage: total / counted for stage, total in sums.items()}, counted


# -- the table --------------------------------------------------------------------------------------


@dataclass
class MeterRow:
    """One variant's instructions per displayed frame, and how it compares."""

    name: str
    kind: str  # "ours" or "ultralytics"
    engine: str  # "ort" / "ncnn" (ours), "onnx" / "ncnn" (peers)
    precision: str
    imgsz: int
    detect_every: int | str
    per_frame: float | None  # instructions per displayed frame (N + k run minus N run, over k)
    stages: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None  # mAP50 vs ours ORT fp32 at 640 on the counted frames (emulated)
    agreement_x86: float | None = None  # the same pipelines on the x86 host over the whole video (more frames)
    vs_ncnn: float | None = None  # Ultralytics-NCNN@640 per frame / ours per frame (> 1: we run fewer)
    vs_onnx: float | None = None
    fair: str | None = None  # which of the two ratios compares the same engine ("ncnn", "onnx" or None)
    estimate_ms: float | None = None  # estimated Pi 5 ms per displayed frame
    estimate_fps: float | None = None
    error: str | None = None
    scene: str = "demo"  # "still": the still scene, not comparable with the demo video's rows

    def as_dict(self) -> dict:
        return asdict(self)


def ratio(peer: float | None, ours: float | None) -> float | None:
    """How many times fewer instructions ours runs than the peer (None when either is missing)."""
    if not peer or not ours:
        return None
    return peer / ours


def pi5_estimate_ms(ours: float, peer: float, published_ms: float) -> float:
    """Estimated Pi 5 ms per frame: ours / the same-engine peer's instructions x the peer's published Pi 5 ms.

    The published figure is inference only, and the peer's count is the whole displayed frame (decode, pre- and
    post-processing, plot, JPEG): scaling by the whole frame's count charges our overhead at inference's speed
    per instruction. See docs/aarch64-meter.md for the limits.
    """
    return ours / peer * published_ms


def score(rows: list[MeterRow]) -> None:
    """Fill each row's ratios against both peers, which one is fair, and its Pi 5 estimate."""
    by_name = {row.name: row for row in rows}
    peers = {name: by_name[name].per_frame if name in by_name else None for name in (PEER_NCNN, PEER_ONNX)}
    for row in rows:
        row.vs_ncnn = ratio(peers[PEER_NCNN], row.per_frame)
        row.vs_onnx = ratio(peers[PEER_ONNX], row.per_frame)
        peer = SAME_ENGINE_PEER.get(row.engine)
        row.fair = PEER_ENGINE[peer] if peer else None
        if row.per_frame and peer and peers.get(peer):
            row.estimate_ms = pi5_estimate_ms(row.per_frame, peers[peer], PUBLISHED_PI5_MS[PEER_ENGINE[peer]])
            row.estimate_fps = 1000 / row.estimate_ms


@dataclass
class Verdict:
    name: str
    goal: str
    value: str
    met: bool | None  # None: not measured

    def as_dict(self) -> dict:
        return asdict(self)


def judged_agreement(row: MeterRow) -> float | None:
    """The agreement a verdict uses: the x86 run over the whole video when there is one (more frames), else the
    emulated run's few frames."""
    return row.agreement_x86 if row.agreement_x86 is not None else row.agreement


def best_row(rows: list[MeterRow], min_agreement: float) -> MeterRow | None:
    """Ours with the fewest instructions per frame among those agreeing with ORT fp32 at 640 (unknown: allowed)."""
    ours = [r for r in rows if r.kind == "ours" and r.per_frame and r.scene == "demo"
            and (judged_agreement(r) is None or judged_agreement(r) >= min_agreement)]
    return min(ours, key=lambda r: r.per_frame, default=None)


def verdicts(rows: list[MeterRow], min_agreement: float = 0.90) -> list[Verdict]:
    """The targets of issues 17, 21 and 22 on the meter, each met, missed (with the value) or not measured."""
    by_name = {row.name: row for row in rows}
    result = []
    fp16 = by_name.get("ours ncnn-fp16-640")
    goal = f">= 1.3x fewer than {PEER_NCNN} (same engine), agreement >= {min_agreement}"
    if fp16 is None or fp16.vs_ncnn is None:
        result.append(Verdict("ours ncnn-fp16-640", goal, "not measured", None))
    else:
        agreement = judged_agreement(fp16)
        agrees = agreement is None or agreement >= min_agreement
        result.append(Verdict("ours ncnn-fp16-640", goal, f"{fp16.vs_ncnn:.2f}x, agreement {_shown(agreement)}",
                              fp16.vs_ncnn >= 1.3 and agrees))
    best = best_row(rows, min_agreement)
    for peer_name, goal_x, attr in ((PEER_NCNN, 3.0, "vs_ncnn"), (PEER_ONNX, 6.0, "vs_onnx")):
        goal = f">= {goal_x:g}x fewer than {peer_name} per displayed frame (best of ours)"
        value = getattr(best, attr) if best else None
        if value is None:
            result.append(Verdict(f"best vs {peer_name}", goal, "not measured", None))
        else:
            result.append(Verdict(f"best vs {peer_name}", goal, f"{value:.2f}x ({best.name})", value >= goal_x))
    goal = f">= {PI5_FPS_GOAL} fps estimated on a Pi 5, end to end (best of ours)"
    if best is None or best.estimate_fps is None:
        result.append(Verdict("best Pi 5 estimate", goal, "not measured", None))
    else:
        result.append(Verdict("best Pi 5 estimate", goal, f"{best.estimate_fps:.1f} fps, {best.estimate_ms:.1f} ms "
                              f"({best.name}, estimated)", best.estimate_fps >= PI5_FPS_GOAL))
    result.append(still_verdict(by_name))
    result.append(slim_verdict(by_name))
    return result


def slim_verdict(by_name: dict[str, MeterRow]) -> Verdict:
    """Issue 22: the slimmed model's inference stage (NCNN fp16, 640) runs >= 1.5x fewer instructions than the
    unpruned model's; its agreement with the unpruned model's ORT fp32 is shown beside."""
    base, slim = by_name.get("ours ncnn-fp16-640"), by_name.get("ours ncnn-fp16-640-slim")
    goal = f">= {SLIM_GOAL:g}x fewer inference instructions than the unpruned model (NCNN fp16, 640)"
    fewer = ratio(base.stages.get("inference") if base else None, slim.stages.get("inference") if slim else None)
    if fewer is None:
        return Verdict("slimmed model", goal, "not measured", None)
    return Verdict("slimmed model", goal, f"{fewer:.2f}x, agreement {_shown(judged_agreement(slim))}",
                   fewer >= SLIM_GOAL)


def still_verdict(by_name: dict[str, MeterRow]) -> Verdict:
    """Issue 21: on a still scene, auto's displayed frame runs >= 10x fewer instructions than detecting every frame."""
    every, auto = by_name.get("ours ncnn-fp16-640-still"), by_name.get("ours ncnn-fp16-640-deauto-still")
    goal = f">= {STILL_GOAL:g}x fewer per displayed frame than every frame while nothing moves"
    fewer = ratio(every.per_frame if every else None, auto.per_frame if auto else None)
    if fewer is None:
        return Verdict("still scene, auto", goal, "not measured", None)
    return Verdict("still scene, auto", goal, f"{fewer:.1f}x ({auto.per_frame / 1e6:.1f} M vs "
                   f"{every.per_frame / 1e6:.1f} M)", fewer >= STILL_GOAL)


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def format_table(rows: list[MeterRow], checks: list[Verdict]) -> str:
    """The meter's table: M instructions per displayed frame and per stage, ratios, estimates, then the targets."""
    header = (f"{'variant':<30}{'M/frame':>9}" + "".join(f"{s[:7]:>9}" for s in STAGES) + f"{'other':>9}"
              + f"{'vs UL-NCNN':>12}{'vs UL-ONNX':>12}{'Pi5 est ms':>12}{'est fps':>9}{'mAP50':>7}{'x86':>7}")
    lines = ["M instructions per displayed frame (aarch64, Cortex-A76 in qemu, one thread; N + k run minus N run, "
             "over k); stages: mean over the k frames",
             "mAP50: agreement with ours ort-fp32-640 on the counted frames (emulated); x86: the same pipelines run on "
             "the x86 host over the whole video (the verdicts use it when present)",
             "other: the per-frame count less the stages (the loop between marks)",
             "ratios: peer / ours (> 1: ours runs fewer); 'fair' marks the same-engine ratio, the other compares "
             "engines (instructions are not time across engines: SIMD width and fp16 differ)",
             "Pi 5 estimate: ours / same-engine peer x the peer's published Pi 5 ms (YOLOv8n 640, inference: "
             f"ONNX {PUBLISHED_PI5_MS['onnx']} ms, NCNN {PUBLISHED_PI5_MS['ncnn']} ms) -- estimated, not measured",
             header, "-" * len(header)]
    for row in rows:
        if row.error:
            lines.append(f"{row.name:<30}  error: {row.error[:100]}")
            continue
        cells = "".join(f"{millions(row.stages.get(s)) if s in row.stages else '-':>9}" for s in STAGES)
        cells += f"{millions(unattributed(row)):>9}"
        ncnn = _ratio_cell(row.vs_ncnn, row.fair == "ncnn")
        onnx = _ratio_cell(row.vs_onnx, row.fair == "onnx")
        est = f"{row.estimate_ms:.1f}" if row.estimate_ms else "-"
        fps = f"{row.estimate_fps:.1f}" if row.estimate_fps else "-"
        agree = f"{row.agreement:.3f}" if row.agreement is not None else "-"
        x86 = f"{row.agreement_x86:.3f}" if row.agreement_x86 is not None else "-"
        lines.append(f"{row.name:<30}{millions(row.per_frame):>9}{cells}{ncnn:>12}{onnx:>12}{est:>12}{fps:>9}"
                     f"{agree:>7}{x86:>7}")
    demo = [r for r in rows if r.kind == "ours" and r.per_frame and r.scene == "demo"]  # not the still scene
    fewest = min(demo, key=lambda r: r.per_frame, default=None)
    if fewest is not None:  # the targets' "best" must agree with ORT fp32 at 640; this one need not
        lines += ["", f"fewest instructions of ours at any agreement: {fewest.name}, {millions(fewest.per_frame)} M"
                      f" ({_ratio_cell(fewest.vs_ncnn, fewest.fair == 'ncnn')} vs UL-NCNN, "
                      f"{_ratio_cell(fewest.vs_onnx, fewest.fair == 'onnx')} vs UL-ONNX, agreement "
                      f"{_shown(judged_agreement(fewest))}"
                      + (f", {fewest.estimate_fps:.1f} fps estimated)" if fewest.estimate_fps else ")")]
    lines += ["", "targets of issues 17, 21 and 22 (aarch64 meter)"]
    for check in checks:
        state = {True: "met", False: "GAP", None: "n/a"}[check.met]
        lines.append(f"  [{state:^4}] {check.name:<32} {check.goal:<70} {check.value}")
    return "\n".join(lines)


def unattributed(row: MeterRow) -> float | None:
    """What the frame loop itself costs: the per-frame count less the marked stages (the marks' cost is out)."""
    if row.per_frame is None or not row.stages:
        return None
    return row.per_frame - sum(row.stages.values())


def _ratio_cell(value: float | None, fair: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" + (" fair" if fair else " *")
