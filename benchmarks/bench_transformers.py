"""Benchmark (not a test): structured pruning of transformers, prunekit vs Torch-Pruning on the same models.

Eight random-init models, built from configs (nothing is downloaded), 4 attention layers each, hidden 128 (Swin:
64 -> 128 over two stages):

* Hugging Face ``LlamaForCausalLM`` (grouped-query attention, 8 query / 2 key-value heads), ``Qwen2ForCausalLM``
  (8 / 4 heads, qkv biases, tied ``lm_head``), ``MistralForCausalLM`` (8 / 2 heads, sliding window),
  ``BertForSequenceClassification`` (with a padding mask), ``ViTForImageClassification``,
  ``SwinForImageClassification`` (two stages, patch merging, relative position bias);
* two plain-torch ViTs defined here: a fused-qkv one (one ``nn.Linear`` for q/k/v, reshape to heads,
  ``F.scaled_dot_product_attention``: the timm / torchvision-style attention) and one on ``nn.MultiheadAttention``
  (torchvision's ``VisionTransformer`` layout: ``in_proj_weight``, class token, position embedding).

Each is pruned at every ``--ratios`` value by both tools, asked for the same thing: whole attention heads, MLP width
and hidden (residual-stream) width, each at that ratio per layer, L2 magnitude, the classifier / ``lm_head``
output kept.

* prunekit: ``prunekit.prune_structured(model, inputs, ratio=r, criterion="l2")`` (default ``kinds``: heads, hidden,
  channels). Its exactness check is part of the call: ``rel diff`` is the pruned model's output against the
  exactness reference (the unpruned model that ignores the removed heads/channels), max |Δ| / max |y|.
* Torch-Pruning: ``tp.pruner.MetaPruner(..., importance=GroupMagnitudeImportance(p=2), pruning_ratio=r,
  num_heads={q/k/v: heads}, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=r,
  ignored_layers=[classifier])`` then, as in its examples, the attention modules' head attributes and the HF
  ``config`` are updated by hand (Swin: a pruner for ``SwinPatchMerging``, as its example does). It has no
  exactness check; its column is the output change against the *dense* model, and whether the pruned model runs on
  inputs of another shape. prunekit's change against the dense model is given too (``Δ dense``): both tools remove
  weights, so both change the output; what differs is whether the removal is proved to be only that.

Columns: params and MACs before → after (MACs: all multiply-accumulates of one forward on the example input, from
``torch.utils.flop_counter`` with the CPU SDPA kernel counted), heads per attention layer before → after
(``q/kv×head_dim``, GQA models show both), prune time (one thread, the two tools interleaved, best of
``--repeats``; prunekit's time includes its exactness check), ``reload``: the pruned HF model's
``save_pretrained`` + ``AutoModel…from_pretrained`` gives the same outputs (max rel diff ≤ 1e-5).

    pip install torch-pruning --no-deps transformers
    python benchmarks/bench_transformers.py [--ratios 0.3 0.5] [--repeats 2] [--models llama bert ...]
        [--out runs/bench_transformers]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import prunekit

HIDDEN, LAYERS, HEADS, VOCAB = 128, 4, 8, 1024


# --------------------------------------------------------------------------------------------- plain-torch ViTs
class FusedAttention(nn.Module):
    """One ``nn.Linear`` for q, k and v, reshaped to heads, ``F.scaled_dot_product_attention`` (timm style)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class FusedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), FusedAttention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MHABlock(nn.Module):
    """torchvision's ``EncoderBlock``: ``nn.MultiheadAttention`` (fused ``in_proj_weight``) + MLP."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class PlainViT(nn.Module):
    """Patch conv, class token, learned position embedding, pre-norm blocks, final norm, linear head."""

    def __init__(self, block: type, size: int = 32, patch: int = 4, dim: int = HIDDEN, heads: int = HEADS,
                 depth: int = LAYERS, mlp: int = 4 * HIDDEN, classes: int = 10) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        n = (size // patch) ** 2
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[block(dim, heads, mlp) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.blocks(x))[:, 0])


# ------------------------------------------------------------------------------------------------ the models
@dataclass
class Case:
    name: str
    model: nn.Module
    inputs: Any                   # the example (tensor or dict of keyword inputs)
    other: Any                    # inputs of another shape: does the pruned model still run?
    auto: str | None = None       # transformers Auto class for the reload check (HF models)
    head: Callable[[nn.Module], nn.Module] = lambda m: m.head
    tp_heads: Callable[[nn.Module], dict] = lambda m: {}
    tp_fix: Callable[[nn.Module, Any], None] = lambda m, p: None
    tp_kwargs: Callable[[nn.Module], dict] = lambda m: {}
    tp_head_dims: bool = False    # also run Torch-Pruning pruning head dims instead of heads (its own example)
    notes: list[str] = field(default_factory=list)


def _ids(batch: int, n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def _img(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _qkv(a: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    """The q/k/v projections of an HF attention module (``q_proj``/``k_proj``/``v_proj`` or BERT's
    ``query``/``key``/``value``), or None."""
    for names in (("q_proj", "k_proj", "v_proj"), ("query", "key", "value")):
        mods = [getattr(a, n, None) for n in names]
        if all(isinstance(x, nn.Linear) for x in mods):
            return mods[0], mods[1], mods[2]
    return None


def _head_dim(a: nn.Module) -> int:
    return int(getattr(a, "head_dim", None) or a.attention_head_size)


def hf_tp_heads(m: nn.Module) -> dict:
    """Torch-Pruning's ``num_heads``: every q/k/v projection with its head count (GQA: k/v have fewer)."""
    out = {}
    for a in m.modules():
        qkv = _qkv(a)
        if qkv is not None:
            for lin in qkv:
                out[lin] = lin.out_features // _head_dim(a)
    return out


def hf_tp_fix(m: nn.Module, pruner: Any) -> None:
    """After Torch-Pruning: the attention modules' head attributes and the config, as its examples do by hand."""
    for a in m.modules():
        qkv = _qkv(a)
        if qkv is None:
            continue
        nq, nkv = pruner.num_heads[qkv[0]], pruner.num_heads[qkv[1]]
        hd = qkv[0].out_features // nq
        for attr, v in (("num_attention_heads", nq), ("head_dim", hd), ("attention_head_size", hd),
                        ("all_head_size", qkv[0].out_features), ("num_key_value_groups", nq // nkv)):
            if hasattr(a, attr):
                setattr(a, attr, v)
        cfg = m.config
        if cfg.model_type == "swin":  # per-stage heads and widths: the stock config has no field for them
            continue
        cfg.num_attention_heads = nq
        if hasattr(cfg, "num_key_value_heads"):
            cfg.num_key_value_heads = nkv
        if getattr(cfg, "head_dim", None) is not None:
            cfg.head_dim = hd
    cfg = m.config
    if cfg.model_type != "swin":
        mlp = [x for x in m.modules() if isinstance(getattr(x, "gate_proj", None), nn.Linear)
               or isinstance(getattr(x, "fc1", None), nn.Linear) or type(x).__name__.endswith("Intermediate")]
        if mlp:
            first = getattr(mlp[0], "gate_proj", None) or getattr(mlp[0], "fc1", None) or mlp[0].dense
            cfg.intermediate_size = first.out_features
        head = m.lm_head if hasattr(m, "lm_head") else m.classifier
        cfg.hidden_size = head.in_features


def _llama_like(name: str, cls_name: str, cfg_name: str, kv: int, **extra: Any) -> Case:
    import transformers
    cfg = getattr(transformers, cfg_name)(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=352,
                                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                          num_key_value_heads=kv, max_position_embeddings=256, **extra)
    model = getattr(transformers, cls_name)(cfg).eval()
    return Case(name, model, {"input_ids": _ids(1, 32, 0)}, {"input_ids": _ids(2, 20, 1)},
                auto="AutoModelForCausalLM", head=lambda m: m.lm_head, tp_heads=hf_tp_heads, tp_fix=hf_tp_fix)


def case_llama() -> Case:
    return _llama_like("HF Llama (GQA 8/2)", "LlamaForCausalLM", "LlamaConfig", 2, tie_word_embeddings=False)


def case_qwen2() -> Case:
    return _llama_like("HF Qwen2 (GQA 8/4, tied)", "Qwen2ForCausalLM", "Qwen2Config", 4, tie_word_embeddings=True)


def case_mistral() -> Case:
    return _llama_like("HF Mistral (GQA 8/2)", "MistralForCausalLM", "MistralConfig", 2, sliding_window=16,
                       tie_word_embeddings=False)


def case_bert() -> Case:
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=4 * HIDDEN, max_position_embeddings=128, num_labels=3)
    model = BertForSequenceClassification(cfg).eval()
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, 16:] = 0
    inputs = {"input_ids": _ids(2, 24, 0), "attention_mask": mask}
    return Case("HF BERT", model, inputs, {"input_ids": _ids(3, 12, 1)}, auto="AutoModelForSequenceClassification",
                head=lambda m: m.classifier, tp_heads=hf_tp_heads, tp_fix=hf_tp_fix)


def case_vit() -> Case:
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                    num_attention_heads=HEADS, intermediate_size=4 * HIDDEN, num_labels=10)
    model = ViTForImageClassification(cfg).eval()
    return Case("HF ViT", model, {"pixel_values": _img(1, 32, 0)}, {"pixel_values": _img(3, 32, 1)},
                auto="AutoModelForImageClassification", head=lambda m: m.classifier, tp_heads=hf_tp_heads,
                tp_fix=hf_tp_fix)


def case_swin() -> Case:
    from transformers import SwinConfig, SwinForImageClassification
    cfg = SwinConfig(image_size=32, patch_size=2, num_channels=3, embed_dim=64, depths=[2, 2], num_heads=[4, 8],
                     window_size=4, mlp_ratio=4.0, num_labels=10)
    model = SwinForImageClassification(cfg).eval()
    return Case("HF Swin", model, {"pixel_values": _img(1, 32, 0)}, {"pixel_values": _img(3, 32, 1)},
                auto="AutoModelForImageClassification", head=lambda m: m.classifier, tp_heads=hf_tp_heads,
                tp_fix=hf_tp_fix, tp_kwargs=_swin_tp_kwargs, tp_head_dims=True)


def _swin_tp_kwargs(model: nn.Module) -> dict:
    """Torch-Pruning cannot trace through ``SwinPatchMerging`` (4 neighbours concatenated along channels); its
    Swin example registers a pruner that treats the merge as one layer. The same, written here."""
    import torch_pruning as tp
    from transformers.models.swin.modeling_swin import SwinPatchMerging

    class PatchMergingPruner(tp.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            tp.prune_linear_out_channels(layer.reduction, idxs)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            dim = layer.reduction.in_features // 4
            four = [i + k * dim for k in range(4) for i in idxs]  # the channel in each of the 4 neighbours
            tp.prune_linear_in_channels(layer.reduction, four)
            tp.prune_layernorm_out_channels(layer.norm, four)
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.reduction.out_features

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.reduction.in_features // 4

    return {"customized_pruners": {SwinPatchMerging: PatchMergingPruner()},
            "root_module_types": (nn.Linear, nn.LayerNorm, SwinPatchMerging)}


def case_fused_vit() -> Case:
    torch.manual_seed(0)
    model = PlainViT(FusedBlock).eval()

    def heads(m: nn.Module) -> dict:
        return {b.attn.qkv: b.attn.num_heads for b in m.blocks}

    def fix(m: nn.Module, pruner: Any) -> None:  # Torch-Pruning's timm ViT example
        for b in m.blocks:
            b.attn.num_heads = pruner.num_heads[b.attn.qkv]
            b.attn.head_dim = b.attn.qkv.out_features // (3 * b.attn.num_heads)

    return Case("fused-qkv ViT (plain torch)", model, _img(1, 32, 0), _img(3, 32, 1), tp_heads=heads, tp_fix=fix)


def case_mha_vit() -> Case:
    torch.manual_seed(0)
    model = PlainViT(MHABlock).eval()
    return Case("nn.MultiheadAttention ViT", model, _img(1, 32, 0), _img(3, 32, 1))


CASES: dict[str, Callable[[], Case]] = {
    "llama": case_llama, "qwen2": case_qwen2, "mistral": case_mistral, "bert": case_bert, "vit": case_vit,
    "swin": case_swin, "fused-vit": case_fused_vit, "mha-vit": case_mha_vit,
}


# ------------------------------------------------------------------------------------------------- measuring
def call(model: nn.Module, inputs: Any, grad: bool = False) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def rel_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |a| (prunekit's definition of rel_diff)."""
    return float((a - b).abs().max() / a.abs().max())


def _sdpa_flops(q: Sequence[int], k: Sequence[int], v: Sequence[int], *args: Any, **kwargs: Any) -> int:
    b, h, s, d = q
    return 2 * b * h * s * k[-2] * (d + v[-1])


def count_macs(model: nn.Module, inputs: Any) -> int:
    """All MACs of one forward: PyTorch's FLOP counter / 2, the CPU SDPA kernel counted too (its formula is
    missing from the counter)."""
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as fc:
        call(model, inputs, grad=True)  # with grad: nn.MultiheadAttention's fused fast path is not counted
    return fc.get_total_flops() // 2


def layout(rows: Sequence[tuple[int, int | None, int]]) -> str:
    """``q/kv×head_dim`` per attention layer, collapsed when every layer is alike."""
    forms = [f"{q}/{kv}×{d}" if kv is not None and kv != q else f"{q}×{d}" for q, kv, d in rows]
    uniq = list(dict.fromkeys(forms))
    return uniq[0] if len(uniq) == 1 else ",".join(forms)


def prunekit_layout(table: Sequence[dict], after: bool) -> str:
    by: dict[str, list[tuple[int, int]]] = {}
    for r in table:
        by.setdefault(r["module"], []).append((r["heads_kept" if after else "heads"],
                                               r["head_dim_kept" if after else "head_dim"]))
    rows = []
    for ents in by.values():
        q = max(ents)
        kv = min(ents)[0] if len(ents) > 1 else None
        rows.append((q[0], kv, q[1]))
    return layout(rows)


def tp_layout(case: Case, model: nn.Module, num_heads: dict) -> str:
    if not num_heads:  # nn.MultiheadAttention: Torch-Pruning's own pruner keeps num_heads, narrows head_dim
        return layout([(m.num_heads, None, m.head_dim) for m in model.modules()
                       if isinstance(m, nn.MultiheadAttention)])
    rows = []
    for m in model.modules():
        qkv = _qkv(m)
        if qkv is not None and qkv[0] in num_heads:
            nq, nkv = num_heads[qkv[0]], num_heads[qkv[1]]
            rows.append((nq, nkv, qkv[0].out_features // nq))
        elif isinstance(getattr(m, "qkv", None), nn.Linear) and m.qkv in num_heads:
            rows.append((num_heads[m.qkv], None, m.qkv.out_features // (3 * num_heads[m.qkv])))
    return layout(rows)


def reload_check(model: nn.Module, case: Case, ref: torch.Tensor) -> str:
    """save_pretrained + Auto…from_pretrained: ``yes`` when the outputs agree within 1e-5, else why not."""
    import transformers
    try:
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(d)
            back = getattr(transformers, case.auto).from_pretrained(d).eval()
            rel = rel_change(ref, call(back, case.inputs))
        return "yes" if rel <= 1e-5 else f"no (outputs differ: rel {rel:.1e})"
    except Exception as e:  # noqa: BLE001  (any failure is the answer)
        return "no (" + _short(e) + ")"


def _short(e: BaseException, n: int = 90) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return msg if len(msg) <= n else msg[:n - 1] + "…"


def run_prunekit(case: Case, ratio: float) -> dict:
    t0 = time.perf_counter()
    res = prunekit.prune_structured(case.model, case.inputs, ratio=ratio, criterion="l2")
    secs = time.perf_counter() - t0
    table = res.info.get("attention", [])
    return {"model": res.model, "seconds": secs, "prune_seconds_no_verify": res.info.get("prune_seconds"),
            "rel_diff": float(res.info["rel_diff"]), "heads_before": prunekit_layout(table, False),
            "heads_after": prunekit_layout(table, True), "hf": res.info.get("hf"),
            "kept_whole": res.info.get("attention_kept_whole") or res.info.get("kept_whole")}


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Timeout("did not finish")


def with_timeout(seconds: float, fn: Callable[..., dict], *args: Any) -> dict:
    """Run ``fn(*args)``, raising :class:`Timeout` after ``seconds`` (SIGALRM; the main thread only)."""
    if seconds <= 0:
        return fn(*args)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_torch_pruning(case: Case, ratio: float, head_dims: bool = False) -> dict:
    """Torch-Pruning as its examples use it: whole heads (``prune_num_heads``), or with ``head_dims`` the heads
    kept and their dims pruned (its Swin / HF ViT examples)."""
    import torch_pruning as tp
    model = copy.deepcopy(case.model)
    heads = case.tp_heads(model)
    before = tp_layout(case, model, heads)
    example = case.inputs
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=[case.head(model)], num_heads=heads, prune_num_heads=bool(heads) and not head_dims,
            prune_head_dims=head_dims,
            head_pruning_ratio=ratio, global_pruning=False,
            output_transform=(lambda out: out.logits) if case.auto else None, **case.tp_kwargs(model))
        for g in pruner.step(interactive=True):
            g.prune()
        case.tp_fix(model, pruner)
    secs = time.perf_counter() - t0
    return {"model": model.eval(), "seconds": secs, "heads_before": before,
            "heads_after": tp_layout(case, model, pruner.num_heads if heads else {})}


def measure(case: Case, ratios: Sequence[float], repeats: int, timeout: float) -> list[dict]:
    dense_out = call(case.model, case.inputs)
    dense_params, dense_macs = prunekit.count_params(case.model), count_macs(case.model, case.inputs)
    rows = []
    tools: list[tuple[str, Callable[..., dict]]] = [
        ("prunekit", run_prunekit), ("torch-pruning", lambda c, r: with_timeout(timeout, run_torch_pruning, c, r))]
    if case.tp_head_dims:
        tools.append(("torch-pruning (head dims)",
                      lambda c, r: with_timeout(timeout, run_torch_pruning, c, r, True)))
    timed_out: dict[str, str] = {}
    for ratio in ratios:
        best: dict[str, dict | None] = {t: None for t, _ in tools}
        errors: dict[str, str] = dict(timed_out)
        for rep in range(repeats):  # interleaved, the order reversed every other repeat
            for tool, fn in tools if rep % 2 == 0 else tools[::-1]:
                if tool in errors:
                    continue
                if os.environ.get("BENCH_DEBUG"):
                    print(f"  {case.name} r={ratio} {tool} ...", flush=True)
                try:
                    r = fn(case, ratio)
                except Timeout:
                    errors[tool] = timed_out[tool] = f"did not finish in {timeout:.0f}s (not retried)"
                    continue
                except Exception as e:  # noqa: BLE001  (a tool failing on a model is a result)
                    errors[tool] = _short(e, 160)
                    if os.environ.get("BENCH_DEBUG"):
                        traceback.print_exc()
                    continue
                if best[tool] is None or r["seconds"] < best[tool]["seconds"]:
                    best[tool] = r
        for tool, r in best.items():
            row = {"model": case.name, "ratio": ratio, "tool": tool, "params_before": dense_params,
                   "macs_before": dense_macs}
            if r is None:
                row.update({"error": errors.get(tool, "not run"), "runs": False})
                rows.append(row)
                continue
            m = r.pop("model")
            row.update({k: v for k, v in r.items()})
            row["params_after"] = prunekit.count_params(m)
            try:
                out = call(m, case.inputs)
                row["rel_vs_dense"] = rel_change(dense_out, out)
                row["macs_after"] = count_macs(m, case.inputs)
                call(m, case.other)
                row["runs"] = True
            except Exception as e:  # noqa: BLE001
                row["runs"], row["run_error"] = False, _short(e, 160)
            if case.auto:
                if tool == "prunekit" and not (r.get("hf") or {}).get("loadable"):
                    row["reload"] = "no (" + str((r.get("hf") or {}).get("reason")) + ")"
                elif row["runs"]:
                    row["reload"] = reload_check(m, case, out)
                else:
                    row["reload"] = "no (does not run)"
            rows.append(row)
    return rows


def fmt_table(rows: Sequence[dict], ratio: float) -> str:
    lines = [f"### ratio {ratio}", "",
             "| model | tool | params | MACs | heads (q/kv×dim) | rel diff vs reference | Δ vs dense | runs | "
             "prune s | HF reload |",
             "|---|---|---:|---:|---|---:|---:|---|---:|---|"]
    for r in rows:
        if r["ratio"] != ratio:
            continue
        if "error" in r:
            lines.append(f"| {r['model']} | {r['tool']} | {r['params_before']:,} → – | | | | | fails: "
                         f"{r['error']} | | |")
            continue
        p = f"{r['params_before']:,} → {r['params_after']:,} ({100 * r['params_after'] / r['params_before']:.0f}%)"
        mac = (f"{r['macs_before'] / 1e6:.2f}M → {r['macs_after'] / 1e6:.2f}M "
               f"({100 * r['macs_after'] / r['macs_before']:.0f}%)" if "macs_after" in r else "–")
        exact = f"{r['rel_diff']:.1e}" if "rel_diff" in r else "no check"
        dense = f"{r['rel_vs_dense']:.2f}" if "rel_vs_dense" in r else "–"
        runs = "yes" if r["runs"] else "no: " + r.get("run_error", "")
        lines.append(f"| {r['model']} | {r['tool']} | {p} | {mac} | {r['heads_before']} → {r['heads_after']} | "
                     f"{exact} | {dense} | {runs} | {r['seconds']:.2f} | {r.get('reload', 'n/a')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per tool (interleaved); best is reported")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tp-timeout", type=float, default=60,
                    help="seconds one Torch-Pruning prune may take (0: no limit); beyond, the model is marked")
    ap.add_argument("--out", default=None, help="folder for bench_transformers.json (and the tables as .md)")
    args = ap.parse_args()
    try:
        import torch_pruning  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"{e.name} is not installed (pip install torch-pruning --no-deps transformers): benchmark not run")
        return
    import transformers as tf
    tf.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    warm = case_fused_vit()  # warm-up of both tools (lazy imports, allocator); not timed
    run_prunekit(warm, 0.5)
    run_torch_pruning(warm, 0.5)
    rows: list[dict] = []
    for key in args.models:
        torch.manual_seed(0)
        case = CASES[key]()
        t0 = time.perf_counter()
        rows += measure(case, args.ratios, args.repeats, args.tp_timeout)
        print(f"[{case.name}: {time.perf_counter() - t0:.0f}s]", flush=True)
    text = "\n\n".join(fmt_table(rows, r) for r in args.ratios)
    print()
    print(text)
    total = time.perf_counter() - t_start
    print(f"\n(torch {torch.__version__}, transformers {tf.__version__}, torch-pruning "
          f"{torch_pruning.__version__}, {args.threads} thread(s), total {total:.0f}s)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_transformers.json"), "w") as f:
            json.dump({"args": vars(args), "rows": rows, "seconds": round(total, 1),
                       "versions": {"torch": torch.__version__, "transformers": tf.__version__,
                                    "torch_pruning": torch_pruning.__version__}}, f, indent=1, default=str)
        with open(os.path.join(args.out, "bench_transformers.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
