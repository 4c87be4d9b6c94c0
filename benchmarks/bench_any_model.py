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

Run: ``python benchmarks/bench_any_model.py [--models resnet50,user:convnext] [--ratio 0.3] [--threads 1]
[--repeats 5] [--rounds 2] [--round-to 8] [--no-tp]``
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
from typing import Any, Callable

import torch
from torch import nn

from prunekit.metrics import count_flops, count_params, measure_latency
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
    name = spec.removeprefix("user:")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
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


def prune_tp(model: nn.Module, size: tuple[int, ...], ratio: float, round_to: int = 1) -> tuple[nn.Module, float]:
    """Torch-Pruning's uniform L1 prune of a copy of ``model``: ``(pruned, seconds)`` (the copy is not timed)."""
    import torch_pruning as tp

    m = copy.deepcopy(model)
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    cls = getattr(tp.pruner, "MetaPruner", None) or tp.pruner.MagnitudePruner
    t0 = time.perf_counter()
    pruner = cls(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                 global_pruning=False, ignored_layers=[final_classifier(m)],
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
                    tpm, secs = prune_tp(dense, size, ratio, round_to)
            with torch.no_grad():
                tpm.eval()(torch.randn(2, *size))
            case.models["torch-pruning"] = tpm
            case.prune_s["torch-pruning"] = secs
        except Exception as e:  # noqa: BLE001
            case.errors["torch-pruning"] = _error(e)
    return case


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
    args = ap.parse_args()
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
