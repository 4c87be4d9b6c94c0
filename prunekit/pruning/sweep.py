"""Sensitivity sweeps: accuracy without finetune across pruning ratios (the MCTS seed's table), plus a plot.

Each ratio prunes the *original* weights (they are restored after each evaluation), so ratios are independent.
Layers emptied at high ratios do not stop a sweep: the row records them in ``empty_layers``.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..utils.io import atomic_path, write_csv, write_text
from ..utils.table import markdown_table
from .reports import fmt_threshold
from .scope import Scope, select_layers
from .unstructured import METHODS, prune_unstructured

log = logging.getLogger(__name__)

CSV_COLUMNS = ("method", "ratio", "sparsity", "top1", "top5", "loss", "conv_threshold", "fc_threshold",
               "pruned", "weights", "empty_layers")


@dataclass
class SweepRow:
    """One evaluated point; ``ratio`` None = the unpruned baseline."""

    method: str
    ratio: float | None
    sparsity: float
    top1: float
    top5: float | None = None
    loss: float | None = None
    conv_threshold: float | None = None
    fc_threshold: float | None = None
    pruned: int = 0
    weights: int = 0
    empty_layers: list[str] = field(default_factory=list)

    def csv_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = "baseline" if self.ratio is None else self.ratio
        d["empty_layers"] = ";".join(self.empty_layers)
        for k in ("conv_threshold", "fc_threshold"):
            d[k] = "" if d[k] is None else repr(float(d[k]))
        return d


def _kind_thresholds(thresholds: dict[str, float | None], kinds: Sequence[str]) -> tuple[float | None, float | None]:
    """(conv, fc) threshold of a report: per-kind values, or the one global threshold for the kinds in scope."""
    g = thresholds.get("global")
    conv = thresholds.get("conv", g if "conv" in kinds else None)
    fc = thresholds.get("linear", g if "linear" in kinds else None)
    return conv, fc


def sensitivity_sweep(model: nn.Module, methods: Sequence[str], ratios: Sequence[float], data: Any, *,
                      scope: Scope | None = None, min_threshold: float | None = None, seed: int = 0,
                      batch_size: int = 256, device: str | torch.device | None = None,
                      evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None) -> list[SweepRow]:
    """Evaluate ``model`` unpruned, then pruned by every method at every ratio (no finetune).

    ``evaluate_fn(model) -> {"top1", "top5", "loss"}`` overrides evaluation on ``data`` (test split).
    Returns the baseline row first, then rows in (method, ratio) order.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        from ..errors import UnknownNameError

        raise UnknownNameError(f"unknown weight-level method(s) {', '.join(bad)}; valid: {', '.join(METHODS)}")
    if evaluate_fn is None:
        from ..engine.evaluate import evaluate

        def evaluate_fn(m: nn.Module) -> dict[str, float]:
            return evaluate(m, data, batch_size=batch_size, device=device)

    layers_all = select_layers(model, Scope(kinds=("conv", "linear")))
    originals = {lay.name: lay.weight.detach().clone() for lay in layers_all}
    params = dict(model.named_parameters())
    base = evaluate_fn(model)
    rows = [SweepRow("baseline", None, 0.0, base["top1"], base.get("top5"), base.get("loss"), 0.0, 0.0)]
    try:
        for method in methods:
            for ratio in ratios:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = prune_unstructured(model, method, ratio, scope=scope,
                                             min_threshold=min_threshold if method == "gpmt" else None,
                                             seed=seed, allow_empty_layers=True)
                acc = evaluate_fn(model)
                rep = res.report
                conv_t, fc_t = _kind_thresholds(rep.thresholds, rep.scope["kinds"])
                log.info("sweep %s ratio %s: top-1 %.2f", method, ratio, acc["top1"])
                rows.append(SweepRow(method, float(ratio), rep.sparsity, acc["top1"], acc.get("top5"),
                                     acc.get("loss"), conv_t, fc_t, rep.total_pruned, rep.total_weights,
                                     list(rep.empty_layers)))
                _restore(params, originals)
    finally:
        _restore(params, originals)
    return rows


@torch.no_grad()
def _restore(params: dict[str, nn.Parameter], originals: dict[str, torch.Tensor]) -> None:
    for name, w in originals.items():
        params[name].copy_(w)


def _thr(v: float | None) -> str:
    return "0" if v == 0.0 else fmt_threshold(v)


def sweep_markdown(rows: Sequence[SweepRow], title: str = "Sensitivity (top-1 without finetune)") -> str:
    """One seed-001 style table per method: ratio | top-1 | conv threshold | fc threshold, baseline first."""
    base = [r for r in rows if r.ratio is None]
    methods = list(dict.fromkeys(r.method for r in rows if r.ratio is not None))
    parts = [f"# {title}", ""]
    for method in methods:
        body = [["Baseline", f"{b.top1:.2f}", _thr(b.conv_threshold), _thr(b.fc_threshold)] for b in base]
        for r in rows:
            if r.method == method and r.ratio is not None:
                body.append([f"{r.ratio:g}", f"{r.top1:.2f}", _thr(r.conv_threshold), _thr(r.fc_threshold)])
        parts += [f"## {method}", "", markdown_table(["ratio", "top-1", "conv threshold", "fc threshold"], body)]
        empties = [f"{r.ratio:g}: {', '.join(r.empty_layers)}" for r in rows
                   if r.method == method and r.empty_layers]
        if empties:
            parts += ["Layers left with no weight: " + "; ".join(empties), ""]
    return "\n".join(parts)


def plot_sweep(rows: Sequence[SweepRow], path: str | os.PathLike, title: str = "") -> Path:
    """PNG: top-1 against realised sparsity, one line per method, dashed baseline.

    Drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas: pyplot's global backend and figure list
    are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method in dict.fromkeys(r.method for r in rows if r.ratio is not None):
        pts = sorted((100 * r.sparsity, r.top1) for r in rows if r.method == method and r.ratio is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    for b in rows:
        if b.ratio is None:
            ax.axhline(b.top1, color="gray", linestyle="--", linewidth=1, label=f"baseline {b.top1:.2f}")
    ax.set_xlabel("sparsity of the pruned scope (%)")
    ax.set_ylabel("top-1 without finetune (%)")
    ax.set_title(title or "pruning sensitivity")
    ax.grid(True, alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_sweep(rows: Sequence[SweepRow], out_dir: str | os.PathLike, *, title: str = "",
                plot: bool = True) -> dict[str, Path]:
    """Write sweep.csv, sweep.md and (``plot``) sweep.png into ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": write_csv(out / "sweep.csv", [r.csv_row() for r in rows], CSV_COLUMNS),
             "md": write_text(out / "sweep.md", sweep_markdown(rows, title or "Sensitivity (top-1 without finetune)"))}
    if plot:
        paths["png"] = plot_sweep(rows, out / "sweep.png", title)
    return paths
