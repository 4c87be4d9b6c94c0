"""Finetune / Scratch-E / Scratch-B: budgets from sparse-aware FLOPs, density-scaled re-init, structured ckpts."""
from __future__ import annotations

import math

import pytest
import torch

from prunekit.checkpoint import load_checkpoint, save_model
from prunekit.engine.trainer import TrainConfig
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.pruning.unstructured import prune_unstructured
from prunekit.retrain import finetune, flops_pair, scratch_budget, scratch_model, train_scratch

SIZE = (1, 28, 28)


def _pruned_lenet(tmp_path, ratio: float, method: str = "gp"):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    res = prune_unstructured(model, method, ratio)
    path = save_model(model, tmp_path / f"{method}{ratio}.safetensors", masks=res.masks)
    return load_checkpoint(path), res


def test_scratch_budget_rules():
    assert scratch_budget(160, 300, 100, budget="E").epochs == 160
    b = scratch_budget(160, 300, 100, budget="B")
    assert (b.epochs, b.schedule, b.milestones, b.ratio) == (480, "multistep", (0.5, 0.75), 3.0)
    assert scratch_budget(160, 1000, 700, budget="B").epochs == int(160 * 1000 / 700) == 228
    im = scratch_budget(90, 300, 100, budget="B", imagenet_style=True)
    assert (im.epochs, im.step_size, im.capped, im.schedule) == (180, 60, True, "step")
    im2 = scratch_budget(90, 150, 100, budget="B", imagenet_style=True)
    assert (im2.epochs, im2.step_size, im2.capped) == (135, 45, False)
    assert scratch_budget(90, 150, 100, budget="E", imagenet_style=True).step_size == 30
    with pytest.raises(PrunekitError, match="budget"):
        scratch_budget(10, 1, 1, budget="C")


def test_scratch_b_budget_grows_with_sparsity_and_counts_only_nonzero_weights(tmp_path):
    epochs = []
    for ratio in (0.3, 0.6, 0.9):
        ckpt, res = _pruned_lenet(tmp_path, ratio)
        model, masks = scratch_model(ckpt)
        dense, pruned, conv, _, _ = flops_pair(ckpt, model, SIZE)
        assert conv == "rethinking"
        # independent count: rethinking convention removes 2 FLOPs per pruned weight per output position
        out_hw = {"conv1.weight": 24 * 24, "conv2.weight": 8 * 8, "fc1.weight": 1, "fc2.weight": 1}
        removed = sum(2 * int((~m).sum()) * out_hw[k] for k, m in masks.items())
        assert dense - pruned == removed > 0
        plan = scratch_budget(40, dense, pruned, budget="B")
        assert plan.epochs == int(40 * dense / pruned)
        epochs.append(plan.epochs)
    assert epochs[0] > 40 and epochs[0] < epochs[1] < epochs[2]


def test_density_scaled_he_init_of_masked_convs_only(tmp_path):
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=10)
    res = prune_unstructured(model, "global", 0.75)
    ckpt = load_checkpoint(save_model(model, tmp_path, masks=res.masks))
    fresh, masks = scratch_model(ckpt, seed=3)
    torch.manual_seed(3)
    ref = create_model("vgg11", num_classes=10)
    params, ref_params = dict(fresh.named_parameters()), dict(ref.named_parameters())
    name = "features.24.weight" if "features.24.weight" in masks else sorted(masks)[-1]
    w, m = params[name].detach(), masks[name]
    conv = dict(fresh.named_modules())[name.rsplit(".", 1)[0]]
    n = int(m.sum()) / conv.in_channels
    assert float(w[m].std()) == pytest.approx(math.sqrt(2.0 / n), rel=0.03)
    for k, mk in masks.items():
        assert torch.all(params[k].detach()[~mk].view(torch.int32) == 0)
        assert not torch.equal(params[k], ref_params[k])                # re-initialised
    for k, p in params.items():                                          # Linear and BN keep the default init
        if k not in masks:
            assert torch.equal(p, ref_params[k]), k


def test_structured_checkpoint_rebuilds_cfg_and_measures_both_flops(tmp_path):
    small = create_model("resnet20", num_classes=10, cfg=[8] * 9)
    ckpt = load_checkpoint(save_model(small, tmp_path / "a.safetensors"))
    model, masks = scratch_model(ckpt)
    assert masks is None and model.prunekit_cfg == [8] * 9
    dense, pruned, conv, source, _ = flops_pair(ckpt, model, (3, 32, 32))
    from prunekit.metrics import count_flops

    assert conv == "rethinking"
    assert dense == count_flops(create_model("resnet20"), (1, 3, 32, 32), convention="rethinking").flops
    assert pruned == count_flops(model, (1, 3, 32, 32), sparse=True, convention="rethinking").flops < dense
    assert "unpruned resnet20" in source
    # numbers `prune` stores in the checkpoint (MACs convention, another input size) are not used: one rule
    extra = {"dense_flops": 123_456_789, "flops_convention": "macs (flops = 2*macs)", "flops_input_size": [3, 16, 16]}
    ckpt2 = load_checkpoint(save_model(small, tmp_path / "b.safetensors", extra=extra))
    assert flops_pair(ckpt2, model, (3, 32, 32)) == (dense, pruned, conv, source, (3, 32, 32))


def _cli(argv) -> int:
    from prunekit.cli import main

    return main([str(a) for a in argv])


@pytest.mark.parametrize("kind", ["slimming", "masked"])
def test_cli_and_library_give_the_same_scratch_b_epochs(tmp_path, kind, capsys):
    import json

    from prunekit.metrics import count_flops
    from prunekit.retrain import plan_scratch

    torch.manual_seed(0)
    if kind == "slimming":
        # what `prune --method slimming` saves for a VGG: the model rebuilt from a slimmed cfg, plus the dense
        # FLOPs in the MACs convention that the CLI used to take the ratio from (and must not any more)
        cfg = [24, "M", 64, "M", 128, 100, "M", 180, 256, "M", 200, 96]
        small = create_model("vgg11", num_classes=10, in_channels=1, cfg=cfg)
        dense_macs = count_flops(create_model("vgg11", num_classes=10, in_channels=1), (1, 1, 8, 8)).flops
        save_model(small, tmp_path / "p", extra={"dense_flops": dense_macs, "flops_input_size": [1, 8, 8],
                                                 "flops_convention": "macs (flops = 2*macs)"})
    else:
        model = create_model("vgg11", num_classes=10, in_channels=1)
        save_model(model, tmp_path / "p", masks=prune_unstructured(model, "gp", 0.6).masks)
    data = ["--dataset", "digits", "--limit", "32"]
    ckpt = load_checkpoint(tmp_path / "p")
    assert bool(ckpt.masks) == (kind == "masked")
    size = (1, 8, 8)  # digits
    # expected, derived independently: Rethinking FLOPs of the dense vgg11 and of the pruned model (sparse-aware)
    dense = count_flops(create_model("vgg11", num_classes=10, in_channels=1), (1, *size),
                        convention="rethinking").flops
    pruned = count_flops(ckpt.model, (1, *size), sparse=True, convention="rethinking").flops
    assert pruned < dense
    expected = int(160 * dense / pruned)
    if kind == "slimming":  # the old CLI rule (stored MACs-convention FLOPs) gives another budget
        assert int(160 * dense_macs / count_flops(ckpt.model, (1, *size), sparse=True).flops) != expected

    model, _ = scratch_model(ckpt)
    lib, _ = plan_scratch(ckpt, model, TrainConfig(epochs=160), input_size=size)
    assert (lib.flops_dense, lib.flops_pruned, lib.epochs, lib.convention) == (dense, pruned, expected, "rethinking")

    assert _cli(["scratch", "--checkpoint", tmp_path / "p", *data, "--epochs", "160", "--plan-only",
                 "--out", tmp_path / "plan"]) == 0
    cli = json.loads((tmp_path / "plan" / "summary.json").read_text())["budget"]
    assert (cli["flops_dense"], cli["flops_pruned"], cli["epochs"]) == (dense, pruned, expected)
    # the training path of the CLI plans the same way (E = 1 here to keep it short)
    assert _cli(["scratch", "--checkpoint", tmp_path / "p", *data, "--epochs", "1", "--batch-size", "32",
                 "--no-progress", "--out", tmp_path / "run"]) == 0
    ran = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ran["budget"]["epochs"] == int(1 * dense / pruned) > 1
    assert load_checkpoint(tmp_path / "run").meta["extra"]["scratch_budget"]["epochs"] == ran["budget"]["epochs"]
    capsys.readouterr()


def test_train_scratch_b_runs_its_budget_and_keeps_masks(tmp_path, digits_small):
    train, test = digits_small
    ckpt, res = _pruned_lenet(tmp_path, 0.75)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, max_steps_per_epoch=1, device="cpu")
    result, plan, model = train_scratch(ckpt, train, test, cfg, budget="B", input_size=(1, 8, 8),
                                        out_dir=tmp_path / "run")
    assert plan.epochs == int(1 * plan.flops_dense / plan.flops_pruned) >= 2
    assert len(result.history) == plan.epochs
    for k, m in res.masks.items():
        assert torch.all(dict(model.named_parameters())[k].detach()[~m] == 0)
    saved = load_checkpoint(tmp_path / "run")
    assert saved.meta["extra"]["regime"] == "scratch-B" and saved.meta["extra"]["scratch_budget"]["epochs"] == \
        plan.epochs


def test_finetune_keeps_masks(tmp_path, digits_small):
    train, test = digits_small
    ckpt, res = _pruned_lenet(tmp_path, 0.8)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, max_steps_per_epoch=2, device="cpu", schedule="constant")
    before = ckpt.model.fc1.weight.detach().clone()
    out = finetune(ckpt.model, ckpt.masks, train, test, cfg, out_dir=tmp_path / "ft")
    assert out.final["val_top1"] is not None
    w = ckpt.model.fc1.weight.detach()
    assert torch.all(w[~res.masks["fc1.weight"]] == 0) and not torch.equal(w, before)
    assert load_checkpoint(tmp_path / "ft").masks is not None


def test_scratch_model_is_seeded_without_touching_the_callers_rng(tmp_path):
    ckpt, _ = _pruned_lenet(tmp_path, 0.5)
    torch.manual_seed(99)
    before = torch.get_rng_state()
    a, masks = scratch_model(ckpt, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = scratch_model(ckpt, seed=7)
    c, _ = scratch_model(ckpt, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k in masks)
    # the unmasked tensors are exactly the zoo's init drawn right after torch.manual_seed(seed)
    torch.manual_seed(7)
    ref = create_model("lenet5", num_classes=10, in_channels=1).state_dict()
    unmasked = [k for k in sa if k not in masks]
    assert unmasked and all(torch.equal(sa[k], ref[k]) for k in unmasked)
