"""Prune reports: what was pruned where, with which threshold; per-layer tables as CSV and markdown."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..utils.io import write_csv, write_text
from ..utils.table import markdown_table

LAYER_COLUMNS = ("layer", "kind", "shape", "weights", "pruned", "kept", "percent", "threshold")


def fmt_threshold(value: float | None) -> str:
    """Thresholds are printed ``{:0.4e}`` (as the MCTS seed); ``-`` when none applies."""
    return "-" if value is None else f"{value:0.4e}"


@dataclass
class LayerReport:
    """One pruned layer. ``threshold`` is the largest pruned magnitude (None for random or nothing pruned)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    weights: int
    pruned: int
    threshold: float | None = None

    @property
    def kept(self) -> int:
        return self.weights - self.pruned

    @property
    def sparsity(self) -> float:
        return self.pruned / self.weights if self.weights else 0.0

    def row(self) -> dict[str, Any]:
        """A CSV row (full precision)."""
        return {"layer": self.name, "kind": self.kind, "shape": "x".join(map(str, self.shape)),
                "weights": self.weights, "pruned": self.pruned, "kept": self.kept,
                "percent": round(100.0 * self.sparsity, 6),
                "threshold": "" if self.threshold is None else repr(float(self.threshold))}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "weights": self.weights,
                "pruned": self.pruned, "sparsity": self.sparsity, "threshold": self.threshold}


@dataclass
class PruneReport:
    """Everything a weight-level prune decided.

    ``thresholds`` holds every threshold that was used: ``{"global": t}`` (global, gp), ``{"conv": t, "linear":
    t}`` (per-kind), ``{"gp": t}`` for the GP step of gpmt; per-layer thresholds are in ``layers``.
    ``gp_layers`` (gpmt only) are the per-layer counts of plain GP, before the minimum-threshold refinement.
    """

    method: str
    ratio: float
    scope: dict[str, Any]
    layers: list[LayerReport]
    thresholds: dict[str, float | None]
    target_pruned: int
    min_threshold: float | None = None
    min_weights: int | None = None
    gp_layers: list[LayerReport] | None = None
    seed: int | None = None
    empty_layers: list[str] = field(default_factory=list)
    accuracy_before: dict[str, float] | None = None
    accuracy_after: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_weights(self) -> int:
        return sum(lay.weights for lay in self.layers)

    @property
    def total_pruned(self) -> int:
        return sum(lay.pruned for lay in self.layers)

    @property
    def sparsity(self) -> float:
        """Realised sparsity over the scope."""
        return self.total_pruned / self.total_weights if self.total_weights else 0.0

    def kind_totals(self) -> dict[str, dict[str, Any]]:
        """Weights / pruned / sparsity per layer kind."""
        out: dict[str, dict[str, Any]] = {}
        for lay in self.layers:
            d = out.setdefault(lay.kind, {"weights": 0, "pruned": 0})
            d["weights"] += lay.weights
            d["pruned"] += lay.pruned
        for d in out.values():
            d["sparsity"] = d["pruned"] / d["weights"] if d["weights"] else 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used in summary.json and checkpoint metadata)."""
        return {
            "method": self.method, "ratio": self.ratio, "scope": self.scope, "seed": self.seed,
            "min_threshold": self.min_threshold, "min_weights": self.min_weights,
            "total_weights": self.total_weights, "target_pruned": self.target_pruned,
            "total_pruned": self.total_pruned, "sparsity": self.sparsity, "thresholds": dict(self.thresholds),
            "by_kind": self.kind_totals(), "empty_layers": list(self.empty_layers),
            "accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
            "notes": list(self.notes),
            "layers": [lay.to_dict() for lay in self.layers],
            "gp_layers": [lay.to_dict() for lay in self.gp_layers] if self.gp_layers is not None else None,
        }

    def summary(self) -> dict[str, Any]:
        """The short form: totals and thresholds, no per-layer lists."""
        d = self.to_dict()
        d.pop("layers")
        d.pop("gp_layers")
        return d


def layer_table_markdown(layers: Sequence[LayerReport]) -> str:
    """Markdown table: layer, kind, weights, pruned, percent, threshold, plus a total row."""
    rows: list[list[Any]] = [[lay.name, lay.kind, lay.weights, lay.pruned, f"{100 * lay.sparsity:.2f}",
                              fmt_threshold(lay.threshold)] for lay in layers]
    tw = sum(lay.weights for lay in layers)
    tp = sum(lay.pruned for lay in layers)
    rows.append(["**total**", "", tw, tp, f"{100 * tp / tw if tw else 0.0:.2f}", ""])
    return markdown_table(["layer", "kind", "weights", "pruned", "percent", "threshold"], rows)


def _acc(d: dict[str, float] | None) -> str:
    if not d:
        return "-"
    return f"top-1 {d.get('top1', float('nan')):.2f}%" + (
        f", top-5 {d['top5']:.2f}%" if d.get("top5") is not None else "")


def markdown_report(report: PruneReport) -> str:
    """The full human-readable report: header, thresholds, totals, accuracy, per-layer table."""
    lines = [f"# {report.method} pruning, ratio {report.ratio:g}", ""]
    lines.append(f"- scope: {', '.join(report.scope.get('kinds', []))}"
                 + (f"; include {report.scope['include']}" if report.scope.get("include") else "")
                 + (f"; exclude {report.scope['exclude']}" if report.scope.get("exclude") else "")
                 + ("; first layer skipped" if report.scope.get("skip_first") else "")
                 + ("; last layer skipped" if report.scope.get("skip_last") else ""))
    lines.append(f"- pruned {report.total_pruned:,} of {report.total_weights:,} weights "
                 f"(target {report.target_pruned:,}); realised sparsity {100 * report.sparsity:.4f}%")
    for kind, d in report.kind_totals().items():
        lines.append(f"- {kind}: {d['pruned']:,} / {d['weights']:,} pruned ({100 * d['sparsity']:.2f}%)")
    for key, t in report.thresholds.items():
        lines.append(f"- threshold ({key}): {fmt_threshold(t)}")
    if report.min_threshold is not None:
        lines.append(f"- minimum threshold: {report.min_threshold:g}% of prunable weights = "
                     f"{report.min_weights:,} weights kept per layer at least")
    if report.seed is not None and report.method == "random":
        lines.append(f"- seed: {report.seed}")
    if report.accuracy_before is not None or report.accuracy_after is not None:
        lines.append(f"- accuracy before: {_acc(report.accuracy_before)}; after (no finetune): "
                     f"{_acc(report.accuracy_after)}")
    if report.empty_layers:
        lines.append(f"- WARNING: layers with no weight left: {', '.join(report.empty_layers)}")
    for note in report.notes:
        lines.append(f"- note: {note}")
    lines += ["", layer_table_markdown(report.layers)]
    return "\n".join(lines)


def write_prune_report(report: PruneReport, out_dir: str | os.PathLike,
                       prefix: str = "prune_report") -> dict[str, Path]:
    """Write ``<prefix>.csv`` and ``<prefix>.md`` (and the GPMT logs for gpmt) into ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": write_csv(out / f"{prefix}.csv", [lay.row() for lay in report.layers], LAYER_COLUMNS),
             "md": write_text(out / f"{prefix}.md", markdown_report(report))}
    if report.gp_layers is not None:
        paths.update(write_gpmt_logs(report, out))
    return paths


def _seed_log_rows(layers: Sequence[LayerReport]) -> list[dict[str, Any]]:
    return [{"Layer Index": i, "Layer Name": lay.name, "Layer Weights": lay.weights, "Weights Pruned": lay.pruned,
             "% Pruning": round(100.0 * lay.sparsity, 6), "Weights Remaining": lay.kept}
            for i, lay in enumerate(layers)]


def write_gpmt_logs(report: PruneReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """GPMT seed outputs: prune_log.csv (plain GP), layer_sparsities.csv (before/after), prune_refined_log.csv."""
    if report.gp_layers is None:
        raise ValueError("write_gpmt_logs needs a gpmt report (gp_layers is None)")
    out = Path(out_dir)
    sparsities = [{"Layer Index": i, "Layer Name": a.name, "Layer Weights": a.weights,
                   "GP Sparsity": round(a.sparsity, 8), "Refined Sparsity": round(b.sparsity, 8)}
                  for i, (a, b) in enumerate(zip(report.gp_layers, report.layers))]
    return {"prune_log": write_csv(out / "prune_log.csv", _seed_log_rows(report.gp_layers)),
            "layer_sparsities": write_csv(out / "layer_sparsities.csv", sparsities),
            "prune_refined_log": write_csv(out / "prune_refined_log.csv", _seed_log_rows(report.layers))}
