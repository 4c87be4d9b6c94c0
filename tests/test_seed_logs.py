"""``--seed-logs``: the seed systems' own output files, in their exact layout (prunekit/pruning/seed_logs.py).

Tiny runs: resnet20 on digits, ``--limit 64``, one or two epochs.
"""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main
from prunekit.pruning.reports import LayerReport
from prunekit.pruning.seed_logs import (gpmt_epoch_log, gpmt_prune_log, prune_txt, read_weight_mask,
                                        rethinking_log, slimming_record)

TINY = ["--model", "resnet20", "--dataset", "digits", "--limit", "64", "--seed", "0", "--no-progress"]
SEED_PRUNE_FILES = ("prune.txt", "weight_mask.npy", "weight_mask.json")
SEED_EPOCH_FILES = ("log.txt", "record.txt", "gpmt_log.csv")


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    capsys.readouterr()
    assert code == 0
    return code


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A one-epoch resnet20 baseline trained with --seed-logs."""
    out = tmp_path_factory.mktemp("seedlogs") / "base"
    assert main(["train", *TINY, "--epochs", "1", "--seed-logs", "--out", str(out)]) == 0
    return out


def _prune(tmp_path, base, capsys, method, ratio, *extra, seed_logs=True):
    out = tmp_path / method
    _run(["prune", "--checkpoint", base, "--dataset", "digits", "--limit", "64", "--method", method,
          "--ratio", ratio, *extra, *(["--seed-logs"] if seed_logs else []), "--out", out], capsys)
    return out, json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------------ prune.txt
def test_prune_txt_is_rethinkings_three_line_summary(tmp_path, base, capsys):
    """Rethinking cifar_prune.py writes ``Before pruning: Test Loss:  %.8f, Test Acc:  %.2f``, then
    ``Total conv params: {}, Pruned conv params: {}, Pruned ratio: {}`` (conv weights only), then ``After Pruning:
    Test Loss:  %.8f, Test Acc:  %.2f``; --seed-logs implies --eval so the accuracies are always there."""
    out, s = _prune(tmp_path, base, capsys, "global", "0.5")
    lines = (out / "prune.txt").read_text().split("\n")
    assert len(lines) == 4 and lines[3] == ""
    b, a = s["accuracy_before"], s["accuracy_after"]
    assert lines[0] == f"Before pruning: Test Loss:  {b['loss']:.8f}, Test Acc:  {b['top1']:.2f}"
    assert lines[2] == f"After Pruning: Test Loss:  {a['loss']:.8f}, Test Acc:  {a['top1']:.2f}"
    conv = s["report"]["by_kind"]["conv"]
    assert lines[1] == (f"Total conv params: {conv['weights']}, Pruned conv params: {conv['pruned']}, "
                        f"Pruned ratio: {conv['pruned'] / conv['weights']}")
    assert conv["weights"] == s["total_weights"] and conv["pruned"] == round(0.5 * s["total_weights"])
    assert "prune.txt" in s["files"] and "weight_mask.npy" in s["files"]
    assert not (out / "prune_log.csv").exists()  # GPMT's logs belong to gp / gpmt


def test_prune_txt_imagenet_form_and_empty_layer_line():
    """Rethinking's ImageNet prune.py drops the loss: ``Before pruning: Test Acc:  %.2f``; a layer left with no
    weight appends ``There exists a layer with 0 parameters left.`` without a newline."""
    text = prune_txt({"top1": 76.13, "loss": 1.0}, {"top1": 75.5}, 1000, 300, imagenet=True, empty_layer=True)
    assert text == ("Before pruning: Test Acc:  76.13\n"
                    "Total conv params: 1000, Pruned conv params: 300, Pruned ratio: 0.3\n"
                    "After Pruning: Test Acc:  75.50\n"
                    "There exists a layer with 0 parameters left.")


# ------------------------------------------------------------------------------------------------ weight_mask.npy
def test_weight_mask_npy_round_trips_without_pickle(tmp_path, base, capsys):
    """GPMT saves ``weight_mask.npy`` (a pickled list of per-layer masks). Ours: one flat bool array, masks
    flattened in C order and concatenated in parameter order, indexed by weight_mask.json; no pickle needed."""
    out, _ = _prune(tmp_path, base, capsys, "gp", "0.8")
    flat = np.load(out / "weight_mask.npy", allow_pickle=False)
    assert flat.dtype == np.bool_ and flat.ndim == 1
    ck = load_checkpoint(out)
    order = [n for n, _ in ck.model.named_parameters() if n in ck.masks]
    assert flat.size == sum(ck.masks[n].numel() for n in order)
    assert np.array_equal(flat, np.concatenate([ck.masks[n].numpy().reshape(-1) for n in order]))
    index = json.loads((out / "weight_mask.json").read_text())
    assert [lay["name"] for lay in index["layers"]] == order and index["kept"] == int(flat.sum())
    back = read_weight_mask(out)
    assert list(back) == order
    for n in order:
        assert back[n].shape == tuple(ck.masks[n].shape) and np.array_equal(back[n], ck.masks[n].numpy())


# ---------------------------------------------------------------------------------------------- GPMT prune logs
def _seed_csv(path):
    rows = list(csv.reader(path.open(newline="")))
    return rows[0], rows[1:]


def test_gpmt_prune_logs_have_the_seed_columns_and_pre_post_accuracy(tmp_path, base, capsys):
    """prune_GPMT.py writes with pandas ``to_csv`` (unnamed index column first): ``Layer Index`` (from 1), ``Layer
    Weights``, ``Pre Accuracy``, ``Weights Pruned``, ``% Pruning``, ``Post Accuracy`` = NA per layer, then a row
    holding only the post accuracy; prune_log.csv is the plain GP step, prune_refined_log.csv the MT result,
    layer_sparsities.csv ``np.savetxt`` of the refined sparsities (one fraction per line)."""
    out, s = _prune(tmp_path, base, capsys, "gpmt", "0.9", "--min-threshold", "0.5")
    layers, gp_layers = s["report"]["layers"], s["report"]["gp_layers"]
    pre, post = s["accuracy_before"]["top1"], s["accuracy_after"]["top1"]
    for name, want in (("prune_log.csv", gp_layers), ("prune_refined_log.csv", layers)):
        header, rows = _seed_csv(out / name)
        assert header == ["", "Layer Index", "Layer Weights", "Pre Accuracy", "Weights Pruned", "% Pruning",
                          "Post Accuracy"]
        assert len(rows) == len(want) + 1 and [int(r[0]) for r in rows] == list(range(len(want) + 1))
        for i, (r, lay) in enumerate(zip(rows, want), start=1):
            assert r[1:] == [str(i), str(lay["weights"]), str(pre), str(lay["pruned"]),
                             str(100 * lay["pruned"] / lay["weights"]), "NA"]
        assert rows[-1][1:6] == [""] * 5
        if name == "prune_refined_log.csv":
            assert float(rows[-1][6]) == post
        else:
            gp_out, gp = _prune(tmp_path, base, capsys, "gp", "0.9", "--eval", seed_logs=False)
            assert [r["pruned"] for r in gp["report"]["layers"]] == [r["pruned"] for r in gp_layers]
            assert float(rows[-1][6]) == gp["accuracy_after"]["top1"]  # the GP step's own accuracy
    text = (out / "layer_sparsities.csv").read_text()
    assert re.fullmatch(r"(-?\d\.\d{18}e[+-]\d\d\n)+", text)
    assert np.allclose(np.loadtxt(out / "layer_sparsities.csv", delimiter=","),
                       [lay["sparsity"] for lay in layers], rtol=0, atol=1e-15)


def test_gpmt_prune_log_missing_accuracy_is_na():
    """Without an evaluation the seed's accuracy cells read NA (as its per-layer Post Accuracy)."""
    text = gpmt_prune_log([LayerReport("a.weight", "conv", (4,), 4, 1)], None, None)
    assert text == ",Layer Index,Layer Weights,Pre Accuracy,Weights Pruned,% Pruning,Post Accuracy\n" \
                   "0,1,4,NA,1,25.0,NA\n1,,,,,,NA\n"


def test_without_the_flag_no_seed_file_is_written(tmp_path, base, capsys):
    """The seed files are opt-in: a plain prune keeps prunekit's own GPMT logs (with a Layer Name column)."""
    out, s = _prune(tmp_path, base, capsys, "gpmt", "0.9", "--min-threshold", "0.5", seed_logs=False)
    assert not any((out / f).exists() for f in SEED_PRUNE_FILES)
    assert "Layer Name" in _seed_csv(out / "prune_log.csv")[0] and s["accuracy_before"] is None


# ---------------------------------------------------------------------------------------------- per-epoch files
def _log_csv(out):
    return list(csv.DictReader((out / "log.csv").open()))


def test_train_writes_rethinking_log_txt_tab_separated(base):
    """Rethinking's Logger (cifar.py): the names ``Learning Rate, Train Loss, Valid Loss, Train Acc., Valid Acc.``
    each followed by a tab, then one line per epoch, every value ``{0:.6f}`` followed by a tab."""
    lines = (base / "log.txt").read_text().split("\n")
    assert lines[0] == "Learning Rate\tTrain Loss\tValid Loss\tTrain Acc.\tValid Acc.\t"
    rows = _log_csv(base)
    assert len(lines) == len(rows) + 2 and lines[-1] == ""
    for line, r in zip(lines[1:], rows):
        want = [float(r[k]) for k in ("lr", "train_loss", "val_loss", "train_top1", "val_top1")]
        assert line == "".join(f"{v:.6f}\t" for v in want)


def test_train_writes_slimming_record_txt(base):
    """Slimming main.py: ``np.savetxt(record.txt, history_score, fmt='%10.5f', delimiter=',')`` with
    ``history_score`` of shape (epochs + 1, 3): train loss, train accuracy, test accuracy (fractions); the last row
    holds the best test accuracy once training is over."""
    lines = (base / "record.txt").read_text().split("\n")
    assert len(lines) == 1 + 1 + 1 and lines[-1] == ""
    assert all(re.fullmatch(r"[ \d.-]{10},[ \d.-]{10},[ \d.-]{10}", ln) for ln in lines[:-1])
    r = _log_csv(base)[0]
    assert lines[0] == (f"{float(r['train_loss']):10.5f},{float(r['train_top1']) / 100:10.5f},"
                        f"{float(r['val_top1']) / 100:10.5f}")
    assert lines[1] == f"{float(r['best_top1']) / 100:10.5f},{0:10.5f},{0:10.5f}"


def test_slimming_record_rows_not_run_yet_are_zero():
    """The seed pre-allocates every epoch's row: while training, future rows and the last row are zeros."""
    rows = [{"epoch": 1, "train_loss": 2.0, "train_top1": 50.0, "val_top1": 25.0}]
    assert slimming_record(rows, 2) == "   2.00000,   0.50000,   0.25000\n" + "   0.00000,   0.00000,   0.00000\n" * 2


def test_train_writes_gpmt_epoch_csv(base):
    """GPMT's per-epoch CSV (pandas, index column first): ``Epoch`` (from 0), ``Current Time``, ``LR``, ``Orig
    Acc``, ``% Pruning``, ``Train Acc``, ``Test Acc``, ``Best Test Acc`` (percent)."""
    header, rows = _seed_csv(base / "gpmt_log.csv")
    assert header == ["", "Epoch", "Current Time", "LR", "Orig Acc", "% Pruning", "Train Acc", "Test Acc",
                      "Best Test Acc"]
    r = _log_csv(base)[0]
    assert rows[0][:2] == ["0", "0"] and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", rows[0][2])
    assert rows[0][3:] == [str(float(r["lr"])), "NA", "0.0", str(float(r["train_top1"])),
                           str(float(r["val_top1"])), str(float(r["best_top1"]))]


def test_finetune_writes_log_finetune_and_gpmt_orig_acc(tmp_path, base, capsys):
    """Rethinking cifar_finetune.py logs to ``log_finetune.txt`` (same Logger columns); GPMT's ``Orig Acc`` is the
    dense model's top-1 (the prune's accuracy before) and ``% Pruning`` the masks' sparsity."""
    pruned, s = _prune(tmp_path, base, capsys, "gp", "0.5")
    out = tmp_path / "ft"
    _run(["finetune", "--checkpoint", pruned, *TINY, "--epochs", "2", "--seed-logs", "--out", out], capsys)
    assert (out / "log_finetune.txt").read_text().startswith("Learning Rate\tTrain Loss\t")
    assert not (out / "log.txt").exists() and (out / "record.txt").is_file()
    _, rows = _seed_csv(out / "gpmt_log.csv")
    assert [r[1] for r in rows] == ["0", "1"]
    assert float(rows[0][4]) == s["accuracy_before"]["top1"]
    assert float(rows[0][5]) == pytest.approx(100 * s["sparsity"], abs=1e-9)
    assert len((out / "record.txt").read_text().split("\n")) == 2 + 1 + 1


def test_resumed_training_writes_the_same_seed_files(tmp_path, capsys):
    """The files are rebuilt whole from the trainer's history each epoch (the seeds append): train 1 epoch, resume
    to 2 (a changed --epochs: --resume-anyway), and they equal an uninterrupted 2-epoch run's (wall-clock time aside)."""
    full, part = tmp_path / "full", tmp_path / "part"
    flat = [*TINY, "--schedule", "constant", "--seed-logs"]  # constant LR: a 1-epoch run is the 2-epoch run cut
    _run(["train", *flat, "--epochs", "2", "--out", full], capsys)
    _run(["train", *flat, "--epochs", "1", "--out", part], capsys)
    _run(["train", *flat, "--epochs", "2", "--resume", "--resume-anyway", "--out", part], capsys)
    for f in ("log.txt", "record.txt"):
        assert (part / f).read_text() == (full / f).read_text(), f
    strip = [[c for i, c in enumerate(r) if i != 2] for r in _seed_csv(part / "gpmt_log.csv")[1]]
    assert strip == [[c for i, c in enumerate(r) if i != 2] for r in _seed_csv(full / "gpmt_log.csv")[1]]


def test_pure_writers_match_the_seed_layouts():
    """The pure functions: Logger lines end in a tab; GPMT's epoch CSV writes NA for what is unknown."""
    rows = [{"epoch": 1, "lr": 0.1, "train_loss": 1.0, "val_loss": 2.0, "train_top1": 50.0, "val_top1": 40.0,
             "best_top1": 40.0, "seed_log_time": "2024-01-01 00:00:00.000001"}]
    assert rethinking_log(rows).split("\n")[1] == "0.100000\t1.000000\t2.000000\t50.000000\t40.000000\t"
    assert gpmt_epoch_log(rows).split("\n")[1] == "0,0,2024-01-01 00:00:00.000001,0.1,NA,NA,50.0,40.0,40.0"
