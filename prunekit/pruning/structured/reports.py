"""Before/after reports of a structured prune: params, MACs/FLOPs, measured latency, per-layer channel counts."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch.nn as nn

from ...utils.io import atomic_path, write_csv
from ...utils.table import markdown_table

COST_NOTE = ("MACs: conv Cin·k·k·Cout·Hout·Wout + linear in·out; FLOPs = 2·MACs (per sample). Latency: median "
             "wall-clock ms of one forward pass of the whole batch on CPU.")


def model_cost(model: nn.Module, input_size: Sequence[int], batch_sizes: Sequence[int] = (1, 64), *,
               device: str = "cpu", repeats: int = 10, warmup: int = 2,
               threads: int | None = None) -> dict[str, Any]:
    """``params``, ``macs``, ``flops`` (2·MACs) and ``latency_ms_b<N>`` for each batch size (``input_size`` = C,H,W)."""
    from ...metrics import count_flops, count_params, measure_latency

    fl = count_flops(model, (1, *input_size), convention="macs")
    out: dict[str, Any] = {"params": count_params(model), "macs": fl.macs, "flops": fl.flops}
    for bs in batch_sizes:
        lat = measure_latency(model, tuple(input_size), batch_size=int(bs), warmup=warmup, repeats=repeats,
                              device=device, threads=threads)
        out[f"latency_ms_b{bs}"] = lat.median_ms
    return out


def compare_rows(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{metric, before, after, ratio}`` (ratio = before / after: the reduction or speed-up factor)."""
    rows = []
    for k, v in before.items():
        if k not in after or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        a = after[k]
        rows.append({"metric": k, "before": v, "after": a, "ratio": round(v / a, 4) if a else None})
    return rows


def accuracy_rows(acc: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """``{metric: "top1 <name>", before: value}`` rows for the report."""
    return [{"metric": f"top1 {k}", "before": v, "after": None, "ratio": None} for k, v in acc.items()]


def plot_channels(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Bar chart of kept vs total channels per layer (PNG, written atomically; the global matplotlib backend is
    left alone: the figure draws on its own Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(min(max(6.0, 0.12 * n + 2), 40.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(n))
    ax.bar(xs, [r["total"] for r in rows], color="#cccccc", width=0.9, label="total")
    ax.bar(xs, [r["kept"] for r in rows], color="#1f77b4", width=0.9, label="kept")
    ax.set_xlabel("layer (module order)")
    ax.set_ylabel("channels")
    ax.set_title(title)
    if n <= 40:
        ax.set_xticks(xs)
        ax.set_xticklabels([r["layer"] for r in rows], rotation=90, fontsize=6)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_channels_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Per-layer channel counts as CSV."""
    write_csv(path, rows, ["layer", "stage", "total", "kept", "pruned", "kept_ratio"])


def report_markdown(title: str, summary_rows: Sequence[Mapping[str, Any]], channel_rows: Sequence[Mapping[str, Any]],
                    notes: Sequence[str] = ()) -> str:
    """The markdown report: summary table, notes, per-layer channel table."""
    parts = [f"# {title}\n", markdown_table(["metric", "before", "after", "before/after"],
                                            [[r["metric"], r["before"], r["after"], r["ratio"]]
                                             for r in summary_rows], precision=3)]
    parts.append("\n" + COST_NOTE + "\n")
    for n in notes:
        parts.append(f"\n- {n}")
    parts.append("\n\n## Channels per layer\n\n")
    parts.append(markdown_table(["layer", "stage", "total", "kept", "pruned"],
                                [[r["layer"], r["stage"], r["total"], r["kept"], r["pruned"]] for r in channel_rows]))
    return "".join(parts)
