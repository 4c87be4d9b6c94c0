"""Benchmark (not a test): :func:`prune_structured` on zoo models and user-style models, side by side with
Torch-Pruning where it is installed.

For every model: params, MACs and measured CPU latency (batch 1 and 32) dense and pruned, the MACs ratio
(dense / pruned), the measured speed-up at batch 32 and its ratio to the MACs ratio (1.0: the latency falls as
fast as the MACs; the goal is >= 0.8), the prune time and the exactness check's max |diff| (``res.info``).

Default models: ``resnet50``, ``mobilenet_v2``, ``vgg16_bn`` from the zoo at 3x224x224 with 1000 classes,
``resnet56`` and ``vgg16_l1`` at 3x32x32, and the plain-torch mirrors of torchvision/timm structures in
``tests/user_models.py`` (``user:resnext``, ``user:mobilenet_v3``, ``user:efficientnet``, ``user:densenet``,
``user:convnext``, ``user:regnet``) at 3x32x32 with 10 classes. Every model is prunekit's uniform L1 prune at
``--ratio``: each channel group keeps ``floor(size·(1−ratio))`` of its channels, ranked by the L1 norm of the
filters producing them (summed over the producers of a coupled group such as a residual stream).

Torch-Pruning (benchmark-only, never a dependency of prunekit)::

    pip install torch-pruning --no-deps      # --no-deps: keep the installed CPU torch

does the same prune: ``MetaPruner`` with ``MagnitudeImportance(p=1)``, ``pruning_ratio=ratio``,
``global_pruning=False`` and the final classifier in ``ignored_layers``. Its importance is the L1 norm of the
whole group (mean over the group's layers, consumers' input columns and BN γ included) where prunekit scores the
producing filters, so the kept channels may differ; the two prune the same *number* of channels only where they
find the same groups, which the "same params" column reports (prunekit minus TP when they differ).

Prune time: the second of two calls (the first warms lazy imports and the allocator). prunekit's is
``res.info["prune_seconds"]`` (tracing, scoring, plan, a deep copy and the slicing; the exactness check that
follows is not included, it is the "verify s" column); Torch-Pruning's is ``MetaPruner(...)`` (dependency graph)
+ ``pruner.step()`` on a copy made beforehand (it prunes in place). Latency: median of ``--repeats`` passes,
dense and pruned interleaved over ``--rounds`` rounds (in a rotating order), best (minimum) of the rounds'
medians: on a shared machine other processes only ever add time.

Detection and segmentation twins (``det:NAME``, ``tests/detection_models.py``, 3x64x64): ``det:segmenter``
(DeepLabV3 + FCN aux head), ``det:two_stage`` (Faster R-CNN + FPN + RoIAlign), ``det:one_stage`` (FCOS/RetinaNet),
``det:yolo`` (YOLOv8-style), ``det:autoencoder``, ``det:timm_blocks``. Torch-Pruning gets the layers writing the
outputs (class maps, box/class/centerness convs, the DFL conv) in ``ignored_layers``, listed by hand as its own
examples do (``TP_IGNORE``).

Real models (``--suite tv-cls,tv-seg,tv-det,timm``; needs torchvision and timm importable, which on this CPU torch
takes ``PYTHONPATH=../shared/tools/torchvision_cpu:<folder with torchvision and timm>``): every torchvision
classification, segmentation and detection builder, and one model per timm architecture family (the smallest of
a family's first candidates by name, counted on the meta device), random init, ``prune_structured(model, example,
ratio)`` as a new user would call it, then a save + reload through the model's factory (outputs equal). A model
counts as pruned when the call returns (it proves itself exact), the parameters fall and the reload reproduces the
outputs; Torch-Pruning's when its pruned model runs, has fewer parameters and outputs of the same shapes. Failures
are counted per cause. Detection models run through a wrapper that also returns the backbone's and heads' raw
outputs and names them as ``prunekit_compare`` (the detections themselves depend on data); ``nms`` and
``roi_align`` get pure-torch CPU kernels here (the shim declares them without kernels). ``--limit-s`` bounds each
model (SIGALRM); ``--families`` takes a comma list of timm modules.

Run: ``python benchmarks/bench_any_model.py [--models resnet50,user:convnext,det:yolo] [--ratio 0.3] [--threads 1]
[--repeats 5] [--rounds 2] [--round-to 8] [--no-tp]`` or ``... --suite timm [--families resnet,vgg]
[--json out.json]``
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from prunekit.metrics import count_flops, count_params, measure_latency
from prunekit.pruning.structured.capture import flat_tensors
from prunekit.models import create_model, list_models, model_info
from prunekit.pruning.structured import prune_structured
from prunekit.utils.table import markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = ("resnet50,mobilenet_v2,vgg16_bn,resnet56,vgg16_l1,user:resnext,user:mobilenet_v3,"
                  "user:efficientnet,user:densenet,user:convnext,user:regnet")
USER_INPUT = (3, 32, 32)


def resolve(spec: str) -> tuple[str, Callable[[], nn.Module], tuple[int, ...]]:
    """``(label, factory, input size)`` of ``spec``: a zoo name, or ``user:NAME`` for a mirror in
    ``tests/user_models.py`` (a bare name that is not in the zoo is looked up there too)."""
    if not spec.startswith("user:") and spec in list_models():
        info = model_info(spec)
        return spec, (lambda: create_model(spec, num_classes=info.num_classes)), tuple(info.input_size)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if spec.startswith("det:"):
        tests = os.path.join(ROOT, "tests")
        if tests not in sys.path:
            sys.path.insert(0, tests)
        from detection_models import DETECTION_MODELS, INPUT_SHAPE

        name = spec.removeprefix("det:")
        if name not in DETECTION_MODELS:
            raise SystemExit(f"unknown twin {spec!r}: one of {', '.join(DETECTION_MODELS)}")
        return spec, DETECTION_MODELS[name], INPUT_SHAPE
    name = spec.removeprefix("user:")
    # test fixtures: imported only when a mirror is asked for
    from tests.user_models import USER_MODELS

    if name not in USER_MODELS:
        raise SystemExit(f"unknown model {spec!r}: not a zoo model nor one of {', '.join(USER_MODELS)}")
    return f"user:{name}", USER_MODELS[name], USER_INPUT


def final_classifier(model: nn.Module) -> nn.Module:
    """The last Linear of ``model`` (the last conv if it has none): the layer whose outputs are the classes."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    return [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]


#: The layers writing each twin's outputs, which Torch-Pruning must be told to keep (prunekit finds them itself).
TP_IGNORE = {
    "det:segmenter": ["classifier.2", "aux_classifier.2"],
    "det:two_stage": ["rpn.cls_logits", "rpn.bbox_pred", "box_head.cls_score", "box_head.bbox_pred"],
    "det:one_stage": ["head.cls_logits", "head.bbox_reg", "head.centerness"],
    "det:yolo": [f"detect.cv{b}.{i}.2" for b in (2, 3) for i in range(3)] + ["detect.dfl.conv"],
    "det:autoencoder": ["out"],
    "det:timm_blocks": ["head"],
}


def tp_ignored(label: str, model: nn.Module) -> list[nn.Module]:
    """The layers Torch-Pruning keeps: the hand-written list of a twin, else the final classifier."""
    if label in TP_IGNORE:
        return [model.get_submodule(n) for n in TP_IGNORE[label]]
    return [final_classifier(model)]


def prune_tp(model: nn.Module, size: tuple[int, ...], ratio: float, round_to: int = 1,
             label: str = "") -> tuple[nn.Module, float]:
    """Torch-Pruning's uniform L1 prune of a copy of ``model``: ``(pruned, seconds)`` (the copy is not timed)."""
    import torch_pruning as tp

    m = copy.deepcopy(model)
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    cls = getattr(tp.pruner, "MetaPruner", None) or tp.pruner.MagnitudePruner
    t0 = time.perf_counter()
    pruner = cls(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                 global_pruning=False, ignored_layers=tp_ignored(label, m),
                 round_to=round_to if round_to > 1 else None)
    pruner.step()
    return m, time.perf_counter() - t0


@dataclass
class Case:
    label: str
    size: tuple[int, ...]
    dense: nn.Module
    models: dict[str, nn.Module] = field(default_factory=dict)  # "prunekit", "torch-pruning"
    prune_s: dict[str, float] = field(default_factory=dict)
    verify_s: float = float("nan")
    diff: float = float("nan")
    rel: float = float("nan")
    errors: dict[str, str] = field(default_factory=dict)
    lat: dict[tuple[str, int], float] = field(default_factory=dict)


def _error(e: BaseException) -> str:
    """One line: the exception and the last line of this repository it passed through."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(ROOT + os.sep)]
    where = f" (at {os.path.relpath(frames[-1].filename, ROOT)}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def prune_case(spec: str, ratio: float, with_tp: bool, round_to: int = 1) -> Case:
    label, factory, size = resolve(spec)
    torch.manual_seed(0)
    dense = factory().eval()
    case = Case(label, size, dense)
    try:
        for _ in range(2):  # the second call is timed
            t0 = time.perf_counter()
            res = prune_structured(dense, input_size=size, ratio=ratio, round_to=round_to)
            total = time.perf_counter() - t0
        case.models["prunekit"] = res.model.eval()
        case.prune_s["prunekit"] = float(res.info["prune_seconds"])
        case.verify_s = total - case.prune_s["prunekit"]
        case.diff, case.rel = float(res.info["max_abs_diff"]), float(res.info["rel_diff"])
    except Exception as e:  # noqa: BLE001  (reported in the table, not hidden)
        case.errors["prunekit"] = _error(e)
    if with_tp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TP warns about unwrapped parameters it then handles
                for _ in range(2):
                    tpm, secs = prune_tp(dense, size, ratio, round_to, label)
            with torch.no_grad():
                x = torch.randn(2, *size)
                if _shapes(tpm.eval()(x)) != _shapes(dense(x)):
                    raise RuntimeError("the pruned model's outputs have other shapes than the original's")
            case.models["torch-pruning"] = tpm
            case.prune_s["torch-pruning"] = secs
        except Exception as e:  # noqa: BLE001
            case.errors["torch-pruning"] = _error(e)
    return case


def _shapes(y: Any) -> list[tuple[int, ...]]:
    from prunekit.pruning.structured.capture import flat_tensors

    return [tuple(t.shape) for t in flat_tensors(y)]


def measure(case: Case, sizes: list[int], repeats: int, rounds: int, threads: int) -> None:
    """Best of ``rounds`` interleaved medians of every model of ``case`` at every batch size (the order of the
    models rotates from round to round, so that a load change does not always hit the same one)."""
    models = list({"dense": case.dense, **case.models}.items())
    for r in range(rounds):
        for bs in sizes:
            for key, m in models[r % len(models):] + models[:r % len(models)]:
                ms = measure_latency(m, case.size, batch_size=bs, warmup=1, repeats=repeats, threads=threads).median_ms
                case.lat[(key, bs)] = min(case.lat.get((key, bs), float("inf")), ms)


def pad(rows: list[list[Any]], n: int) -> list[list[Any]]:
    """Rows of a failed model filled with "-" up to ``n`` cells."""
    return [r + ["-"] * (n - len(r)) for r in rows]


# ----------------------------------------------------------------------------------------------------------------
# --suite: real torchvision and timm models, counted per group and per cause


_KERNELS: list[Any] = []


def register_cpu_kernels() -> None:
    """Pure-torch CPU kernels for ``torchvision::nms`` and ``torchvision::roi_align`` (the shim declares their
    schemas only). RoIAlign: ``sampling_ratio`` bilinear samples per bin side (2 when adaptive), averaged."""
    if _KERNELS:
        return
    import torch.nn.functional as F

    def nms(dets: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
        order = scores.argsort(descending=True)
        b = dets[order]
        area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
        lt = torch.maximum(b[:, None, :2], b[None, :, :2])
        rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        over = inter / (area[:, None] + area[None] - inter + 1e-9) > iou
        removed = torch.zeros(len(order), dtype=torch.bool)
        keep = []
        for i in range(len(order)):
            if not removed[i]:
                keep.append(i)
                removed |= over[i]
        return order[torch.tensor(keep, dtype=torch.long)]

    def roi_align(x: torch.Tensor, rois: torch.Tensor, scale: float, ph: int, pw: int, ratio: int,
                  aligned: bool) -> torch.Tensor:
        sr = ratio if ratio > 0 else 2
        if rois.shape[0] == 0:
            return x.new_zeros((0, x.shape[1], ph, pw))
        h, w = x.shape[-2:]
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (rois[:, 1:] * scale - off).unbind(-1)
        if not aligned:
            x2, y2 = torch.maximum(x2, x1 + 1), torch.maximum(y2, y1 + 1)
        sx = (torch.arange(pw * sr, dtype=x.dtype) + 0.5) / (pw * sr)
        sy = (torch.arange(ph * sr, dtype=x.dtype) + 0.5) / (ph * sr)
        gx = ((x1[:, None] + (x2 - x1)[:, None] * sx) + 0.5) / w * 2 - 1
        gy = ((y1[:, None] + (y2 - y1)[:, None] * sy) + 0.5) / h * 2 - 1
        grid = torch.stack([gx[:, None, :].expand(-1, ph * sr, -1), gy[:, :, None].expand(-1, -1, pw * sr)], -1)
        out = F.grid_sample(x[rois[:, 0].long()], grid, align_corners=False)
        return F.avg_pool2d(out, sr) if sr > 1 else out

    import torchvision.extension
    import torchvision.ops.roi_align

    torchvision.extension._has_ops = lambda: True  # torchvision.ops checks for its compiled library first
    torchvision.ops.roi_align._has_ops = lambda: True  # else roi_align takes its torch.compile'd Python fallback
    lib = torch.library.Library("torchvision", "IMPL")
    lib.impl("nms", nms, "CPU")
    lib.impl("roi_align", roi_align, "CPU")
    _KERNELS.append(lib)


class Detector(nn.Module):
    """A torchvision detector that also returns raw head outputs (``raw``), named by ``prunekit_compare``: the RPN's
    or the one-stage head's outputs on every anchor, and for two-stage models the box (mask, keypoint) heads run on a
    fixed grid of boxes. The detections themselves depend on data (score thresholds, NMS, which proposals an
    untrained RPN ranks first can flip at 1e-7), the raw outputs do not."""

    HEADS = ("rpn.head", "head")

    def __init__(self, name: str, size: int = 320) -> None:
        super().__init__()
        import torchvision

        kw: dict[str, Any] = {"weights": None, "weights_backbone": None}
        if not name.startswith("ssd"):
            kw.update(min_size=size, max_size=size)
        self.model = torchvision.models.get_model(name, **kw)
        subs = dict(self.model.named_modules())
        self.heads = [h for h in self.HEADS if h in subs]
        self.prunekit_compare = _raw

    def forward(self, images: list[torch.Tensor]) -> dict[str, Any]:
        raw: list[Any] = []
        hooks = [self.model.get_submodule(h).register_forward_hook(lambda m, i, o: raw.append(o))
                 for h in self.heads]
        try:
            det = self.model(images)
        finally:
            for h in hooks:
                h.remove()
        rh = getattr(self.model, "roi_heads", None)
        if rh is not None:  # the second stage on fixed boxes
            batch, _ = self.model.transform(images)
            feats = self.model.backbone(batch.tensors)
            sizes = batch.image_sizes
            props = [_grid_boxes(h, w) for h, w in sizes]
            raw.append(rh.box_predictor(rh.box_head(rh.box_roi_pool(feats, props, sizes))))
            if rh.has_mask():
                raw.append(rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(feats, props, sizes))))
            if rh.has_keypoint():
                raw.append(rh.keypoint_predictor(rh.keypoint_head(rh.keypoint_roi_pool(feats, props, sizes))))
        return {"detections": det, "raw": raw}


def _grid_boxes(h: int, w: int) -> torch.Tensor:
    """Boxes of 4 sizes at 4 positions inside an ``h`` x ``w`` image."""
    boxes = []
    for s in (24.0, 48.0, 96.0, 192.0):
        for fx, fy in ((0.1, 0.1), (0.5, 0.2), (0.2, 0.6), (0.6, 0.6)):
            x, y = fx * (w - s) if w > s else 0.0, fy * (h - s) if h > s else 0.0
            boxes.append([x, y, min(x + s, w), min(y + s, h)])
    return torch.tensor(boxes)


def _raw(out: dict[str, Any]) -> Any:
    return out["raw"]


def tv_detector(name: str) -> nn.Module:
    """The factory recorded in a pruned detector's checkpoint."""
    torch.manual_seed(0)
    return Detector(name).eval()


def tv_model(name: str, **kwargs: Any) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()


def timm_model(model_name: str) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(model_name, pretrained=False).eval()


_SMALL = ("atto", "femto", "pico", "nano", "xxs", "tiny", "mini", "xs", "small", "lite", "b0", "18", "s_", "t_")


def timm_families(only: list[str] | None = None) -> list[tuple[str, str]]:
    """``(family, model)``: per timm module, the smallest (params counted on the meta device) of up to 4
    candidates ranked by name (small-size words first, 224 px before larger inputs)."""
    import timm

    out = []
    for mod in timm.list_modules():
        if only and mod not in only:
            continue
        names = timm.list_models(module=mod)
        if not names:
            continue

        def rank(n: str) -> tuple[int, int, int]:
            small = next((i for i, w in enumerate(_SMALL) if w in n), len(_SMALL))
            big_input = any(t in n for t in ("384", "448", "512", "518", "560", "576", "640"))
            return (int(big_input), small, len(n))

        best, best_n = names[0], None
        for n in sorted(names, key=rank)[:4]:
            try:
                with torch.device("meta"):
                    m = timm.create_model(n, pretrained=False)
                k = sum(p.numel() for p in m.parameters())
            except Exception:  # noqa: BLE001  (a candidate that does not build is skipped)
                continue
            if best_n is None or k < best_n:
                best, best_n = n, k
        out.append((mod, best))
    return out


def suite_specs(groups: list[str], families: list[str] | None, max_params: int) -> list[dict[str, Any]]:
    """The models of ``groups`` (tv-cls, tv-seg, tv-det, timm) with their builder, example and reload factory."""
    specs: list[dict[str, Any]] = []
    if any(g.startswith("tv-") for g in groups):
        import torchvision.models as tvm
        from torchvision.models import list_models

    if "tv-cls" in groups:
        for n in list_models(module=tvm):
            side = 299 if n == "inception_v3" else 224
            specs.append({"group": "torchvision classification", "model": n, "build": tv_model, "kwargs": {"name": n},
                          "target": "bench_any_model:tv_model", "example": (torch.randn(1, 3, side, side),)})
    if "tv-seg" in groups:
        for n in list_models(module=tvm.segmentation):
            kw = {"name": n, "weights_backbone": None, **({} if n.startswith("lraspp") else {"aux_loss": True})}
            specs.append({"group": "torchvision segmentation", "model": n, "build": tv_model, "kwargs": kw,
                          "target": "bench_any_model:tv_model", "example": (torch.randn(1, 3, 256, 256),)})
    if "tv-det" in groups:
        for n in list_models(module=tvm.detection):
            specs.append({"group": "torchvision detection", "model": n, "build": tv_detector, "kwargs": {"name": n},
                          "target": "bench_any_model:tv_detector", "example": ([torch.rand(3, 320, 320)],)})
    if "timm" in groups:
        import timm

        for fam, n in timm_families(families):
            cfg = timm.get_pretrained_cfg(n)
            size = tuple(getattr(cfg, "input_size", None) or (3, 224, 224)) if cfg is not None else (3, 224, 224)
            specs.append({"group": "timm families", "model": f"{fam}/{n}", "build": timm_model,
                          "kwargs": {"model_name": n}, "target": "bench_any_model:timm_model",
                          "example": (torch.randn(1, *size),)})
    for sp in specs:
        sp["max_params"] = max_params
    return specs


def cause_of(msg: str) -> str:
    """A short cause for a failure message (the counts per cause)."""
    import re

    rules = [(r"cannot place op (\S+)", "no rule: {0}"), (r"cannot place module .*did not run", "modules not run"),
             (r"has no channel group that can be pruned", "no prunable group"),
             (r"not exact", "not exact"), (r"other shapes than the original", "output shapes change"),
             (r"could not find a prune whose model runs|the pruned model fails", "pruned model fails"),
             (r"running \S+ on the example inputs failed", "model fails on the example"),
             (r"TimeoutError", "time limit"), (r"reload", "reload differs"), (r"too big", "skipped: too big")]
    for pat, fmt in rules:
        m = re.search(pat, msg)
        if m:
            return fmt.format(*m.groups())
    return msg.split(":")[0][:60]


class _Alarm:
    """Raise ``TimeoutError`` after ``seconds`` (SIGALRM; the main thread only)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        import signal

        def boom(signum: int, frame: Any) -> None:
            raise TimeoutError(f"TimeoutError: over {self.seconds} s")

        signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)

    def __exit__(self, *exc: Any) -> None:
        import signal

        signal.alarm(0)


def tp_ignored_real(spec: Mapping[str, Any], m: nn.Module) -> tuple[list[nn.Module], dict[nn.Module, int]]:
    """What Torch-Pruning is told by hand, as its examples do: the layers writing the outputs, and the heads of
    timm-style attention (``qkv`` + ``num_heads``)."""
    import re

    group = spec["group"]
    if group == "torchvision detection":
        pat = re.compile(r"(cls_logits|bbox_pred|bbox_reg|bbox_ctrness|cls_score|mask_fcn_logits|kps_score_lowres)$|"
                         r"^model\.head\.(classification_head|regression_head)\.module_list\.\d+$")
        ignored = [mod for n, mod in m.named_modules() if pat.search(n)]
    elif group == "torchvision segmentation":
        ignored = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.out_channels == 21]
    else:
        get = getattr(m, "get_classifier", None)
        head = get() if callable(get) else None
        heads = list(head) if isinstance(head, (list, tuple)) else [head] if head is not None else []
        ignored = [h for h in heads if isinstance(h, (nn.Linear, nn.modules.conv._ConvNd))] or [final_classifier(m)]
    num_heads = {mod.qkv: mod.num_heads for mod in m.modules() if isinstance(getattr(mod, "qkv", None), nn.Linear)
                 and isinstance(getattr(mod, "num_heads", None), int)}
    return ignored, num_heads


def run_one(spec: dict[str, Any], ratio: float, with_tp: bool, limit_s: int, tmp: str) -> dict[str, Any]:
    """prunekit (prune, exact, reload) and Torch-Pruning on one real model: a result row."""
    from prunekit import load_model, save_model
    from prunekit.factory import mark
    from prunekit.pruning.structured.capture import call_model

    row: dict[str, Any] = {"group": spec["group"], "model": spec["model"]}
    try:
        with _Alarm(limit_s):
            dense = spec["build"](**spec["kwargs"])
    except Exception as e:  # noqa: BLE001
        row["prunekit"] = row["tp"] = f"build failed: {_error(e)}"
        return row
    n_dense = count_params(dense)
    row["params"] = n_dense
    if n_dense > spec["max_params"]:
        row["prunekit"] = row["tp"] = f"skipped: too big ({n_dense / 1e6:.0f}M params)"
        return row
    example = spec["example"]
    mark(dense, spec["target"], spec["kwargs"])
    t0 = time.perf_counter()
    try:
        with _Alarm(limit_s):
            res = prune_structured(dense, example, ratio=ratio)
            row["prune_s"] = round(time.perf_counter() - t0, 2)
            n = count_params(res.model)
            if n >= n_dense:
                raise RuntimeError("no parameter removed")
            save_model(res.model, tmp)
            back = load_model(tmp, factory=spec["build"]).eval()
            with torch.no_grad():
                pick = getattr(dense, "prunekit_compare", None) or (lambda o: o)
                a = flat_tensors(pick(call_model(res.model.eval(), example)))
                b = flat_tensors(pick(call_model(back, example)))
            if len(a) != len(b) or any(x.shape != y.shape or not torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b)):
                raise RuntimeError("reload: the reloaded model's outputs differ")
        row["prunekit"] = "ok"
        row["params_ratio"] = round(n / n_dense, 3)
        row["rel_diff"] = float(res.info["rel_diff"])
        row["compared"] = res.info.get("compared")
        row["kept_whole"] = len(res.info.get("kept_whole", []))
    except Exception as e:  # noqa: BLE001  (counted per cause)
        row["prunekit"] = _error(e)
    if with_tp:
        row["tp"] = run_tp(spec, dense, ratio, limit_s)
    return row


def run_tp(spec: dict[str, Any], dense: nn.Module, ratio: float, limit_s: int) -> str:
    """Torch-Pruning's uniform L1 prune: "ok" when the pruned model runs, is smaller and keeps its output shapes."""
    import torch_pruning as tp
    from prunekit.pruning.structured.capture import as_inputs, call_model

    example = spec["example"]
    try:
        with _Alarm(limit_s), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = copy.deepcopy(dense)
            ignored, num_heads = tp_ignored_real(spec, m)
            ex = tuple(as_inputs(example))
            pruner = tp.pruner.MetaPruner(m, ex if len(ex) > 1 or isinstance(ex[0], list) else ex[0],
                                          importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                          global_pruning=False, ignored_layers=ignored, num_heads=num_heads)
            pruner.step()
            for mod in m.modules():  # TP's timm example: keep the attention modules' head bookkeeping right
                if not isinstance(getattr(mod, "qkv", None), nn.Linear):
                    continue
                if isinstance(getattr(mod, "head_dim", None), int) and isinstance(getattr(mod, "num_heads", None), int):
                    mod.head_dim = mod.qkv.out_features // (3 * mod.num_heads)
            with torch.no_grad():
                pick = getattr(dense, "prunekit_compare", None) or (lambda o: o)
                a = _shapes(pick(call_model(m.eval(), example)))
                b = _shapes(pick(call_model(dense, example)))
            if count_params(m) >= count_params(dense):
                return "no parameter removed"
            if a != b:
                return "the pruned model's outputs have other shapes than the original's"
        return "ok"
    except Exception as e:  # noqa: BLE001
        return _error(e)


def run_suite(args: argparse.Namespace) -> None:
    """``--suite``: counts per group and per cause, prunekit next to Torch-Pruning."""
    import json
    import tempfile
    from collections import Counter

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    sys.modules.setdefault("bench_any_model", sys.modules[__name__])  # the factories' module, for reloads
    register_cpu_kernels()
    try:
        import torch_pruning  # noqa: F401

        with_tp = not args.no_tp
    except ImportError:
        with_tp = False
    groups = [g.strip() for g in args.suite.split(",") if g.strip()]
    fams = [f.strip() for f in args.families.split(",")] if args.families else None
    specs = suite_specs(groups, fams, args.max_params)
    rows = []
    t_all = time.perf_counter()
    for sp in specs:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            row = run_one(sp, args.ratio, with_tp, args.limit_s, tmp)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        short = lambda v: v if v == "ok" else "FAIL " + str(v)[:150]  # noqa: E731
        print(f"{row['group']:<26} {row['model']:<48} prunekit {short(row['prunekit'])} | TP "
              f"{short(row.get('tp', '-'))} ({row['seconds']} s)", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    print(f"\nratio {args.ratio}, uniform L1, random init; {len(rows)} models in {time.perf_counter() - t_all:.0f} s")
    table = []
    for g in dict.fromkeys(r["group"] for r in rows):
        rs = [r for r in rows if r["group"] == g]
        pk = sum(r["prunekit"] == "ok" for r in rs)
        tpn = sum(r.get("tp") == "ok" for r in rs)
        both = [r for r in rs if r["prunekit"] == "ok" and r.get("tp") == "ok"]
        table.append([g, len(rs), pk, tpn if with_tp else "-", len(both)])
    print(markdown_table(["group", "models", "prunekit pruned (exact, reloaded)", "Torch-Pruning pruned", "both"],
                         table))
    for tool, key in (("prunekit", "prunekit"), ("Torch-Pruning", "tp")):
        causes = Counter(cause_of(str(r.get(key))) for r in rows if r.get(key) not in (None, "ok"))
        if causes:
            print(f"\n{tool} failures by cause:")
            print(markdown_table(["cause", "models"], [[c, n] for c, n in causes.most_common()]))
    print("\nfailures:")
    for r in rows:
        for tool, key in (("prunekit", "prunekit"), ("Torch-Pruning", "tp")):
            if r.get(key) not in (None, "ok"):
                print(f"- {r['model']}, {tool}: {str(r[key])[:300]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma list: zoo names and/or user:NAME")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per latency median")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved dense/pruned measurement rounds")
    ap.add_argument("--batch-sizes", default="1,32", help="the last one is the speed-up's batch")
    ap.add_argument("--round-to", type=int, default=1, help="kept channels per group a multiple of this (both tools)")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning even if it is installed")
    ap.add_argument("--suite", default="", help="real models instead: comma list of tv-cls, tv-seg, tv-det, timm")
    ap.add_argument("--families", default="", help="--suite timm: only these timm modules (comma list)")
    ap.add_argument("--limit-s", type=int, default=180, help="--suite: seconds per model and tool")
    ap.add_argument("--max-params", type=int, default=200_000_000, help="--suite: skip bigger models")
    ap.add_argument("--json", default="", help="--suite: write the rows here as they come")
    args = ap.parse_args()
    if args.suite:
        torch.set_num_threads(args.threads)
        run_suite(args)
        return
    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    big = sizes[-1]
    tp_version = None
    if not args.no_tp:
        try:
            import torch_pruning as tp

            tp_version = tp.__version__
        except ImportError:
            print("note: torch-pruning is not installed (pip install torch-pruning --no-deps): prunekit only")
    cases = []
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        t0 = time.perf_counter()
        case = prune_case(spec, args.ratio, tp_version is not None, args.round_to)
        measure(case, sizes, args.repeats, args.rounds, args.threads)
        cases.append(case)
        print(f"done {case.label} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def macs(m: nn.Module, size: tuple[int, ...]) -> int:
        return int(count_flops(m, (1, *size), convention="macs").macs)

    rows, tp_rows, failures = [], [], []
    for c in cases:
        d_par, d_mac = count_params(c.dense), macs(c.dense, c.size)
        for tool, err in c.errors.items():
            failures.append(f"- {c.label}, {tool}: {err}")
        pk = c.models.get("prunekit")
        if pk is None:
            rows.append([c.label, "x".join(map(str, c.size[1:])), d_par, "FAILED", d_mac])
        else:
            p_mac = macs(pk, c.size)
            row = [c.label, "x".join(map(str, c.size[1:])), d_par, count_params(pk), d_mac, p_mac, d_mac / p_mac]
            for bs in sizes:
                row += [c.lat[("dense", bs)], c.lat[("prunekit", bs)]]
            speed = c.lat[("dense", big)] / c.lat[("prunekit", big)]
            row += [speed, speed / (d_mac / p_mac), c.prune_s["prunekit"], c.verify_s, f"{c.diff:.1e}"]
            rows.append(row)
        if tp_version is None:
            continue
        tpm = c.models.get("torch-pruning")
        if tpm is None:
            tp_rows.append([c.label, "FAILED"])
            continue
        t_par, t_mac = count_params(tpm), macs(tpm, c.size)
        row = [c.label, t_par, t_mac, d_mac / t_mac] + [c.lat[("torch-pruning", bs)] for bs in sizes]
        row += [c.prune_s["torch-pruning"]]
        if pk is not None:
            p_par = count_params(pk)
            same = "yes" if p_par == t_par else f"no ({p_par - t_par:+,})"
            row += [same, c.prune_s["prunekit"] / c.prune_s["torch-pruning"],
                    c.lat[("prunekit", big)] / c.lat[("torch-pruning", big)]]
        else:
            row += ["-", "-", "-"]
        tp_rows.append(row)

    print()
    rounding = f", round_to {args.round_to}" if args.round_to > 1 else ""
    print(f"CPU, torch {torch.__version__}, threads {args.threads}, ratio {args.ratio} "
          f"(uniform per group, L1{rounding}), "
          f"latency best of {args.rounds} medians of {args.repeats} passes")
    headers = ["model", "input", "params dense", "params pruned", "MACs dense", "MACs pruned", "MACs ratio"]
    for bs in sizes:
        headers += [f"ms b{bs} dense", f"ms b{bs} pruned"]
    headers += [f"speed-up b{big}", "speed-up / MACs ratio", "prune s", "verify s", "max |diff|"]
    print(markdown_table(headers, pad(rows, len(headers)), precision=3))
    if tp_version is not None:
        print(f"Torch-Pruning {tp_version} (MetaPruner, MagnitudeImportance(p=1), pruning_ratio {args.ratio}, "
              "local, final classifier ignored); ratios are prunekit / Torch-Pruning")
        tp_headers = ["model", "TP params", "TP MACs", "TP MACs ratio"] + [f"TP ms b{bs}" for bs in sizes]
        tp_headers += ["TP prune s", "same params", "prune-time ratio", f"latency ratio b{big}"]
        print(markdown_table(tp_headers, pad(tp_rows, len(tp_headers)), precision=3))
    if failures:
        print("failures:")
        print("\n".join(failures))


if __name__ == "__main__":
    main()
