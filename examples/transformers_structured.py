"""Structured pruning of Hugging Face transformers: heads (GQA), MLP and hidden width, depth; stock reload.

Random-init models built from configs (no download): a Llama with 8 query / 2 key-value heads and a BERT. Each is
pruned 50% per group, proved exact against prunekit's reference, saved with ``save_pretrained`` and reloaded with
the stock ``from_pretrained``; the Llama is also pruned non-uniformly (one global ranking), saved in prunekit's
format and reloaded with ``prunekit.load_model``.

Run: python examples/transformers_structured.py   (about 10 s on 2 CPU cores)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import transformers

import prunekit


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def main() -> None:
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=128)).eval()
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
        num_labels=2)).eval()
    ids = {"input_ids": torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(1))}
    out = Path(tempfile.mkdtemp())
    for name, model, auto in (("llama", llama, transformers.AutoModelForCausalLM),
                              ("bert", bert, transformers.AutoModelForSequenceClassification)):
        res = prunekit.prune_structured(model, ids, ratio=0.5, depth=1)
        att = res.info["attention"][0]
        print(f"{name}: params {prunekit.count_params(model):,} -> {prunekit.count_params(res.model):,}; heads "
              f"{att['heads']} -> {att['heads_kept']} per layer; blocks removed {res.info['depth']['removed']}; "
              f"exact (relative difference {res.info['rel_diff']:.1e})")
        print(f"  config: {res.info['hf']['config']}")
        res.model.save_pretrained(out / name)
        again = auto.from_pretrained(out / name).eval()
        print(f"  from_pretrained: max |difference| {float((logits(again, ids) - logits(res.model, ids)).abs().max()):.1e}")
    res = prunekit.prune_structured(llama, ids, ratio=0.5, global_ranking=True)
    print(f"llama, global ranking: heads per layer {[r['heads_kept'] for r in res.info['attention'][::3]]}; "
          f"stock config: {res.info['hf']['loadable']} ({res.info['hf']['reason'].split(':')[0]})")
    prunekit.save_model(res.model, out / "global.safetensors")
    again = prunekit.load_model(out / "global.safetensors")
    print(f"  prunekit.load_model: max |difference| {float((logits(again, ids) - logits(res.model, ids)).abs().max()):.1e}")


if __name__ == "__main__":
    main()
