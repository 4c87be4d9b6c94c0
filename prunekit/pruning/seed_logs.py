"""The seed systems' own output files, for scripts that read them (the CLI's ``--seed-logs``).

prunekit's own outputs (``summary.json``, ``log.csv``, ``prune_report.csv`` ...) stay the reference; these writers
add the files the five seed codebases leave behind, in their exact layout, so that a user's plotting or parsing
scripts keep working. Every file is written atomically (:mod:`prunekit.utils.io`). Formats and their sources:

=========================  ==================================================================================
``prune.txt``              Rethinking weight-level ``prune.py`` / ``cifar_prune.py``: three lines, before/after
                           accuracy and the conv-weight counts (ImageNet form without the loss)
``prune_log.csv``,         GPMT ``prune_GPMT.py`` (pandas ``to_csv`` with its index column): ``,Layer Index,
``prune_refined_log.csv``  Layer Weights,Pre Accuracy,Weights Pruned,% Pruning,Post Accuracy``, one row per layer
                           (index from 1, Post Accuracy ``NA``) and a last row holding only the post accuracy
``layer_sparsities.csv``   GPMT: ``np.savetxt`` of the refined per-layer sparsities (fractions), one per line
``weight_mask.npy``        GPMT stores a *pickled* list of per-layer masks; here one flat bool array (every mask
 + ``weight_mask.json``    flattened in C order, concatenated in module order), no pickle, and a JSON index of
                           ``name, shape, offset, numel`` per layer: :func:`read_weight_mask` splits it back
``gpmt_log.csv``           GPMT's per-epoch CSV: ``,Epoch,Current Time,LR,Orig Acc,% Pruning,Train Acc,Test Acc,
                           Best Test Acc`` (epoch from 0, as the seed)
``log.txt``                Rethinking ``cifar.py`` Logger (``log_finetune.txt`` for finetune, as
                           ``cifar_finetune.py``): tab-separated ``Learning Rate, Train Loss, Valid Loss,
                           Train Acc., Valid Acc.``, every field ``{:.6f}`` followed by a tab
``record.txt``             network slimming ``main.py``: ``np.savetxt(fmt='%10.5f', delimiter=',')`` of an
                           ``(epochs + 1) x 3`` array: train loss, train accuracy, test accuracy (fractions); rows
                           of epochs not yet run are zeros; the last row is ``best test accuracy, 0, 0``
=========================  ==================================================================================

Intended behaviour where the seed is buggy: slimming's train accuracy column divides the correct count by the
number of *batches*; we write the fraction of samples. GPMT's "Best Test Acc" starts from a hard-coded value per
model; ours is the best of the run. Rethinking's "Pruned conv params" prints a tensor; ours is the integer.
"""
from __future__ import annotations

import copy
import csv
import datetime
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..engine.hooks import Hook
from ..utils.io import atomic_path, write_text
from .masks import sparsity
from .reports import LayerReport, PruneReport

RETHINKING_LOG_NAMES = ("Learning Rate", "Train Loss", "Valid Loss", "Train Acc.", "Valid Acc.")
GPMT_PRUNE_COLUMNS = ("Layer Index", "Layer Weights", "Pre Accuracy", "Weights Pruned", "% Pruning", "Post Accuracy")
GPMT_EPOCH_COLUMNS = ("Epoch", "Current Time", "LR", "Orig Acc", "% Pruning", "Train Acc", "Test Acc",
                      "Best Test Acc")
WEIGHT_MASK_FORMAT = "prunekit/weight_mask-1"
NA = "NA"


def _top1(acc: Mapping[str, Any] | float | None) -> float | None:
    if acc is None:
        return None
    if isinstance(acc, Mapping):
        v = acc.get("top1")
        return None if v is None else float(v)
    return float(acc)


def _num(v: Any) -> Any:
    """A CSV cell as pandas writes it: ints as ints, floats by ``repr``, missing values ``NA``."""
    if v is None:
        return NA
    if isinstance(v, float) and math.isnan(v):
        return NA
    return v


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """pandas ``DataFrame.to_csv`` layout: an unnamed index column first, ``\\n`` line ends, minimal quoting."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["", *header])
    for i, row in enumerate(rows):
        w.writerow([i, *row])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- Rethinking prune.txt
def prune_txt(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, total: int, pruned: int, *,
              imagenet: bool = False, empty_layer: bool = False) -> str:
    """Rethinking's ``prune.txt``.

    CIFAR (``cifar_prune.py``)::

        Before pruning: Test Loss:  %.8f, Test Acc:  %.2f
        Total conv params: {total}, Pruned conv params: {pruned}, Pruned ratio: {pruned/total}
        After Pruning: Test Loss:  %.8f, Test Acc:  %.2f

    ImageNet (``prune.py``) drops the ``Test Loss`` part. A layer left with no weight adds the line
    ``There exists a layer with 0 parameters left.`` (no newline, as the seed). Accuracies in percent.
    """
    def line(prefix: str, acc: Mapping[str, Any] | None) -> str:
        acc = acc or {}
        top1 = float(acc.get("top1", float("nan")))
        if imagenet:
            return f"{prefix}: Test Acc:  {top1:.2f}\n"
        return f"{prefix}: Test Loss:  {float(acc.get('loss', float('nan'))):.8f}, Test Acc:  {top1:.2f}\n"

    ratio = pruned / total if total else 0.0
    text = (line("Before pruning", before)
            + f"Total conv params: {int(total)}, Pruned conv params: {int(pruned)}, Pruned ratio: {ratio}\n"
            + line("After Pruning", after))
    if empty_layer:
        text += "There exists a layer with 0 parameters left."
    return text


def write_prune_txt(out_dir: str | os.PathLike, report: PruneReport, *, imagenet: bool = False) -> Path:
    """``prune.txt`` of a weight-level prune: the conv weights in scope (the seed prunes conv weights only) and
    the report's before/after accuracy (``--eval``)."""
    conv = report.kind_totals().get("conv", {"weights": 0, "pruned": 0})
    return write_text(Path(out_dir) / "prune.txt",
                      prune_txt(report.accuracy_before, report.accuracy_after, conv["weights"], conv["pruned"],
                                imagenet=imagenet, empty_layer=bool(report.empty_layers)))


# ------------------------------------------------------------------------------------------------ GPMT prune logs
def gpmt_prune_log(layers: Sequence[LayerReport], pre_accuracy: float | None, post_accuracy: float | None) -> str:
    """GPMT's ``prune_log.csv`` / ``prune_refined_log.csv``: the index column, then one row per layer
    ``Layer Index`` (from 1), ``Layer Weights``, ``Pre Accuracy``, ``Weights Pruned``, ``% Pruning`` (percent),
    ``Post Accuracy`` = ``NA``; a final row with only ``Post Accuracy``. Missing accuracies are ``NA``."""
    rows: list[list[Any]] = [[i, lay.weights, _num(pre_accuracy), lay.pruned,
                              100 * lay.pruned / lay.weights if lay.weights else 0.0, NA]
                             for i, lay in enumerate(layers, start=1)]
    rows.append(["", "", "", "", "", _num(post_accuracy)])
    return _csv_text(GPMT_PRUNE_COLUMNS, rows)


def layer_sparsities_text(sparsities: Sequence[float]) -> str:
    """GPMT's ``layer_sparsities.csv``: ``np.savetxt(path, s, delimiter=",")`` of a 1-D array (``%.18e``)."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(list(sparsities), dtype=np.float64), delimiter=",")
    return buf.getvalue()


def write_gpmt_prune_logs(out_dir: str | os.PathLike, report: PruneReport, *,
                          gp_post_accuracy: float | None = None) -> dict[str, Path]:
    """The GP/GPMT prune logs in the seed's form. ``gp``: ``prune_log.csv``. ``gpmt``: ``prune_log.csv`` (the
    plain GP step; its post accuracy is ``gp_post_accuracy``), ``layer_sparsities.csv`` and
    ``prune_refined_log.csv``. Pre accuracy = the model before the prune; post = after (``--eval``)."""
    out = Path(out_dir)
    pre, post = _top1(report.accuracy_before), _top1(report.accuracy_after)
    if report.gp_layers is None:
        return {"prune_log": write_text(out / "prune_log.csv", gpmt_prune_log(report.layers, pre, post))}
    return {
        "prune_log": write_text(out / "prune_log.csv", gpmt_prune_log(report.gp_layers, pre, gp_post_accuracy)),
        "layer_sparsities": write_text(out / "layer_sparsities.csv",
                                       layer_sparsities_text([lay.sparsity for lay in report.layers])),
        "prune_refined_log": write_text(out / "prune_refined_log.csv", gpmt_prune_log(report.layers, pre, post)),
    }


def gp_step_accuracy(model: nn.Module, ratio: float, scope: Any,
                     evaluate: Callable[[nn.Module], Mapping[str, Any]],
                     expected: Sequence[LayerReport] | None = None) -> float | None:
    """Top-1 of the plain GP prune that GPMT starts from (the seed logs it in ``prune_log.csv``): a copy of
    ``model`` pruned by ``gp`` over ``scope``. None if its per-layer counts differ from ``expected``."""
    from .unstructured import prune_unstructured

    work = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune_unstructured(work, "gp", ratio, scope=scope, allow_empty_layers=True, apply=True)
    if expected is not None and [(r.name, r.pruned) for r in res.report.layers] != \
            [(r.name, r.pruned) for r in expected]:
        return None
    return _top1(evaluate(work))


# ------------------------------------------------------------------------------------------------ weight_mask.npy
def write_weight_mask(out_dir: str | os.PathLike, masks: Mapping[str, torch.Tensor],
                      model: nn.Module | None = None) -> tuple[Path, Path]:
    """``weight_mask.npy`` (one flat bool array, ``allow_pickle=False``) and ``weight_mask.json`` (its index).

    Order: the model's parameter order when ``model`` is given, else the order of ``masks``. Each mask is
    flattened in C order; layer ``i`` occupies ``[offset_i, offset_i + numel_i)``.
    """
    names = list(masks)
    if model is not None:
        pos = {n: i for i, (n, _) in enumerate(model.named_parameters())}
        names.sort(key=lambda n: pos.get(n, len(pos)))
    flats, layers, offset = [], [], 0
    for name in names:
        m = masks[name].detach().to("cpu", torch.bool).contiguous()
        flats.append(m.reshape(-1).numpy())
        layers.append({"name": name, "shape": list(m.shape), "offset": offset, "numel": m.numel()})
        offset += m.numel()
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=bool)
    out = Path(out_dir)
    npy = out / "weight_mask.npy"
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, flat.astype(np.bool_), allow_pickle=False)
    index = {"format": WEIGHT_MASK_FORMAT, "file": npy.name, "dtype": "bool", "order": "C", "total": offset,
             "kept": int(flat.sum()), "layers": layers}
    return npy, write_text(out / "weight_mask.json", json.dumps(index, indent=2) + "\n")


def read_weight_mask(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Split ``weight_mask.npy`` back into per-layer bool arrays with the shapes of ``weight_mask.json``."""
    out = Path(out_dir)
    index = json.loads((out / "weight_mask.json").read_text(encoding="utf-8"))
    flat = np.load(out / index.get("file", "weight_mask.npy"), allow_pickle=False)
    if flat.dtype != np.bool_ or flat.ndim != 1 or flat.size != index["total"]:
        raise ValueError(f"{out / 'weight_mask.npy'} does not match its index weight_mask.json")
    return {lay["name"]: flat[lay["offset"]:lay["offset"] + lay["numel"]].reshape(lay["shape"])
            for lay in index["layers"]}


def write_prune_seed_logs(out_dir: str | os.PathLike, report: PruneReport, masks: Mapping[str, torch.Tensor], *,
                          model: nn.Module | None = None, imagenet: bool = False,
                          gp_post_accuracy: float | None = None) -> list[Path]:
    """Every seed file of a weight-level prune: ``prune.txt`` and ``weight_mask.npy/.json`` for all methods,
    and the GPMT prune logs for ``gp`` and ``gpmt``."""
    paths = [write_prune_txt(out_dir, report, imagenet=imagenet), *write_weight_mask(out_dir, masks, model)]
    if report.method in ("gp", "gpmt"):
        paths += list(write_gpmt_prune_logs(out_dir, report, gp_post_accuracy=gp_post_accuracy).values())
    return paths


# ---------------------------------------------------------------------------------------------- per-epoch files
def _f(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def rethinking_log(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rethinking's Logger file: the names, then one line per epoch ``lr, train loss, valid loss, train acc,
    valid acc`` (accuracies in percent); every field ``{0:.6f}`` followed by a tab, lines end in ``\\n``."""
    lines = ["".join(f"{n}\t" for n in RETHINKING_LOG_NAMES)]
    for r in rows:
        vals = (_f(r, "lr"), _f(r, "train_loss"), _f(r, "val_loss"), _f(r, "train_top1"), _f(r, "val_top1"))
        lines.append("".join(f"{v:.6f}\t" for v in vals))
    return "\n".join(lines) + "\n"


def slimming_record(rows: Sequence[Mapping[str, Any]], epochs: int, best_top1: float | None = None) -> str:
    """Network slimming's ``record.txt``: ``(epochs + 1) x 3``, ``%10.5f`` with ``,`` between columns.

    Row ``e`` (epoch ``e+1``): train loss, train accuracy, test accuracy as fractions; rows of epochs not run yet
    stay 0. When ``best_top1`` is given (the run is over), the last row is ``best, 0, 0`` (fraction).
    """
    arr = np.zeros((int(epochs) + 1, 3))
    for r in rows:
        e = int(r["epoch"]) - 1
        if 0 <= e < epochs:
            arr[e] = (_f(r, "train_loss"), _f(r, "train_top1") / 100.0, _f(r, "val_top1") / 100.0)
    if best_top1 is not None:
        arr[-1, 0] = float(best_top1) / 100.0
    buf = io.StringIO()
    np.savetxt(buf, arr, fmt="%10.5f", delimiter=",")
    return buf.getvalue()


def gpmt_epoch_log(rows: Sequence[Mapping[str, Any]], orig_accuracy: float | None = None,
                   percent_pruned: float | None = None) -> str:
    """GPMT's per-epoch CSV: index, ``Epoch`` (from 0), ``Current Time`` (``str(datetime.now())`` when the epoch
    ended), ``LR``, ``Orig Acc`` (the dense model's top-1, ``NA`` if unknown), ``% Pruning``, ``Train Acc``,
    ``Test Acc``, ``Best Test Acc`` (percent)."""
    out = [[int(r["epoch"]) - 1, r.get("seed_log_time", NA), _num(r.get("lr")), _num(orig_accuracy),
            _num(percent_pruned), _num(r.get("train_top1")), _num(r.get("val_top1")), _num(r.get("best_top1"))]
           for r in rows]
    return _csv_text(GPMT_EPOCH_COLUMNS, out)


class SeedLogHook(Hook):
    """Writes the per-epoch seed files into ``out_dir`` after every epoch (rank 0 only): ``rethinking_log``
    (``log.txt``), ``record.txt`` and ``gpmt_log.csv``. Each file is rebuilt whole from the trainer's history, so
    a resumed run writes exactly what an uninterrupted one would.

    ``orig_accuracy``: GPMT's ``Orig Acc`` column (top-1 of the dense model before pruning, when known).
    ``% Pruning`` is the sparsity of the trainer's masks over the masked tensors (0 without masks).
    """

    def __init__(self, out_dir: str | os.PathLike, *, rethinking_log: str = "log.txt",
                 orig_accuracy: float | None = None):
        self.out_dir = Path(out_dir)
        self.rethinking_name = rethinking_log
        self.orig_accuracy = orig_accuracy

    @staticmethod
    def percent_pruned(masks: Mapping[str, torch.Tensor] | None) -> float:
        return 100.0 * sparsity(masks)

    def files(self) -> list[Path]:
        return [self.out_dir / n for n in (self.rethinking_name, "record.txt", "gpmt_log.csv")]

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["seed_log_time"] = str(datetime.datetime.now())
        if not trainer.dist.is_main:
            return
        rows = list(trainer.history)
        if not rows or rows[-1] is not metrics:  # the trainer appends this epoch's row after the hooks
            rows.append(metrics)
        epochs = int(trainer.config.epochs)
        best = metrics.get("best_top1") if int(metrics["epoch"]) >= epochs else None  # the run is over
        write_text(self.out_dir / self.rethinking_name, rethinking_log(rows))
        write_text(self.out_dir / "record.txt", slimming_record(rows, epochs, best))
        write_text(self.out_dir / "gpmt_log.csv",
                   gpmt_epoch_log(rows, self.orig_accuracy, self.percent_pruned(trainer.masks)))
