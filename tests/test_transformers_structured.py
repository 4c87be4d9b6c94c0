"""Structured pruning of transformers: heads (GQA included), hidden width, MLP width, depth; Hugging Face round trips.

Tiny random-init models (2 layers, hidden 32-64). Exactness is checked by prunekit against its reference and here
again against an oracle built in the test (the dense weights sliced by hand, or the dense model with the removed
heads' output columns zeroed).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.errors import PrunekitError

transformers = pytest.importorskip("transformers")

REL = 1e-5
GEN = torch.Generator().manual_seed(1)


def _llama(cls_name: str = "LlamaForCausalLM", attn: str = "sdpa", heads: int = 8, kv: int = 2) -> tuple:
    cfg_cls = {"LlamaForCausalLM": "LlamaConfig", "Qwen2ForCausalLM": "Qwen2Config",
               "MistralForCausalLM": "MistralConfig"}[cls_name]
    cfg = getattr(transformers, cfg_cls)(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=8,
                                         max_position_embeddings=32)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(cfg).eval()
    return model, {"input_ids": torch.randint(0, 96, (2, 10), generator=GEN)}


def _bert() -> tuple:
    cfg = transformers.BertConfig(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    return (transformers.BertForSequenceClassification(cfg).eval(),
            {"input_ids": torch.randint(0, 96, (2, 10), generator=GEN),
             "attention_mask": torch.ones(2, 10, dtype=torch.long)})


def _vit() -> tuple:
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=64, intermediate_size=80,
                                 num_hidden_layers=2, num_attention_heads=4, num_labels=5)
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(2, 3, 16, 16,
                                                                                           generator=GEN)}


def _logits(model: nn.Module, example: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**example).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gqa_heads_go_as_whole_key_value_groups_with_the_l1_ranking_written_here(attn):
    model, ex = _llama(attn=attn)
    res = prunekit.prune_structured(model, ex, ratio=0.5, kinds=("heads",))
    assert res.info["rel_diff"] <= REL
    for i, (dense, pruned) in enumerate(zip(model.model.layers, res.model.model.layers)):
        a, p = dense.self_attn, pruned.self_attn
        # oracle: a unit is one kv head + its 4 query heads; score = L1 of its q, k, v rows and o columns
        q = a.q_proj.weight.abs().view(2, 4 * 8, 64).sum((1, 2))
        k = a.k_proj.weight.abs().view(2, 8, 64).sum((1, 2))
        v = a.v_proj.weight.abs().view(2, 8, 64).sum((1, 2))
        o = a.o_proj.weight.abs().view(64, 2, 4 * 8).sum((0, 2))
        best = int(torch.argmax(q + k + v + o))
        assert p.k_proj.out_features == p.v_proj.out_features == 8 and p.q_proj.out_features == 32
        assert torch.equal(p.k_proj.weight, a.k_proj.weight[best * 8:(best + 1) * 8])
        assert torch.equal(p.q_proj.weight, a.q_proj.weight[best * 32:(best + 1) * 32])
        assert torch.equal(p.o_proj.weight, a.o_proj.weight[:, best * 32:(best + 1) * 32])
    # an independent reference: the dense model whose removed query heads write nothing (o_proj columns zeroed)
    zeroed = _zero_heads(model, res)
    assert torch.allclose(_logits(zeroed, ex), _logits(res.model, ex), rtol=0, atol=1e-5)
    assert "grouped-query" in res.info["attention_note"]


def _zero_heads(model: nn.Module, res) -> nn.Module:
    import copy

    ref = copy.deepcopy(model)
    for dense, pruned in zip(ref.model.layers, res.model.model.layers):
        kept = {tuple(r.tolist()) for r in pruned.self_attn.q_proj.weight}
        rows = [i for i, r in enumerate(dense.self_attn.q_proj.weight) if tuple(r.tolist()) not in kept]
        with torch.no_grad():
            dense.self_attn.o_proj.weight[:, rows] = 0.0
    return ref


@pytest.mark.parametrize("cls_name", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_llama_family_prunes_heads_mlp_and_hidden_and_reloads_with_from_pretrained(cls_name, tmp_path):
    model, ex = _llama(cls_name)
    res = prunekit.prune_structured(model, ex, ratio=0.5)
    hf = res.info["hf"]
    assert hf["loadable"], hf["reason"]
    assert hf["config"] == {"num_attention_heads": [8, 4], "num_key_value_heads": [2, 1],
                            "intermediate_size": [80, 40], "hidden_size": [64, 32]}
    assert res.info["rel_diff"] <= REL
    assert res.model.model.embed_tokens.weight.shape == (96, 32) and res.model.model.norm.weight.shape == (32,)
    res.model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(again).__name__ == cls_name
    assert torch.allclose(_logits(again, ex), _logits(res.model, ex), rtol=0, atol=1e-5)


@pytest.mark.parametrize("build,auto", [(_bert, "AutoModelForSequenceClassification"),
                                        (_vit, "AutoModelForImageClassification")])
def test_bert_and_vit_keep_hidden_equal_to_heads_times_head_size_and_reload(build, auto, tmp_path):
    model, ex = build()
    res = prunekit.prune_structured(model, ex, ratio=0.3)
    cfg = res.model.config
    assert res.info["hf"]["loadable"], res.info["hf"]["reason"]
    assert cfg.num_attention_heads == 2 and cfg.hidden_size == 2 * 16  # floor(4 * 0.7) heads of 16; hidden follows
    assert res.info["rel_diff"] <= REL
    res.model.save_pretrained(tmp_path)
    again = getattr(transformers, auto).from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(again, ex), _logits(res.model, ex), rtol=0, atol=1e-5)


def test_non_uniform_prune_saves_in_prunekits_format_and_reloads_without_code(tmp_path):
    model, ex = _llama()
    res = prunekit.prune_structured(model, ex, ratio=0.4, global_ranking=True)
    assert not res.info["hf"]["loadable"]  # layers differ: no stock config describes it
    prunekit.save_model(res.model, tmp_path / "m.safetensors")
    meta = json.loads(__import__("safetensors").safe_open(str(tmp_path / "m.safetensors"), "pt").metadata()
                      ["prunekit"])
    assert meta["hf"]["class"] == "LlamaForCausalLM" and meta.get("factory") is None
    again = prunekit.load_model(tmp_path / "m.safetensors").eval()
    assert torch.equal(_logits(again, ex), _logits(res.model, ex))


def test_depth_removes_the_block_of_least_influence_exactly(tmp_path):
    model, ex = _llama()
    # oracle: BI = 1 - mean cos(in, out) of every decoder layer, computed here with hooks
    seen = {}

    def hook(i):
        def f(m, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            seen[i] = 1 - float(F.cosine_similarity(x.flatten(0, 1), y.flatten(0, 1), dim=-1).mean())
        return f

    hs = [blk.register_forward_hook(hook(i), with_kwargs=True) for i, blk in enumerate(model.model.layers)]
    _logits(model, ex)
    for h in hs:
        h.remove()
    drop = min(seen, key=seen.get)
    res = prunekit.prune_structured(model, ex, ratio=0.25, depth=1, kinds=("channels",))
    assert res.info["depth"]["removed"] == [f"model.layers.{drop}"]
    assert len(res.model.model.layers) == 1 and res.model.config.num_hidden_layers == 1
    assert res.model.model.layers[0].self_attn.layer_idx == 0
    assert res.info["rel_diff"] <= REL and res.info["depth"]["rel_diff"] <= REL
    res.model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(again, ex), _logits(res.model, ex), rtol=0, atol=1e-5)


class _MHAViT(nn.Module):
    """A torchvision-style encoder: nn.MultiheadAttention (need_weights=False) + MLP, pre-norm, class token."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim))
        self.ln1, self.ln2, self.ln = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln(x)[:, 0])


def test_multihead_attention_prunes_heads_and_width_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = prunekit.factory.mark(_MHAViT().eval(), "tests.test_transformers_structured:_MHAViT", {})
    x = torch.randn(2, 3, 16, 16, generator=GEN)
    res = prunekit.prune_structured(model, x, ratio=0.5)
    attn = res.model.attn
    assert attn.num_heads == 2 and attn.in_proj_weight.shape == (3 * 16, 16) and res.model.cls.shape == (1, 1, 16)
    assert res.info["rel_diff"] <= REL
    prunekit.save_model(res.model, tmp_path / "m.safetensors")
    again = prunekit.load_model(tmp_path / "m.safetensors", factory="tests.test_transformers_structured:_MHAViT")
    with torch.no_grad():
        assert torch.equal(again.eval()(x), res.model(x))


def test_rotary_head_dims_and_a_ratio_that_empties_attention_are_clear_errors():
    model, ex = _llama()
    with pytest.raises(PrunekitError, match="rotary"):
        prunekit.prune_structured(model, ex, ratio=0.5, head_dims=True)
    with pytest.raises(PrunekitError, match="every head.*largest ratio that keeps one is 0.5"):
        prunekit.prune_structured(model, ex, ratio=0.6)
    with pytest.raises(PrunekitError, match="kinds"):
        prunekit.prune_structured(model, ex, ratio=0.5, kinds=("heads", "blocks"))


class _EinsumAttention(nn.Module):
    """Attention written with einsum on a per-head mask: a form prunekit keeps whole."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj, self.head_dim = nn.Linear(16, 48), nn.Linear(16, 16), 4
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 4, 4).unbind(2)
        w = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
        y = torch.einsum("bhqk,bkhd->bqhd", w, v).reshape(x.shape[0], x.shape[1], 16)
        return self.fc(self.proj(y).mean(1))


def test_an_attention_form_without_rules_is_kept_whole_and_named():
    model = _EinsumAttention().eval()
    res = prunekit.prune_structured(model, torch.randn(2, 5, 16, generator=GEN), ratio=0.5)
    assert res.model.qkv.out_features == 48 and res.model.proj.in_features == 16  # the heads stay
    assert res.info["attention_kept_whole"] == [""]
    assert res.info["rel_diff"] <= REL


def test_cli_prunes_a_local_hugging_face_folder(tmp_path):
    model, _ = _llama()
    model.save_pretrained(tmp_path / "dense")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prunekit", "prune", "--model", str(tmp_path / "dense"), "--method", "structured",
           "--ratio", "0.5", "--out", str(out), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hf"]["loadable"] and summary["after"]["num_attention_heads"] == 4
    assert [r["heads_kept"] for r in summary["attention"]] == [4, 1, 1, 4, 1, 1]
    again = transformers.AutoModelForCausalLM.from_pretrained(out / "hf")
    assert prunekit.count_params(again) == summary["after"]["params"]
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "dense"), "--method", "structured", "--ratio", "0.6", "--out",
                                    str(tmp_path / "o2")], capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "every head" in bad.stderr


def test_activation_criterion_keeps_the_channels_wanda_sp_ranks_highest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    batches = [torch.randn(8, 12, generator=GEN) for _ in range(3)]
    with torch.no_grad():  # oracle: |W2|·‖X‖ with X the ReLU outputs over every calibration row
        x = torch.cat([torch.relu(model[0](b)) for b in batches])
    score = model[2].weight.abs().sum(0) * x.norm(dim=0)
    want = sorted(torch.topk(score, 5).indices.tolist())
    res = prunekit.prune_structured(model, batches[0], ratio=0.5, criterion="activation", data=batches)
    assert res.keep["0"] == want
    assert res.info["rel_diff"] <= REL


def test_taylor_takes_keyword_batches_with_labels():
    model, ex = _llama()
    batches = [{"input_ids": ex["input_ids"], "labels": ex["input_ids"]}]
    res = prunekit.prune_structured(model, ex, ratio=0.5, criterion="taylor", data=batches)
    assert res.info["rel_diff"] <= REL and res.info["hf"]["loadable"]
    with pytest.raises(PrunekitError, match="labels"):
        prunekit.prune_structured(model, ex, ratio=0.5, criterion="taylor", data=[dict(ex)])


def test_swin_prunes_heads_with_their_relative_position_bias_and_reloads(tmp_path):
    cfg = transformers.SwinConfig(image_size=32, patch_size=2, num_channels=3, embed_dim=16, depths=[2, 2],
                                  num_heads=[2, 4], window_size=4, num_labels=5)
    torch.manual_seed(0)
    model = transformers.SwinForImageClassification(cfg).eval()
    ex = {"pixel_values": torch.randn(2, 3, 32, 32, generator=GEN)}
    res = prunekit.prune_structured(model, ex, ratio=0.5)
    assert res.info["rel_diff"] <= REL
    for stage, heads in zip(res.model.swin.encoder.layers, (1, 2)):
        for blk in stage.blocks:  # the shifted block too: its bias is added to a window mask first
            att = blk.attention
            assert att.num_attention_heads == heads
            assert att.relative_position_bias.relative_position_bias_table.shape[1] == heads
    assert not res.info["hf"]["loadable"]  # per-stage head counts: prunekit's format
    prunekit.save_model(res.model, tmp_path / "m.safetensors")
    again = prunekit.load_model(tmp_path / "m.safetensors").eval()
    assert torch.equal(_logits(again, ex), _logits(res.model, ex))


def test_bias_compensation_keeps_the_mean_output_on_the_calibration_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    batches = [torch.randn(16, 12, generator=GEN) for _ in range(3)]
    x = torch.cat(batches)
    res = prunekit.prune_structured(model, batches[0], ratio=0.5, criterion="activation", data=batches,
                                    compensate=True)
    assert res.info["compensated"] == ["2"]
    with torch.no_grad():
        dense_mean, pruned_mean = model(x).mean(0), res.model(x).mean(0)
        plain = prunekit.prune_structured(model, batches[0], ratio=0.5, criterion="activation", data=batches)
        plain_gap = (plain.model(x).mean(0) - dense_mean).abs().max()
    assert torch.allclose(pruned_mean, dense_mean, atol=1e-5)  # E[W_K x_K + b + W_R E[x_R]] = E[W x + b]
    assert plain_gap > 1e-3  # without it the mean moves


class _HeadsAttention(nn.Module):
    """Separate q/k/v viewed as ``(B, T, num_heads, -1)``: the head count is fixed, the head dim follows."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.num_heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, scale=0.25).transpose(1, 2).reshape(b, t, -1)
        return self.fc(self.o(y) + x)


def test_head_dims_keep_every_head_and_remove_the_same_dims_from_each():
    torch.manual_seed(0)
    model = _HeadsAttention().eval()
    res = prunekit.prune_structured(model, torch.randn(2, 6, 32, generator=GEN), ratio=0.5, head_dims=True,
                                    kinds=("heads",))
    row = res.info["attention"][0]
    assert (row["heads"], row["heads_kept"], row["head_dim"], row["head_dim_kept"]) == (4, 4, 8, 4)
    assert res.model.q.out_features == res.model.k.out_features == res.model.o.in_features == 16
    kept = res.plan["modules"]["q"]["out"]  # the same 4 dims in every head
    assert [i % 8 for i in kept] == [i % 8 for i in kept[:4]] * 4 and [i // 8 for i in kept[::4]] == [0, 1, 2, 3]
    assert res.info["rel_diff"] <= REL


def test_llama_hidden_width_is_rounded_to_a_multiple_of_the_heads_its_config_checks(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=96, num_hidden_layers=1,
                                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ex = {"input_ids": torch.randint(0, 96, (1, 8), generator=GEN)}
    res = prunekit.prune_structured(model, ex, ratio=0.3)  # floor(128 * 0.7) = 89 -> 88, 4 heads kept
    assert res.model.config.hidden_size == 88 and res.model.config.num_attention_heads == 4
    assert any("rounded down to 88" in n for n in res.info["notes"])
    assert any("whole units" in n for n in res.info["notes"])  # 2 key/value groups: 0.3 keeps 1 of them
    res.model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(again, ex), _logits(res.model, ex), rtol=0, atol=1e-5)
