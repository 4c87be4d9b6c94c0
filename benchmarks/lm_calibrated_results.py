"""Real-data result: magnitude vs Wanda vs SparseGPT on a byte-level transformer LM trained here on CPU.

    python benchmarks/lm_calibrated_results.py [--out runs/lm_stdlib] [--steps 400] [--threads 2]

Corpus: the Python standard library's own top-level ``*.py`` sources (installed with Python, never downloaded),
sorted by name; every 10th file (index 0, 10, 20 ...) is held out, the rest is training/calibration text (split by
file). A :class:`prunekit.models.lm.ByteLM` (4 blocks, width 128, context 128) is trained for ``--steps`` AdamW
steps, then pruned at 50% unstructured and at 2:4 (the Linear layers inside the blocks only, as the papers:
embeddings and ``lm_head`` stay dense) by magnitude (per layer; nm_masks for 2:4), Wanda and SparseGPT, with 128
calibration windows of 128 bytes from the training text, 3 calibration seeds. Perplexity on the held-out files
(non-overlapping 128-byte windows). Writes ``results.md`` / ``results.json`` into ``--out`` and the trained model
(``model.safetensors``) plus ``train.txt`` (for the CLI example of the README).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from prunekit.checkpoint import save_model
from prunekit.data.text import calibration_samples, encode
from prunekit.factory import build_model
from prunekit.metrics.perplexity import perplexity
from prunekit.pruning.nm import nm_masks
from prunekit.pruning.scope import Scope
from prunekit.pruning.unstructured import prune_unstructured
from prunekit.utils.table import markdown_table

FACTORY = "prunekit.models.lm:byte_lm"
KWARGS = {"dim": 128, "layers": 4, "heads": 4, "mlp_ratio": 4, "max_len": 128}
SEQ = 128
BLOCKS = Scope(kinds=("linear",), include=(r"^blocks\.",))


def corpus() -> tuple[list[str], list[str], bytes, bytes]:
    """(train files, held-out files, train bytes, held-out bytes) from the stdlib's top-level sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    held = [p for i, p in enumerate(files) if i % 10 == 0]
    train = [p for i, p in enumerate(files) if i % 10 != 0]
    return ([p.name for p in train], [p.name for p in held], b"\n".join(p.read_bytes() for p in train),
            b"\n".join(p.read_bytes() for p in held))


def train_lm(tokens: torch.Tensor, steps: int, seed: int) -> torch.nn.Module:
    """AdamW, batch 32 windows of 128 bytes, cosine LR from 3e-3 with 50 warm-up steps."""
    torch.manual_seed(seed)
    model = build_model(FACTORY, KWARGS)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, tokens.numel() - SEQ - 1, (32,), generator=gen)
        batch = torch.stack([tokens[s:s + SEQ + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return model.eval()


def magnitude(model: torch.nn.Module, nm: bool) -> None:
    """Magnitude baseline on the same layers: per-layer 50% (layerwise), or 2:4 by |w|."""
    if nm:
        res = nm_masks(model, 2, 4, scope=BLOCKS, apply=True)
        assert not res.skipped, res.skipped
    else:
        prune_unstructured(model, "layerwise", 0.5, scope=BLOCKS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lm_stdlib")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train_files, held_files, train_b, held_b = corpus()
    train_t, held_t = encode(train_b), encode(held_b)
    print(f"corpus: {len(train_files)} train files ({len(train_b):,} bytes), {len(held_files)} held-out files "
          f"({len(held_b):,} bytes), python {sys.version.split()[0]}", flush=True)
    t0 = time.perf_counter()
    dense = train_lm(train_t, a.steps, seed=0)
    train_s = time.perf_counter() - t0
    save_model(dense, out)
    (out / "train.txt").write_bytes(train_b)
    (out / "heldout.txt").write_bytes(held_b)

    def ppl(model: torch.nn.Module) -> float:
        return perplexity(model, held_t, SEQ, batch_size=16, max_windows=a.eval_windows).perplexity

    rows: dict[str, dict[str, list[float]]] = {}
    extra: dict[str, dict[str, list[float]]] = {}
    dense_ppl = ppl(dense)
    rows["dense"] = {"50%": [dense_ppl], "2:4": [dense_ppl]}
    for pattern in ("50%", "2:4"):
        m = copy.deepcopy(dense)
        magnitude(m, pattern == "2:4")
        rows.setdefault("magnitude", {})[pattern] = [ppl(m)]
    for method in ("wanda", "sparsegpt"):
        for pattern in ("50%", "2:4"):
            for seed in a.seeds:
                calib = calibration_samples(train_t, a.samples, SEQ, seed=seed)
                m = copy.deepcopy(dense)
                kw = {"n": 2, "m": 4} if pattern == "2:4" else {}
                res = prune_unstructured(m, method, 0.5, data=calib, scope=BLOCKS, **kw)
                p = ppl(m)
                rows.setdefault(method, {}).setdefault(pattern, []).append(p)
                e = extra.setdefault(f"{method} {pattern}", {"error": [], "seconds": []})
                e["error"].append(res.report.mean_error)
                e["seconds"].append(res.report.seconds)
                print(f"{method} {pattern} seed {seed}: ppl {p:.4f} mean layer error "
                      f"{res.report.mean_error:.4f} ({res.report.seconds:.1f}s)", flush=True)

    def fmt(v: list[float]) -> str:
        return f"{v[0]:.3f}" if len(v) == 1 else f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"

    table = markdown_table(["method", "50% unstructured", "2:4"],
                           [[k, fmt(v["50%"]), fmt(v["2:4"])] for k, v in rows.items()])
    errs = markdown_table(["method", "mean layer error ‖WX−ŴX‖/‖WX‖", "prune time s"],
                          [[k, fmt(v["error"]), fmt(v["seconds"])] for k, v in extra.items()])
    text = (f"ByteLM {KWARGS}, {a.steps} steps ({train_s:.0f}s training), {len(train_files)} train / "
            f"{len(held_files)} held-out stdlib files; held-out perplexity (bytes) over "
            f"{min(a.eval_windows, held_t.numel() // SEQ)} windows of {SEQ}; calibration {a.samples} x {SEQ} bytes, "
            f"seeds {a.seeds} (mean ± std)\n\n{table}\n\n{errs}\n")
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"ppl": rows, "calibration": extra, "train_files": train_files,
                                                  "heldout_files": held_files, "train_seconds": train_s}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
