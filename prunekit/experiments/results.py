"""Collect a recipe's stage summaries into seed-README-shaped tables (markdown + CSV) and plots."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import atomic_path, write_csv, write_text
from ..utils.table import markdown_table
from .recipe import Recipe

COLUMNS = ["stage", "command", "model", "top1", "top5", "params", "nonzero_params", "flops", "sparsity"]


def stage_row(stage: str, command: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The report columns of one stage's ``summary.json`` (missing values stay None)."""
    params = summary.get("params")
    nonzero = summary.get("nonzero_params")
    sparsity = summary.get("sparsity")
    if sparsity is None and params and nonzero is not None and params:
        sparsity = 1.0 - nonzero / params
    return {"stage": stage, "command": command, "model": summary.get("model"),
            "top1": summary.get("top1"), "top5": summary.get("top5"), "params": params,
            "nonzero_params": nonzero, "flops": summary.get("sparse_flops", summary.get("flops")),
            "sparsity": sparsity}


def collect(recipe: Recipe, out: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (seed, stage) that has a ``summary.json``."""
    rows = []
    for seed in seeds:
        for s in recipe.stages:
            f = out / f"seed{seed}" / s.name / "summary.json"
            if f.is_file():
                rows.append({"seed": seed, **stage_row(s.name, s.command, json.loads(f.read_text()))})
    return rows


def aggregate(rows: list[dict[str, Any]], stages: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std of top-1/top-5 over seeds for each stage (other columns from the first seed)."""
    out = []
    for name in stages:
        group = [r for r in rows if r["stage"] == name]
        if not group:
            continue
        agg = dict(group[0])
        agg.pop("seed", None)
        agg["seeds"] = len(group)
        for key in ("top1", "top5"):
            vals = [r[key] for r in group if r[key] is not None]
            agg[key] = statistics.fmean(vals) if vals else None
            agg[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        out.append(agg)
    return out


def _pm(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def write_results(recipe: Recipe, out: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Write ``results.csv`` (every seed), ``summary.csv``/``summary.md`` (mean ± std) and plots into ``out``."""
    rows = collect(recipe, out, seeds)
    names = recipe.report.get("rows") or [s.name for s in recipe.stages]
    agg = aggregate(rows, names)
    write_csv(out / "results.csv", rows, ["seed"] + COLUMNS)
    write_csv(out / "summary.csv", agg, COLUMNS + ["top1_std", "top5_std", "seeds"])
    table = markdown_table(
        ["stage", "command", "model", "top-1 (%)", "params", "non-zero", "FLOPs", "sparsity"],
        [[a["stage"], a["command"], a["model"], _pm(a["top1"], a["top1_std"], a["seeds"]), a["params"],
          a["nonzero_params"], a["flops"], None if a["sparsity"] is None else f"{100 * a['sparsity']:.1f}%"]
         for a in agg])
    title = recipe.report.get("title") or recipe.name
    write_text(out / "summary.md", f"# {title}\n\nseeds: {', '.join(map(str, seeds))}\n\n{table}")
    plots = plot_results(agg, out, title)
    print(table)
    return {"rows": rows, "summary": agg, "table": table, "plots": plots}


def plot_results(agg: list[dict[str, Any]], out: Path, title: str) -> list[str]:
    """Accuracy against params, FLOPs and sparsity (one PNG each) for stages that have those numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, label in (("nonzero_params", "non-zero parameters"), ("flops", "FLOPs"), ("sparsity", "sparsity")):
        pts = [(a[key], a["top1"], a.get("top1_std") or 0.0, a["stage"]) for a in agg
               if a.get(key) is not None and a.get("top1") is not None and not math.isnan(a["top1"])]
        if len(pts) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o", capsize=3)
        for x, y, _, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{title}: top-1 vs {label}", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"top1_vs_{key}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
