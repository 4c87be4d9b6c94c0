"""Gradual (AGP) weight sparsity inside the Hugging Face ``Trainer``, with an exact resume from its checkpoint.

    pip install 'prunekit[transformers]'
    python examples/hf_trainer_prune.py              # tiny random-init Llama, synthetic tokens (under a minute on 2 CPUs)

A 2-layer Llama built from a config (random init, nothing downloaded) learns synthetic token sequences
(arithmetic progressions modulo the vocabulary) with the Trainer's AdamW, linear LR decay and gradient
accumulation over 2 batches. ``SparsityCallback(method="gp", scope="linear", schedule=AGP(...))`` raises the
sparsity of every ``nn.Linear`` weight (attention, MLP, LM head) to 80% over the first 60 of 80 optimizer steps;
the Trainer's logs carry ``sparsity``, and every checkpoint folder holds ``prunekit_sparsifier.pt``. Then a fresh
model resumes from ``checkpoint-40`` (``trainer.train(resume_from_checkpoint=...)``) and ends with the same weights.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from prunekit.integrations.transformers import SparsityCallback
from prunekit.pruning import AGP

VOCAB, LENGTH = 128, 32


class Progressions(torch.utils.data.Dataset):
    """Token sequences ``start, start + d, start + 2d, ...`` (mod VOCAB): learnable, synthetic, no download."""

    def __init__(self, n: int = 256, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        step = torch.randint(1, 8, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=LENGTH,
                                   tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def run(out: Path, ratio: float, steps: int, seed: int = 0, resume: str | None = None):
    model = tiny_llama(seed)
    cb = SparsityCallback(method="gp", scope="linear",
                          schedule=AGP(start_step=0, end_step=steps * 3 // 4, frequency=5, initial=0.0, final=ratio))
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=16, gradient_accumulation_steps=2,
        learning_rate=3e-3, weight_decay=0.01, logging_steps=10, save_strategy="steps", save_steps=steps // 2,
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Progressions(), callbacks=[cb])
    trainer.remove_callback(transformers.PrinterCallback)  # this script prints its own lines
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer, cb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    out = Path(args.out or tempfile.mkdtemp(prefix="prunekit-hf-"))

    t0 = time.perf_counter()
    model, trainer, cb = run(out, args.ratio, args.steps)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny Llama ({n_params:,} params), {args.steps} optimizer steps, AGP to {args.ratio:.0%} of the Linear "
          "weights")
    for row in trainer.state.log_history:
        if "loss" in row:
            print(f"step {row['step']:3d}: loss {row['loss']:.4f}  lr {row['learning_rate']:.2e}  "
                  f"sparsity {row['sparsity']:.4f}")
    st = cb.sparsifier.sparsity()
    print(f"final sparsity {st['sparsity']:.4f}, {st['revived']} revived  ({st['pruned']:,} of {st['total']:,} "
          f"Linear weights; {time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    ckpt = out / f"checkpoint-{args.steps // 2}"
    resumed, _, _ = run(out, args.ratio, args.steps, seed=1, resume=str(ckpt))  # the same output_dir
    diff = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(),
                                                          resumed.state_dict().values()))
    print(f"resumed from {ckpt.name} with a fresh model: max |weight difference| to the uninterrupted run {diff:.1e} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
