"""Structural channel pruning of a YOLOv8 detect model with Torch-Pruning, and the two checkpoint forms it saves to.

C2f splits one convolution's output in two, which a channel pruner cannot keep apart, so every C2f is first
rewritten as C2f_v2 (two 1x1 convolutions cv0/cv1, as Torch-Pruning's YOLOv8 example does). Uniform pruning keeps
cv0 and cv1 equally wide, so the model folds back into Ultralytics' own C2f (an ordinary checkpoint); global
pruning leaves them unequal and the model is saved in the example's form, C2f_v2 named as __main__.C2f_v2, which
the server's inert reader recognises by its layout. Development side only (torch, ultralytics, torch_pruning).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules import C2f, Conv, Detect
from ultralytics.nn.modules.block import Bottleneck

logger = logging.getLogger(__name__)

COST_IMGSZ = 640  # FLOPs and parameters are counted at this square input, as the aarch64 meter runs
BN_MOMENTUM = 0.03  # ultralytics' BatchNorm momentum, restored after recalibration
RATIO_SEARCH_STEPS = 6  # bisection steps of the ratio that meets a FLOPs target (1/64 of the range)
SEARCH_IMGSZ = 320  # every layer's cost scales with the input area alike, so a share of FLOPs is the same at any size
MAX_RATIO = 0.9
# Every pruned layer keeps a multiple of this many channels: ncnn packs channels by 8 for fp16 on ARM (by 4 for
# fp32) and falls back to slower unpacked kernels otherwise. Measured on the aarch64 meter (NCNN fp16 at 640, one
# inference of the demo model with 41% of its FLOPs removed): 294.5 M instructions with arbitrary widths against
# 313.4 M unpruned, 1.06x fewer for 1.70x fewer FLOPs (docs/slimming.md).
CHANNEL_MULTIPLE = 8


class PackPruner(tp.pruner.MagnitudePruner):
    """Torch-Pruning's magnitude pruner with each layer's kept width rounded to the *nearest* whole pack.

    Torch-Pruning 1.6.1 (pinned in tools/requirements.txt; this overrides its private `_round_to`, and a test
    checks the widths) rounds the kept width down, so a 16-channel layer fell to 8 at any ratio above zero: a
    YOLOv8n's stem and first C2f were halved by a 23% target. With the nearest pack the railway checkpoint agreed
    0.929 after distillation instead of 0.912 (docs/slimming.md).
    """

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        kept = current_channels - n_pruned
        kept = max(round_to, int(kept / round_to + 0.5) * round_to)
        return max(current_channels - kept, 0)


class C2f_v2(nn.Module):  # noqa: N801 (Torch-Pruning's name, which checkpoints carry)
    """C2f with its split made two convolutions: cv0(x) and cv1(x) instead of cv1(x).chunk(2)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv0 = Conv(c1, self.c, 1, 1)
        self.cv1 = Conv(c1, self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


LAYER_ATTRIBUTES = ("i", "f", "type", "np")  # what ultralytics' parse_model sets on each layer


def split_c2f(block: C2f) -> C2f_v2:
    """Return block as a C2f_v2 computing the same function (cv1's two halves become cv0 and cv1)."""
    first = block.m[0]
    split = C2f_v2(block.cv1.conv.in_channels, block.cv2.conv.out_channels, n=len(block.m),
                   shortcut=first.add, g=first.cv2.conv.groups, e=block.c / block.cv2.conv.out_channels)  # fmt: skip
    split.cv2, split.m = block.cv2, block.m
    for target, rows in ((split.cv0, slice(0, block.c)), (split.cv1, slice(block.c, None))):
        copy_conv_rows(block.cv1, target, rows)
    copy_layer_attributes(block, split)
    return split


def join_c2f(split: C2f_v2) -> C2f:
    """Return a C2f_v2 as Ultralytics' C2f (cv1 = cv0 and cv1 stacked; `c` is cv0's width).

    Ultralytics runs it only when cv0 and cv1 are equally wide (its forward chunks cv1 in two equal halves).
    """
    widths = split.cv0.conv.out_channels, split.cv1.conv.out_channels
    first = split.m[0] if len(split.m) else None
    block = C2f(split.cv0.conv.in_channels, split.cv2.conv.out_channels, n=len(split.m),
                shortcut=bool(first is not None and first.add))  # fmt: skip
    block.c, block.cv2, block.m = widths[0], split.cv2, split.m
    block.cv1 = Conv(split.cv0.conv.in_channels, sum(widths), 1, 1)
    stacked = block.cv1.conv.weight.data
    stacked.copy_(torch.cat([split.cv0.conv.weight.data, split.cv1.conv.weight.data]))
    for name in ("weight", "bias", "running_mean", "running_var"):
        joined = torch.cat([getattr(split.cv0.bn, name).data, getattr(split.cv1.bn, name).data])
        getattr(block.cv1.bn, name).data.copy_(joined)
    copy_layer_attributes(split, block)
    return block


def copy_conv_rows(source: Conv, target: Conv, rows: slice) -> None:
    """Copy output channels `rows` of a Conv (its weight and BatchNorm) into a Conv as wide as them."""
    target.conv.weight.data.copy_(source.conv.weight.data[rows])
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target.bn, name).data.copy_(getattr(source.bn, name).data[rows])


def copy_layer_attributes(source: nn.Module, target: nn.Module) -> None:
    for name in LAYER_ATTRIBUTES:
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))


def replace_blocks(model: nn.Module, kind: type, rewrite) -> int:
    """Replace every `kind` module under model by rewrite(module); return how many were replaced."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, kind):
            setattr(model, name, rewrite(child))
            count += 1
        else:
            count += replace_blocks(child, kind, rewrite)
    return count


def fold_back(model: nn.Module, unequal: bool = False) -> bool:
    """Turn every C2f_v2 back into Ultralytics' C2f when cv0 and cv1 are equally wide; return whether all were.

    With unequal=True they are folded whatever their widths (a C2f only the server's converter runs as it is).
    """
    splits = [m for m in model.modules() if isinstance(m, C2f_v2)]
    if not unequal and any(m.cv0.conv.out_channels != m.cv1.conv.out_channels for m in splits):
        return False
    replace_blocks(model, C2f_v2, join_c2f)
    return True


def cost(model: nn.Module, imgsz: int = COST_IMGSZ) -> tuple[float, int]:
    """Return (multiply-accumulates, parameters) of one imgsz x imgsz inference."""
    model = copy.deepcopy(model).float().eval()
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, imgsz, imgsz))
    return float(macs), int(params)


def head_outputs(model: nn.Module) -> list[nn.Module]:
    """The convolutions whose outputs are the head's boxes and class scores (and DFL): never pruned."""
    detect = model.model[-1]
    assert isinstance(detect, Detect)
    kept = [branch[-1] for branch in (*detect.cv2, *detect.cv3)]
    return kept + [detect.dfl]


def prune(model: nn.Module, ratio: float, global_pruning: bool = False, imgsz: int = 320) -> nn.Module:
    """Return a pruned copy of a DetectionModel (C2f as C2f_v2): `ratio` of each layer's channels removed by L2 norm,
    each layer left with a multiple of CHANNEL_MULTIPLE channels.

    Uniform (the default) removes the same share of every layer; global ranks channels across layers, which
    leaves C2f's two parts unequal.
    """
    pruned = copy.deepcopy(model).float().eval()
    replace_blocks(pruned, C2f, split_c2f)
    for parameter in pruned.parameters():
        parameter.requires_grad_(True)
    pruner = PackPruner(
        pruned, torch.zeros(1, 3, imgsz, imgsz), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=head_outputs(pruned), global_pruning=global_pruning,
        round_to=CHANNEL_MULTIPLE,
    )  # fmt: skip
    pruner.step()
    for layer in pruned.modules():  # C2f_v2's c is what cv0 now gives (the server reads widths from the weights)
        if isinstance(layer, C2f_v2):
            layer.c = layer.cv0.conv.out_channels
    return pruned


def prune_to(model: nn.Module, ratio: float | None, flops_target: float | None, global_pruning: bool) -> nn.Module:
    """Prune by a ratio, or by the smallest ratio whose FLOPs (share of the unpruned model's) are at most flops_target."""
    if ratio is not None:
        return prune(model, ratio, global_pruning)
    full, _ = cost(model, SEARCH_IMGSZ)
    low, high, best = 0.0, MAX_RATIO, None
    for _ in range(RATIO_SEARCH_STEPS):
        middle = (low + high) / 2
        candidate = prune(model, middle, global_pruning)
        share = cost(candidate, SEARCH_IMGSZ)[0] / full
        logger.info("ratio %.3f keeps %.1f%% of the FLOPs", middle, 100 * share)
        if share <= flops_target:
            high, best = middle, candidate
        else:
            low = middle
    return best if best is not None else prune(model, MAX_RATIO, global_pruning)


@torch.no_grad()
def recalibrate(model: nn.Module, images: torch.Tensor, batch: int = 8) -> None:
    """Re-estimate every BatchNorm's running statistics on images (N x 3 x H x W, 0..1), then set eval mode.

    Removing channels changes what every later layer sums, so the statistics kept from training no longer describe
    its inputs; a few forward passes put most of the pruned model's accuracy back before any fine-tuning.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all the batches
    model.train()
    for start in range(0, len(images), batch):
        model(images[start:start + batch])
    for norm in norms:
        norm.momentum = BN_MOMENTUM
    model.eval()


@contextlib.contextmanager
def pickled_from_main(cls: type) -> Iterator[None]:
    """Pickle cls as __main__.<name>, as a class defined in the user's own script is (Torch-Pruning's example)."""
    main, module = sys.modules["__main__"], cls.__module__
    had, previous = hasattr(main, cls.__name__), getattr(main, cls.__name__, None)
    cls.__module__ = "__main__"
    setattr(main, cls.__name__, cls)
    try:
        yield
    finally:
        cls.__module__ = module
        if had:
            setattr(main, cls.__name__, previous)
        else:
            delattr(main, cls.__name__)


def save_checkpoint(model: nn.Module, path: Path, unequal: bool = False, imgsz: int | None = None) -> str:
    """Save model (fp16, as ultralytics does) the way ultralytics saves one; return its form ("C2f" or "C2f_v2").

    imgsz, the input size it was trained at, goes where ultralytics keeps it (the checkpoint's train_args, the
    model's args: a student's args are its teacher's), and the server runs a model at that size unless told otherwise.
    """
    model = copy.deepcopy(model).eval()
    form = "C2f" if fold_back(model, unequal) else "C2f_v2"
    if hasattr(model, "args") and not isinstance(model.args, dict):
        model.args = dict(vars(model.args))
    train_args = {} if imgsz is None else {"imgsz": imgsz}
    if train_args and isinstance(getattr(model, "args", None), dict):
        model.args.update(train_args)
    checkpoint = {"model": model.half(), "train_args": train_args, "version": "slim", "date": None}
    with pickled_from_main(C2f_v2):
        torch.save(checkpoint, path)
    return form
