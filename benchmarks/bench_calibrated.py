"""Benchmark: time and peak memory of Wanda and SparseGPT on a random-init Hugging Face Llama (~106M parameters),
one block at a time (sequential) vs whole-model forwards.

    python benchmarks/bench_calibrated.py [--samples 8] [--seq-len 256] [--threads 2] [--layers 8]

Each (method, mode) runs in a fresh subprocess so that its peak resident memory is its own: ``peak RSS`` is the
process's peak during the prune (model included), ``rise`` its growth over the RSS when the prune started (what
calibration itself added: activations, statistics, copies), after a warm-up forward pass (torch's own code pages
and buffers enter the RSS on first use and would otherwise be counted). The model: LlamaConfig(hidden 768, intermediate 2048,
8 layers, 12 heads, vocab 32000, untied lm_head) = 105.8M parameters, float32, random init (seed 0); calibration
``--samples`` random token sequences of ``--seq-len``, one batch of 4 at a time; 50% unstructured.

llm-compressor (``SparseGPTModifier`` / ``WandaPruningModifier``) does not install next to prunekit's pins: its 0.14
wheel requires ``transformers<=5.17`` (5.25 here) and pulls ``auto-round``, ``datasets``, ``compressed-tensors``,
``nvidia-ml-py``. It runs with the CPU torch from a separate venv (``python -m venv --system-site-packages V;
V/bin/pip install llmcompressor``: torch 2.13+cpu is kept, transformers 5.17 goes into the venv only); pass
``--llmcompressor-python V/bin/python`` to add its rows (same model config, data and sparsity; transformers 5.17).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any



def _llama(layers: int, seq_len: int) -> Any:
    """The random-init Llama both measurements use (hidden 768, 12 heads, vocabulary 32,000)."""
    import torch
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                                   num_hidden_layers=layers, num_attention_heads=12, num_key_value_heads=12,
                                   max_position_embeddings=max(seq_len, 256), tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _one(method: str, sequential: bool, samples: int, seq_len: int, layers: int, threads: int) -> dict:
    import torch

    from prunekit.pruning.calibrated import prune_calibrated
    from prunekit.pruning.calibrated.memory import current_rss

    torch.set_num_threads(threads)
    model = _llama(layers, seq_len)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (samples, seq_len), generator=g)
    data = [ids[i:i + 4] for i in range(0, samples, 4)]
    with torch.no_grad():  # warm-up: torch's code pages and thread pools count in RSS on first use, not here
        model(data[0])
        torch.linalg.cholesky(torch.eye(64, dtype=torch.float32))
        torch.zeros(64, 64, dtype=torch.float64).addmm_(torch.ones(64, 8, dtype=torch.float64),
                                                        torch.ones(8, 64, dtype=torch.float64))
    rss_model = current_rss()
    t = time.perf_counter()
    res = prune_calibrated(model, method, 0.5, data=data, sequential=sequential)
    rep = res.report
    return {"method": method, "mode": "sequential" if sequential else "whole model", "params": params,
            "seconds": time.perf_counter() - t, "peak_rss_mb": rep.peak_rss / 2 ** 20,
            "rise_mb": rep.rss_rise / 2 ** 20, "rss_model_mb": (rss_model or 0) / 2 ** 20,
            "sparsity": rep.sparsity, "mean_error": rep.mean_error, "layers": len(rep.layers)}


def _one_llmc(method: str, samples: int, seq_len: int, layers: int, threads: int) -> dict:
    """The same prune with llm-compressor's ``oneshot`` (run by the interpreter of a venv that has it)."""
    import tempfile

    import torch
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from tokenizers import Tokenizer, models, pre_tokenizers

    from prunekit.pruning.calibrated.memory import PeakRSS, current_rss

    torch.set_num_threads(threads)
    model = _llama(layers, seq_len)
    tk = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"t{i}": i for i in range(1, 32000)}}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    proc = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[UNK]")
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    model.config._name_or_path = folder  # oneshot re-reads the config from the model's folder
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (samples, seq_len), generator=g)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    with torch.no_grad():
        model(ids[:4])
    rss_model = current_rss()
    cls = SparseGPTModifier if method == "sparsegpt" else WandaPruningModifier
    t = time.perf_counter()
    with PeakRSS() as mem:
        oneshot(model=model, dataset=ds, recipe=cls(sparsity=0.5, mask_structure="0:0", ignore=["re:.*lm_head"]),
                num_calibration_samples=samples, max_seq_length=seq_len, processor=proc, batch_size=4)
    seconds = time.perf_counter() - t
    lin = [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers." in n]
    zeros = sum(int((w == 0).sum()) for w in lin) / sum(w.numel() for w in lin)
    return {"method": f"{method} (llm-compressor)", "mode": "its sequential pipeline",
            "params": sum(p.numel() for p in model.parameters()), "seconds": seconds,
            "peak_rss_mb": mem.peak / 2 ** 20, "rise_mb": mem.rise / 2 ** 20, "rss_model_mb": (rss_model or 0) / 2 ** 20,
            "sparsity": zeros, "mean_error": float("nan"), "layers": len(lin)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    ap.add_argument("--modes", nargs="+", default=["seq", "whole"], choices=["seq", "whole"],
                    help="sparsegpt's solve is the same in both modes; only the forwards and activations differ")
    ap.add_argument("--whole-methods", nargs="+", default=None, help="methods run in whole mode (default all)")
    ap.add_argument("--llmcompressor-python", default=None, metavar="PYTHON",
                    help="also run llm-compressor's oneshot with this interpreter (a venv that has llmcompressor)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        method, mode = a.child.split(",")
        if mode == "llmc":
            print(json.dumps(_one_llmc(method, a.samples, a.seq_len, a.layers, a.threads)))
        else:
            print(json.dumps(_one(method, mode == "seq", a.samples, a.seq_len, a.layers, a.threads)))
        return 0
    rows = []
    for method in a.methods:
        modes = [m for m in a.modes if m == "seq" or a.whole_methods is None or method in a.whole_methods]
        for mode in modes + (["llmc"] if a.llmcompressor_python else []):
            python = a.llmcompressor_python if mode == "llmc" else sys.executable
            cmd = [python, __file__, "--child", f"{method},{mode}", "--samples", str(a.samples),
                   "--seq-len", str(a.seq_len), "--layers", str(a.layers), "--threads", str(a.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{method} {mode}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['method']:9s} {r['mode']:11s} {r['seconds']:7.1f}s  peak RSS {r['peak_rss_mb']:7.0f} MiB  "
                  f"rise {r['rise_mb']:6.0f} MiB  (model loaded: {r['rss_model_mb']:.0f} MiB)  "
                  f"sparsity {r['sparsity']:.4f}  mean layer error {r['mean_error']:.4f}", flush=True)
    from prunekit.utils.table import markdown_table

    print(f"\nLlama {rows[0]['params'] / 1e6:.1f}M params, {a.layers} layers, {a.samples} x {a.seq_len} tokens, "
          f"{a.threads} threads\n")
    print(markdown_table(["method", "mode", "time s", "peak RSS MiB", "rise over start MiB", "mean layer error"],
                         [[r["method"], r["mode"], f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}",
                           f"{r['rise_mb']:.0f}", f"{r['mean_error']:.4f}"] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
