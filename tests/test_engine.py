"""Training engine: schedules, exact resume, reproducibility, masks under every optimizer, what is logged.

DDP tests: tests/test_ddp.py; SyncBatchNorm: tests/test_syncbn.py; GPU: tests/test_cuda_smoke.py."""
from __future__ import annotations

import math

import pytest
import torch

from prunekit.engine import Hook, evaluate
from prunekit.engine.optim import lr_factor, resolve_milestones
from prunekit.engine.trainer import TrainConfig, fit
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.pruning.masks import apply_masks


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, lr=0.05, seed=3, device="cpu", schedule="multistep")
    base.update(kw)
    return TrainConfig(**base)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_multistep_milestones_as_fractions_and_epochs():
    assert resolve_milestones((0.5, 0.75), 160) == [80, 120]
    assert resolve_milestones((20, 30), 40) == [20, 30]
    f = [lr_factor("multistep", e, 0, 10, 160) for e in (0, 79, 80, 119, 120)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 160, 178])
def test_fractional_milestones_truncate_like_the_seeds(epochs):
    """The seeds write ``[int(E*0.5), int(E*0.75)]`` and decay with ``if epoch in milestones``: truncation (178 ->
    [89, 133], not round's [89, 134]); milestones that coincide (E = 2: both 1) decay once."""
    seed = [int(epochs * 0.5), int(epochs * 0.75)]
    assert resolve_milestones((0.5, 0.75), epochs) == sorted(set(seed))
    lr = 1.0
    for epoch in range(epochs):  # the seeds' loop, epoch by epoch
        if epoch in seed:
            lr *= 0.1
        assert lr_factor("multistep", epoch, 0, 10, epochs) == pytest.approx(lr), epoch


def test_milestone_edge_cases():
    assert resolve_milestones((0.5, 0.75), 178) == [89, 133]
    assert resolve_milestones((0.5, 0.75), 3) == [1, 2]
    assert resolve_milestones((0.5, 0.75), 2) == [1]  # int(1.0) == int(1.5): one decay, not two
    assert resolve_milestones((0.5, 0.75), 1) == [0]  # decays from the first epoch, as the seeds do
    assert resolve_milestones((20, 20, 30), 40) == [20, 30]
    assert lr_factor("multistep", 1, 0, 10, 2) == pytest.approx(0.1)
    with pytest.raises(PrunekitError, match="non-negative"):
        resolve_milestones((-1, 5), 10)


def test_cosine_and_warmup_schedules():
    assert lr_factor("cosine", 0, 0, 10, 10) == pytest.approx(1.0)
    assert lr_factor("cosine", 5, 0, 10, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 5, 3, 10, 10, per_step=True) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.53)))
    assert lr_factor("constant", 0, 0, 10, 10, warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor("constant", 0, 9, 10, 10, warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor("linear", 4, 0, 10, 8) == pytest.approx(0.5)


def test_bad_config_is_a_user_error():
    with pytest.raises(PrunekitError, match="epochs"):
        _cfg(epochs=0).validate()
    with pytest.raises(PrunekitError, match="optimizer"):
        _cfg(optimizer="lion").validate()


def test_training_is_bit_reproducible_on_cpu(digits_small):
    train, test = digits_small
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        m = create_model("resnet20", num_classes=10, in_channels=1)
        fit(m, train, None, _cfg(epochs=1, max_steps_per_epoch=4))
        states.append(_state(m))
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


class _Killed(Exception):
    pass


class _KillAfter(Hook):
    """Stops a run right after ``n`` epochs were saved (the next epoch's end raises before its save)."""

    def __init__(self, n: int):
        self.n = n

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.n:
            raise _Killed


def _interrupted(model, train, val, cfg, out_dir, after=1, **kw):
    with pytest.raises(_Killed):
        fit(model, train, val, cfg, out_dir=out_dir, hooks=[_KillAfter(after)], **kw)


def test_resume_equals_uninterrupted_training(tmp_path, digits_small):
    train, test = digits_small
    cfg = _cfg(epochs=3, milestones=(1, 2), max_steps_per_epoch=3)
    torch.manual_seed(0)
    full = create_model("resnet20", num_classes=10, in_channels=1)
    fit(full, train, test, cfg, out_dir=tmp_path / "full")

    torch.manual_seed(0)
    _interrupted(create_model("resnet20", num_classes=10, in_channels=1), train, test, cfg, tmp_path / "part")
    torch.manual_seed(0)  # a new process builds the same initial model ...
    resumed = create_model("resnet20", num_classes=10, in_channels=1)
    torch.manual_seed(123)  # ... but its global RNG is elsewhere: resume must restore the run's stream
    res = fit(resumed, train, test, cfg, out_dir=tmp_path / "part", resume=True)
    a, b = _state(full), _state(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    log = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert len(log) == 4 and log[0].startswith("epoch,")


def test_resume_is_exact_even_if_killed_between_the_model_and_state_writes(tmp_path, digits_small):
    from prunekit import save_model

    train, _ = digits_small
    cfg = _cfg(epochs=2, milestones=(1,), max_steps_per_epoch=3)
    torch.manual_seed(0)
    full = create_model("resnet20", num_classes=10, in_channels=1)
    fit(full, train, None, cfg, out_dir=tmp_path / "full")
    torch.manual_seed(0)
    _interrupted(create_model("resnet20", num_classes=10, in_channels=1), train, None, cfg, tmp_path / "part")
    # the next epoch's model file landed but its train_state did not: resume must not use those weights
    save_model(create_model("resnet20", num_classes=10, in_channels=1), tmp_path / "part")
    torch.manual_seed(0)
    resumed = create_model("resnet20", num_classes=10, in_channels=1)
    fit(resumed, train, None, cfg, out_dir=tmp_path / "part", resume=True)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_refuses_a_run_of_another_model(tmp_path, digits_small):
    train, _ = digits_small
    fit(create_model("resnet20", num_classes=10, in_channels=1), train, None, _cfg(epochs=1, max_steps_per_epoch=1),
        out_dir=tmp_path)
    with pytest.raises(PrunekitError, match="resume"):
        fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, _cfg(epochs=2, max_steps_per_epoch=1),
            out_dir=tmp_path, resume=True)


def _random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters() if p.dim() > 1}


@pytest.mark.parametrize("optimizer,amp", [("sgd", False), ("adam", False), ("adamw", False), ("sgd", True)])
def test_masked_weights_stay_exactly_zero(optimizer, amp, digits_small, tmp_path):
    train, _ = digits_small
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    masks = _random_masks(model)
    cfg = _cfg(epochs=2, optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.1, weight_decay=5e-4, amp=amp,
               max_steps_per_epoch=3)
    fit(model, train, None, cfg, masks=masks, out_dir=tmp_path)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert int((params[n][~m] != 0).sum()) == 0, n
        assert int((params[n][m] != 0).sum()) > 0.9 * int(m.sum()), n  # kept weights still train
    # resumed optimizer state (momentum / Adam moments) cannot revive pruned weights either
    fit(model, train, None, _cfg(**{**cfg.to_dict(), "epochs": 4}), masks=masks, out_dir=tmp_path, resume=True,
        resume_anyway=True)
    for n, m in masks.items():
        assert int((dict(model.named_parameters())[n][~m] != 0).sum()) == 0, n


def test_checkpoint_of_a_masked_run_carries_its_masks(tmp_path, digits_small):
    from prunekit import load_checkpoint

    train, _ = digits_small
    model = create_model("resnet20", num_classes=10, in_channels=1)
    masks = _random_masks(model)
    apply_masks(model, masks)
    fit(model, train, None, _cfg(epochs=1, max_steps_per_epoch=2), masks=masks, out_dir=tmp_path)
    ck = load_checkpoint(tmp_path)
    assert set(ck.masks) == set(masks)
    assert all(torch.equal(ck.masks[k], masks[k]) for k in masks)


# -- what the loop logs: read from the device once per log interval, values as before -----------------------------

class _Seen(Hook):
    """Records every step's loss and top-1 hits, computed independently of the trainer (on the host)."""

    def __init__(self):
        self.rows = []

    def transform_loss(self, trainer, loss, outputs, inputs, targets):
        hits = int((outputs.detach().float().argmax(dim=1) == targets).sum())
        self.rows.append((float(loss.detach()), hits, targets.numel()))
        return loss


@pytest.mark.parametrize("log_interval", [1, 2, 50])
def test_logged_loss_and_accuracy_equal_an_independent_computation(log_interval, tmp_path, digits_small):
    import csv

    train, test = digits_small
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    seen = _Seen()
    res = fit(model, train, test, _cfg(epochs=2, max_steps_per_epoch=5, log_interval=log_interval), hooks=[seen],
              out_dir=tmp_path)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    for epoch in range(2):
        steps = seen.rows[5 * epoch:5 * (epoch + 1)]
        loss_sum = 0.0
        for loss, _, n in steps:  # Python floats, in step order: the computation the loop did before
            loss_sum += loss * n
        n = sum(r[2] for r in steps)
        want_loss, want_top1 = loss_sum / n, 100.0 * sum(r[1] for r in steps) / n
        assert res.history[epoch]["train_loss"] == want_loss  # bit-identical, not approximately
        assert res.history[epoch]["train_top1"] == want_top1
        assert float(rows[epoch]["train_loss"]) == pytest.approx(want_loss, rel=1e-12)
        assert float(rows[epoch]["train_top1"]) == pytest.approx(want_top1, rel=1e-12)
        val = evaluate(model, test) if epoch == 1 else None
        if val is not None:
            assert res.history[1]["val_top1"] == val["top1"] and res.history[1]["val_loss"] == val["loss"]


def test_non_finite_loss_stops_at_the_next_check_naming_its_step(tmp_path, digits_small):
    train, _ = digits_small

    class NaNAt(Hook):
        def transform_loss(self, trainer, loss, outputs, inputs, targets):
            return loss * float("nan") if trainer.step == 2 else loss

    model = create_model("lenet5", num_classes=10, in_channels=1)
    with pytest.raises(PrunekitError, match=r"diverged at epoch 1, step 3: non-finite loss"):
        fit(model, train, None, _cfg(epochs=1, max_steps_per_epoch=4, log_interval=2), hooks=[NaNAt()],
            out_dir=tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    with pytest.raises(PrunekitError, match="log interval"):
        _cfg(log_interval=0).validate()


def test_progress_bar_raises_no_requires_grad_warning(digits_small, capsys):
    import warnings

    train, _ = digits_small
    model = create_model("lenet5", num_classes=10, in_channels=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, train, None, _cfg(epochs=1, max_steps_per_epoch=4, progress=True, log_interval=2))
    assert not [w for w in caught if "requires_grad" in str(w.message)], [str(w.message) for w in caught]


# -- resume refuses a changed configuration; the caller's RNG is left alone; logging, not printing -------------

def test_resume_refuses_a_changed_configuration_listing_the_fields(tmp_path, digits_small):
    from prunekit.data import subset

    train, _ = digits_small
    cfg = _cfg(epochs=2, milestones=(1,), max_steps_per_epoch=2)

    def model(seed=0):
        torch.manual_seed(seed)
        return create_model("lenet5", num_classes=10, in_channels=1)

    _interrupted(model(), train, None, cfg, tmp_path)
    changed = _cfg(epochs=3, lr=0.2, seed=4, milestones=(1,), max_steps_per_epoch=2)
    with pytest.raises(PrunekitError, match=r"epochs: 2 -> 3; lr: 0\.05 -> 0\.2; seed: 3 -> 4.*resume anyway"):
        fit(model(), train, None, changed, out_dir=tmp_path, resume=True)
    with pytest.raises(PrunekitError, match="initial_weights"):  # another input checkpoint / init
        fit(model(seed=1), train, None, cfg, out_dir=tmp_path, resume=True)
    with pytest.raises(PrunekitError, match=r"train_data\.size: 256 -> 200"):  # another --limit
        fit(model(), subset(train, 200), None, cfg, out_dir=tmp_path, resume=True)
    # fields that do not change the result are not checked
    fit(model(), train, None, _cfg(epochs=2, milestones=(1,), max_steps_per_epoch=2, eval_batch_size=7,
                                   log_interval=1), out_dir=tmp_path / "x")
    res = fit(model(), train, None, _cfg(**{**cfg.to_dict(), "lr": 0.07}), out_dir=tmp_path, resume=True,
              resume_anyway=True)
    assert res.resumed_with_changes == {"lr": [0.05, 0.07]}
    assert [r["epoch"] for r in res.history] == [1, 2]
    from prunekit.checkpoint import load_train_state

    assert load_train_state(tmp_path / "train_state.pt")["resumed_with_changes"] == {"lr": [0.05, 0.07]}


def test_an_unchanged_resume_reports_no_changes(tmp_path, digits_small):
    train, _ = digits_small
    cfg = _cfg(epochs=2, max_steps_per_epoch=2)
    torch.manual_seed(0)
    _interrupted(create_model("lenet5", num_classes=10, in_channels=1), train, None, cfg, tmp_path)
    torch.manual_seed(0)
    res = fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, cfg, out_dir=tmp_path, resume=True)
    assert res.resumed_with_changes is None and len(res.history) == 2


def _dropout_net():
    from prunekit.factory import mark

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(32, 10))
    return mark(net, "test_engine:_dropout_net", {})


def test_fit_leaves_the_callers_global_rng_state_as_it_was(tmp_path, digits_small):
    train, test = digits_small
    torch.manual_seed(0)
    init = _dropout_net().state_dict()
    results = []
    for caller_seed in (11, 12):  # dropout draws from the global RNG: seeded by config.seed, not by the caller
        net = _dropout_net()
        net.load_state_dict(init)
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        expected_next = torch.rand(4)
        torch.set_rng_state(before)
        fit(net, train, test, _cfg(epochs=1, max_steps_per_epoch=3), out_dir=tmp_path / str(caller_seed))
        assert torch.equal(torch.get_rng_state(), before)
        assert torch.equal(torch.rand(4), expected_next)
        results.append(net.state_dict())
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k
    net = _dropout_net()
    net.load_state_dict(init)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    fit(net, train, None, _cfg(epochs=2, max_steps_per_epoch=3), out_dir=tmp_path / "11", resume=True,
        resume_anyway=True)
    assert torch.equal(torch.get_rng_state(), before)  # a resume restores the run's stream only inside the run


def test_epoch_line_is_an_info_log_not_a_print(digits_small, caplog, capsys):
    import logging

    train, _ = digits_small
    with caplog.at_level(logging.INFO, logger="prunekit.engine.trainer"):
        fit(create_model("lenet5", num_classes=10, in_channels=1), train, None, _cfg(epochs=1, max_steps_per_epoch=2))
    lines = [r.getMessage() for r in caplog.records if r.name == "prunekit.engine.trainer"]
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1: loss ")
    captured = capsys.readouterr()
    assert "epoch 1" not in captured.err and "epoch 1" not in captured.out


def test_training_with_every_feature_emits_no_warning(tmp_path, digits_small):
    import warnings

    train, test = digits_small
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    masks = _random_masks(model, density=0.5)
    apply_masks(model, masks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, train, test, _cfg(epochs=2, max_steps_per_epoch=3, progress=True, log_interval=1, amp=True),
            masks=masks, out_dir=tmp_path)
        fit(model, train, test, _cfg(epochs=2, max_steps_per_epoch=3, progress=True, log_interval=1, amp=True),
            masks=masks, out_dir=tmp_path, resume=True, resume_anyway=True)


# -- one evaluation loop; its warnings name the caller's line, not torch/utils/_contextlib.py ------------------

def test_evaluate_outputs_counts_each_output_like_a_hand_loop(digits_small):
    from prunekit.engine.evaluate import evaluate_outputs
    from prunekit.data.loader import BatchLoader

    _, test = digits_small
    torch.manual_seed(0)
    a, b = create_model("lenet5", num_classes=10, in_channels=1), create_model("lenet5", num_classes=10, in_channels=1)
    res = evaluate_outputs([a, b], lambda x: [a(x), b(x), a(x) + b(x)], test, 50, "cpu")
    hits = torch.zeros(3, 2)
    with torch.no_grad():  # independent oracle: argmax / sorted top-5 membership on the host
        for x, y in BatchLoader(test, batch_size=128, shuffle=False, seed=0, device=torch.device("cpu"), train=False):
            for j, out in enumerate([a(x), b(x), a(x) + b(x)]):
                hits[j, 0] += int((out.argmax(1) == y).sum())
                top5 = out.argsort(1, descending=True)[:, :5]
                hits[j, 1] += sum(int(t in row) for t, row in zip(y.tolist(), top5.tolist()))
    for j in range(3):
        assert res[j]["n"] == len(test)
        assert res[j]["top1"] == pytest.approx(100 * float(hits[j, 0]) / len(test))
        assert res[j]["top5"] == pytest.approx(100 * float(hits[j, 1]) / len(test))
    assert res[0] == pytest.approx(evaluate(a, test, batch_size=50, device="cpu"))
    assert a.training and b.training  # modes restored


def test_evaluating_a_nan_model_warns_at_the_callers_line(digits_small):
    import warnings

    _, test = digits_small
    model = create_model("lenet5", num_classes=10, in_channels=1)
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(model, test, device="cpu")  # evaluate_outputs is wrapped by @torch.no_grad()
    [w] = [w for w in caught if "not finite" in str(w.message)]
    assert w.filename == __file__, w.filename  # not torch/utils/_contextlib.py nor prunekit/engine/evaluate.py
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(create_model("lenet5", num_classes=10, in_channels=1), test, device="cpu")  # finite: silent
