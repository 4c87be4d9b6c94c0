"""Collect a recipe's stage outputs into seed-README-shaped tables (markdown + CSV) and plots.

Per (seed, stage) the row takes top-1/top-5 from the stage's ``summary.json`` (``top1``; a pruned model evaluated
with ``--eval``: ``accuracy_after``; a distilled student: ``student_top1_after``) and measures params, non-zero
params, sparse-aware MACs and sparsity itself from the stage's ``model.safetensors`` so that every stage is counted
the same way (sparsity = pruned share of the masked weights, 0 for a model without masks: a structurally pruned
model shows its smaller size in params and MACs). Sweep stages get their own table (ratio × top-1, conv/fc thresholds).
"""
from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import atomic_path, write_csv, write_text
from ..utils.table import markdown_table
from .recipe import Recipe

log = logging.getLogger(__name__)
COLUMNS = ["stage", "command", "model", "top1", "top5", "params", "nonzero_params", "macs", "sparsity", "epochs"]


def _top1(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    if summary.get("top1") is not None:
        return summary["top1"], summary.get("top5")
    after = summary.get("accuracy_after")
    if isinstance(after, dict) and after.get("top1") is not None:
        return after["top1"], after.get("top5")
    if summary.get("student_top1_after") is not None:
        return summary["student_top1_after"], summary.get("student_top5_after")
    return None, None


def model_numbers(folder: Path, dataset: str | None) -> dict[str, Any]:
    """Params, non-zero params, sparse MACs and mask sparsity of the model saved in ``folder`` (empty if none)."""
    from ..checkpoint import load_checkpoint
    from ..data import dataset_info
    from ..metrics import summarize
    from ..pruning.masks import sparsity as mask_sparsity

    if not (folder / "model.safetensors").is_file():
        return {}
    ckpt = load_checkpoint(folder)
    if dataset:
        info = dataset_info(dataset)
        size = (info["in_channels"], *info["image_size"])
    else:
        from ..commands.common import input_size

        size = input_size(None, ckpt.model)
    m = summarize(ckpt.model, (1, *size))
    sparsity = mask_sparsity(ckpt.masks)
    return {"params": m["params"], "nonzero_params": m["nonzero_params"], "macs": m["sparse_macs"],
            "sparsity": sparsity}


def stage_row(stage: str, command: str, summary: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """The report columns of one stage (missing values stay None)."""
    top1, top5 = _top1(summary)
    row = {"stage": stage, "command": command, "model": summary.get("model") or summary.get("name"),
           "top1": top1, "top5": top5, "params": summary.get("params"),
           "nonzero_params": summary.get("nonzero_params"), "macs": summary.get("sparse_macs"),
           "sparsity": summary.get("sparsity"), "epochs": summary.get("epochs")}
    if isinstance(summary.get("budget"), dict):
        row["epochs"] = summary["budget"].get("epochs")
    if folder is not None and command not in {"ensemble", "sweep", "eval"}:
        row.update({k: v for k, v in model_numbers(folder, summary.get("dataset")).items()})
    return row


def collect(recipe: Recipe, out: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (seed, stage) that has a ``summary.json``."""
    rows = []
    for seed in seeds:
        for s in recipe.stages:
            folder = out / f"seed{seed}" / s.name
            f = folder / "summary.json"
            if f.is_file():
                summary = json.loads(f.read_text(encoding="utf-8"))
                rows.append({"seed": seed, **stage_row(s.name, s.command, summary, folder), "_summary": summary})
    return rows


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(rows: list[dict[str, Any]], stages: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std of top-1/top-5 over seeds for each stage (other columns from the first seed)."""
    out = []
    for name in stages:
        group = [r for r in rows if r["stage"] == name]
        if not group:
            continue
        agg = {k: v for k, v in group[0].items() if k not in {"seed", "_summary"}}
        agg["seeds"] = len(group)
        for key in ("top1", "top5"):
            agg[key], agg[key + "_std"] = _mean_std([r[key] for r in group if r[key] is not None])
        out.append(agg)
    return out


def _pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _sweep_points(rows: list[dict[str, Any]], name: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    points: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["stage"] == name:
            for p in r["_summary"].get("rows", []):
                points.setdefault((p.get("method", ""), str(p.get("ratio"))), []).append(p)
    return points


def sweep_tables(rows: list[dict[str, Any]]) -> list[str]:
    """One markdown table per sweep stage: the MCTS seed shape (ratio | top-1 w/o finetune | thresholds)."""
    tables = []
    for name in dict.fromkeys(r["stage"] for r in rows if r["command"] == "sweep"):
        group = [r for r in rows if r["stage"] == name]
        points = _sweep_points(rows, name)
        body = []
        for (method, ratio), ps in points.items():
            mean, std = _mean_std([float(p["top1"]) for p in ps if p.get("top1") not in (None, "")])
            thr = [f"{float(ps[0][k]):.2e}" if ps[0].get(k) not in (None, "") else "-"
                   for k in ("conv_threshold", "fc_threshold")]
            body.append([method, ratio, _pm(mean, std, len(ps)), *thr])
        n = len(group)
        tables.append(f"### {name}: top-1 without finetune (seeds: {n}; thresholds of the first seed)\n\n"
                      + markdown_table(["method", "ratio", "top-1 (%)", "conv threshold", "fc threshold"], body))
    return tables


def write_results(recipe: Recipe, out: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Write ``results.csv`` (every seed), ``summary.csv``/``summary.md`` (mean ± std) and plots into ``out``."""
    rows = collect(recipe, out, seeds)
    names = recipe.report.get("rows") or [s.name for s in recipe.stages]
    agg = aggregate([r for r in rows if r["command"] != "sweep"], names)
    write_csv(out / "results.csv", [{k: v for k, v in r.items() if k != "_summary"} for r in rows],
              ["seed"] + COLUMNS)
    write_csv(out / "summary.csv", agg, COLUMNS + ["top1_std", "top5_std", "seeds"])
    table = markdown_table(
        ["stage", "command", "model", "top-1 (%)", "params", "non-zero", "MACs (sparse)", "sparsity", "epochs"],
        [[a["stage"], a["command"], a["model"], _pm(a["top1"], a["top1_std"], a["seeds"]), a["params"],
          a["nonzero_params"], a["macs"], None if a["sparsity"] is None else f"{100 * a['sparsity']:.1f}%",
          a["epochs"]] for a in agg])
    title = recipe.report.get("title") or recipe.name
    text = f"# {title}\n\nseeds: {', '.join(map(str, seeds))} (top-1: mean ± std over seeds)\n\n{table}"
    sweeps = sweep_tables(rows)
    if sweeps:
        text += "\n\n" + "\n\n".join(sweeps)
    write_text(out / "summary.md", text)
    plots = plot_results(agg, out, title)
    for name in dict.fromkeys(r["stage"] for r in rows if r["command"] == "sweep"):
        plots += plot_sweep(_sweep_points(rows, name), out / f"sweep_{name}.png", f"{title}\n{name}: top-1 without "
                            "finetune")
    log.debug("wrote %s, %s, %s and %d plot(s)", out / "summary.md", out / "summary.csv", out / "results.csv",
             len(plots))
    return {"rows": rows, "summary": agg, "table": table, "text": text, "plots": plots}


def _figure() -> tuple[Any, Any]:
    """A figure and its axes drawn by the Agg canvas, without touching matplotlib's global backend or pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_results(agg: list[dict[str, Any]], out: Path, title: str) -> list[str]:
    """Accuracy against params, MACs and sparsity (one PNG each, one marker per command) for stages that have
    those numbers."""
    written = []
    for key, label in (("nonzero_params", "non-zero parameters"), ("macs", "MACs per image (sparse-aware)"),
                       ("sparsity", "sparsity of the prunable weights")):
        pts = [a for a in agg if a.get(key) is not None and a.get("top1") is not None and not math.isnan(a["top1"])]
        if len(pts) < 2:
            continue
        fig, ax = _figure()
        for i, command in enumerate(dict.fromkeys(a["command"] for a in pts)):
            sel = [a for a in pts if a["command"] == command]
            ax.errorbar([a[key] for a in sel], [a["top1"] for a in sel], yerr=[a.get("top1_std") or 0.0 for a in sel],
                        fmt="osD^vP*X"[i % 8], capsize=3, label=command)
        for a in pts:
            ax.annotate(a["stage"], (a[key], a["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%), mean ± std over seeds")
        ax.set_title(f"{title}\ntop-1 vs {label}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"top1_vs_{key}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        written.append(str(path))
    return written


def plot_sweep(points: dict[tuple[str, str], list[dict[str, Any]]], path: Path, title: str) -> list[str]:
    """Top-1 without finetune against the pruning ratio, one line per method (mean ± std over seeds)."""
    base = [float(p["top1"]) for (m, r), ps in points.items() if r == "baseline" for p in ps]
    fig, ax = _figure()
    for method in dict.fromkeys(m for m, r in points if r != "baseline"):
        curve = sorted((float(r), _mean_std([float(p["top1"]) for p in ps]))
                       for (m, r), ps in points.items() if m == method and r != "baseline")
        ax.errorbar([x for x, _ in curve], [ms[0] for _, ms in curve], yerr=[ms[1] for _, ms in curve], marker="o",
                    capsize=3, label=method)
    if base:
        ax.axhline(statistics.fmean(base), color="grey", ls="--", lw=1, label="baseline")
    ax.set_xlabel("pruning ratio")
    ax.set_ylabel("top-1 (%), mean ± std over seeds")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return [str(path)]
