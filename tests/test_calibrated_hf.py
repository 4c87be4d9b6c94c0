"""Calibrated pruning of a tiny random-init Hugging Face Llama through the public API (needs transformers)."""
from __future__ import annotations

import copy

import pytest
import torch

import prunekit

transformers = pytest.importorskip("transformers")


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _data():
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(0, 96, (2, 12), generator=g) for _ in range(2)]
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :3] = 0  # left padding: the captured attention mask must reach every layer
    return [ids[0], {"input_ids": ids[1], "attention_mask": mask}]


@pytest.mark.parametrize("method,kw", [("wanda", {}), ("sparsegpt", {"n": 2, "m": 4})])
def test_tiny_llama_prunes_block_by_block_like_the_whole_model(method, kw):
    model, data = _llama(), _data()
    ref = copy.deepcopy(model)
    res = prunekit.prune_unstructured(model, method, 0.5, data=data, **kw)
    rep = res.report
    assert rep.blocks == ["model.layers.0", "model.layers.1"]
    names = sorted(res.masks)
    assert len(names) == 14 and all(n.startswith("model.layers.") for n in names)  # 7 Linear per layer
    assert "lm_head.weight" not in res.masks and rep.sparsity == 0.5
    for lay in rep.layers:  # every output row at the same sparsity (Wanda) / exact per layer (SparseGPT)
        assert lay.pruned == lay.weights // 2
    assert all(0.0 < e < 1.0 for e in rep.layer_errors.values())
    whole = prunekit.prune_unstructured(ref, method, 0.5, data=data, sequential=False, **kw)
    for n in names:
        assert torch.equal(res.masks[n], whole.masks[n]), n
        assert torch.allclose(model.get_parameter(n), ref.get_parameter(n), atol=1e-6), n
    out = model(data[0]).logits
    assert out.shape == (2, 12, 96) and bool(torch.isfinite(out).all())


def test_llama_perplexity_reads_hf_outputs():
    from prunekit.metrics.perplexity import perplexity

    model = _llama()
    tokens = torch.randint(0, 96, (100,), generator=torch.Generator().manual_seed(2))
    res = perplexity(model, tokens, seq_len=16, batch_size=4)
    assert res.windows == 6 and res.tokens == 6 * 15
    assert 40 < res.perplexity < 200  # a random-init model is near uniform over 96 tokens


def test_a_tokenizer_on_disk_is_used_and_a_folder_without_one_means_bytes(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from prunekit.data.text import encode, load_tokenizer

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "def": 1, "f": 2, "return": 3},
                                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    assert encode(b"def f return x", load_tokenizer(tmp_path / "tok")).tolist() == [1, 2, 3, 0]
    (tmp_path / "empty").mkdir()
    assert load_tokenizer(tmp_path / "empty") is None and encode(b"ab").tolist() == [97, 98]
