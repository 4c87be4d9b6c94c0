"""prunekit inside the Hugging Face Trainer (the real package): SparsityCallback on a tiny random-init Llama.

Oracles are independent of the callback: sparsity counted from the weights' exact zeros, "revived" from every
weight that was exactly zero at some step end and is not at the end, resume against an uninterrupted run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from prunekit.errors import PrunekitError  # noqa: E402
from prunekit.integrations.transformers import STATE_FILE, SparsityCallback, prune_before_training  # noqa: E402
from prunekit.pruning import AGP  # noqa: E402

VOCAB, HIDDEN, LAYERS = 64, 32, 2
# every Linear weight: q, o 32x32; k, v 16x32 (2 KV heads); gate, up 64x32; down 32x64; lm_head 64x32
N_LINEAR = LAYERS * (2 * 32 * 32 + 2 * 16 * 32 + 3 * 64 * 32) + VOCAB * HIDDEN   # 20,480: 80% = 16,384 exactly


def _llama(seed: int = 0) -> nn.Module:
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64,
                                   num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=32, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


class Tokens(torch.utils.data.Dataset):
    """Synthetic token sequences (a fixed pattern plus noise, so the loss can fall)."""

    def __init__(self, n: int = 64, length: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        base = torch.arange(length) % 8
        self.ids = (base + torch.randint(0, 2, (n, length), generator=g) * 8) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class ZeroTracker(transformers.TrainerCallback):
    """Linear weights' positions that were exactly 0.0 at some step end (independent of the masks)."""

    def __init__(self):
        self.ever_zero: dict[str, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        for name, p in _linear_weights(model).items():
            z = p.detach() == 0
            self.ever_zero[name] = z if name not in self.ever_zero else (self.ever_zero[name] | z)

    def revived(self, model) -> int:
        params = _linear_weights(model)
        return sum(int((params[n].detach()[z] != 0).sum()) for n, z in self.ever_zero.items())


class AtTrainBegin(transformers.TrainerCallback):
    """What the SparsityCallback holds when training starts (after a checkpoint's state was loaded)."""

    def __init__(self, cb: SparsityCallback):
        self.cb, self.seen = cb, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.seen = (self.cb.sparsifier.step_count, self.cb.sparsifier.target, _zeros(model))


class Kill(transformers.TrainerCallback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("killed")


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _zeros(model) -> int:
    return sum(int((w.detach() == 0).sum()) for w in _linear_weights(model).values())


def _args(out: Path, **kw) -> transformers.TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=8, max_steps=16, learning_rate=3e-3,
                logging_steps=4, save_strategy="steps", save_steps=8, report_to="none", use_cpu=True, seed=0,
                disable_tqdm=True, dataloader_num_workers=0, weight_decay=0.01)
    base.update(kw)
    return transformers.TrainingArguments(**base)


def _train(out: Path, callbacks, seed: int = 0, resume: str | None = None, **kw):
    model = _llama(seed)
    trainer = transformers.Trainer(model=model, args=_args(out, **kw), train_dataset=Tokens(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def test_agp_to_80_exact_no_revived_and_logged(tmp_path):
    cb = SparsityCallback(method="gp", scope="linear", schedule=AGP(0, 12, 2, 0.0, 0.8), squash=True,
                          log_layers=True)
    tracker = ZeroTracker()
    model, trainer = _train(tmp_path, [cb, tracker], gradient_accumulation_steps=2)
    assert trainer.state.global_step == 16 and cb.sparsifier.step_count == 16
    assert N_LINEAR == 20480 and _zeros(model) == 16384       # exactly 80% of every Linear weight together
    assert tracker.revived(model) == 0
    logged = [h for h in trainer.state.log_history if "sparsity" in h]
    assert logged and logged[-1]["sparsity"] == pytest.approx(0.8)
    assert "sparsity/model.layers.0.self_attn.q_proj.weight" in logged[-1]
    assert sum(int((~m).sum()) for m in cb.masks.values()) == 16384 and not cb.sparsifier.attached   # squashed
    assert (tmp_path / "checkpoint-8" / STATE_FILE).is_file()


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    def cb():
        return SparsityCallback(method="gp", scope="linear", schedule=AGP(0, 12, 2, 0.0, 0.8))

    full, _ = _train(tmp_path / "a", [cb()])
    with pytest.raises(RuntimeError, match="killed"):
        _train(tmp_path / "b", [cb(), Kill(8)])                        # dies right after writing checkpoint-8
    res_cb = cb()
    start = AtTrainBegin(res_cb)
    resumed, trainer = _train(tmp_path / "b", [res_cb, start], seed=5, resume=str(tmp_path / "b" / "checkpoint-8"))
    assert res_cb.resumed_from is not None and res_cb.sparsifier.step_count == 16
    # the schedule's state came back from the checkpoint: step 8, AGP target 0.8 - 0.8 (1 - 8/12)^3
    target = 0.8 - 0.8 * (1 - 8 / 12) ** 3
    assert start.seen[0] == 8 and start.seen[1] == pytest.approx(target)
    assert start.seen[2] == int(target * N_LINEAR + 0.5)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n                                   # bit-identical on CPU


def test_calibrated_wanda_once_then_held(tmp_path):
    calib = [{"input_ids": Tokens(n=8, seed=1).ids}]
    cb, tracker = SparsityCallback(method="wanda", ratio=0.5, calibration_data=calib), ZeroTracker()
    model, _ = _train(tmp_path, [cb, tracker], max_steps=4, save_strategy="no")
    pruned = [n for n in _linear_weights(model) if n.startswith("model.layers.")]
    assert len(pruned) == 14
    for name in pruned:                                                # Wanda: half of every output row
        w = model.get_parameter(name).detach()
        assert bool(((w == 0).sum(1) == w.shape[1] // 2).all()), name
    assert tracker.revived(model) == 0


def test_setup_errors(tmp_path):
    with pytest.raises(PrunekitError, match="only 16 optimizer steps"):
        _train(tmp_path / "a", [SparsityCallback(method="gp", scope="linear", schedule=AGP(0, 40, 4, 0.0, 0.8))])
    assert not (tmp_path / "a" / "checkpoint-8").exists()              # failed before the first step
    with pytest.raises(PrunekitError, match="calibration_data"):
        SparsityCallback(method="sparsegpt", ratio=0.5)
    # resumed from a checkpoint written without the callback: one clear error before training goes on
    _train(tmp_path / "b", [], max_steps=8)
    with pytest.raises(PrunekitError, match="does not exist"):
        _train(tmp_path / "b", [SparsityCallback(method="gp", scope="linear", ratio=0.5)],
               resume=str(tmp_path / "b" / "checkpoint-8"), max_steps=16)


def test_prune_before_training_hook():
    """The documented hook calls prune_structured: on a plain torch model it returns the smaller, exact model."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(8, 16)
    small = prune_before_training(net, x, ratio=0.5)
    assert small[0].out_features == 16 and small[2].in_features == 16
    keep = sorted(torch.topk(net[0].weight.detach().abs().sum(1), 16).indices.tolist())
    ref = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        ref[0].weight.copy_(net[0].weight[keep])
        ref[0].bias.copy_(net[0].bias[keep])
        ref[2].weight.copy_(net[2].weight[:, keep])
        ref[2].bias.copy_(net[2].bias)
        assert torch.allclose(small(x), ref(x), atol=1e-6)


def test_llama_pruned_before_training_trains_and_reloads_with_from_pretrained(tmp_path):
    model = _llama()
    ids = Tokens()[0]["input_ids"][None]
    small = prune_before_training(model, {"input_ids": ids}, ratio=0.5)
    assert small.config.num_attention_heads == 2 and small.config.num_key_value_heads == 1
    assert small.prunekit_result.info["hf"]["loadable"]
    trainer = transformers.Trainer(model=small, args=_args(tmp_path / "run", max_steps=4, save_strategy="no"),
                                   train_dataset=Tokens())
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    small.eval()
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, small(ids).logits, atol=1e-5)
