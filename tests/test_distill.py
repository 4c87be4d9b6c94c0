"""Ensemble distillation: the loss against a hand computation, frozen teachers, masks kept, the CLI command."""
from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunekit import create_model, load_checkpoint, save_model
from prunekit.cli import build_parser, main
from prunekit.engine import TrainConfig, evaluate
from prunekit.errors import PrunekitError
from prunekit.experiments import DistillationHook, distill, distillation_loss, evaluate_ensemble
from prunekit.pruning.masks import apply_masks


class _Fixed(nn.Module):
    """A 'teacher' that returns the given logits whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.num_classes = logits.shape[1]

    def forward(self, x):
        return self.logits


def _tiny_lenet(seed: int, num_classes: int = 10):
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=num_classes, cfg=[4, 8, 16], in_channels=1)


def _hand_loss(s, teachers, y, T, alpha, mode):
    """KL(p || q)·T² with batch mean, written out with exp/log in float64."""
    s, teachers = s.double(), [t.double() for t in teachers]

    def softmax(z):
        e = (z - z.max(1, keepdim=True).values).exp()
        return e / e.sum(1, keepdim=True)

    log_q = (softmax(s / T)).log()
    ps = [softmax(t / T) for t in teachers]
    kl = lambda p: (p * (p.log() - log_q)).sum() / s.shape[0]  # noqa: E731
    kd = (sum(kl(p) for p in ps) / len(ps) if mode == "per_teacher" else kl(sum(ps) / len(ps))) * T * T
    ce = -(softmax(s).log()[torch.arange(s.shape[0]), y]).mean()
    return alpha * ce + (1 - alpha) * kd


@pytest.mark.parametrize("mode", ["per_teacher", "mean_teacher"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_loss_equals_a_hand_computation_at_T5(mode, alpha):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 4, generator=g) * 3
    t1, t2 = torch.randn(6, 4, generator=g) * 4, torch.randn(6, 4, generator=g) * 2
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = _hand_loss(s, [t1, t2], y, 5.0, alpha, mode)
    hook = DistillationHook([_Fixed(t1), _Fixed(t2)], temperature=5.0, alpha=alpha, mode=mode)
    got = hook.transform_loss(None, F.cross_entropy(s, y), s, torch.zeros(6, 1, 2, 2), y)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distillation_loss(s, [t1, t2], y, 5.0, alpha, mode).double(), expected,
                               rtol=1e-5, atol=1e-6)
    assert float(expected) > 0.1  # a loss that could not be mistaken for zero


def test_the_two_kd_modes_differ():
    g = torch.Generator().manual_seed(0)
    s, t1, t2 = (torch.randn(4, 5, generator=g) * 3 for _ in range(3))
    y = torch.zeros(4, dtype=torch.long)
    a = distillation_loss(s, [t1, t2], y, mode="per_teacher")
    b = distillation_loss(s, [t1, t2], y, mode="mean_teacher")
    assert float(a) > float(b) + 1e-3  # KL is convex in p: KL to the mean <= mean of the KLs


@pytest.mark.parametrize("mode", ["per_teacher", "mean_teacher"])
def test_no_kd_gradient_when_the_student_matches_its_teachers(mode):
    student = _tiny_lenet(0)
    teachers = [copy.deepcopy(student), copy.deepcopy(student)]
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    out = student(x)
    loss = DistillationHook(teachers, alpha=0.0, mode=mode).transform_loss(None, F.cross_entropy(out, y), out, x, y)
    assert abs(float(loss.detach())) < 1e-6
    loss.backward()
    assert max(float(p.grad.abs().max()) for p in student.parameters()) < 1e-6
    student.zero_grad()
    out = student(x)  # the CE half of alpha=0.5 does move the student
    DistillationHook(teachers, alpha=0.5, mode=mode).transform_loss(None, F.cross_entropy(out, y), out, x,
                                                                     y).backward()
    assert max(float(p.grad.abs().max()) for p in student.parameters()) > 1e-4


def test_teachers_stay_frozen_and_unchanged_by_training(digits_small):
    train, test = digits_small
    torch.manual_seed(5)
    bn_teacher = create_model("resnet20", num_classes=10, cfg=[4] * 9, in_channels=1)  # BN: eval mode matters
    teachers = [_tiny_lenet(1), bn_teacher]
    bn_teacher.train()
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    student = _tiny_lenet(2)
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, weight_decay=0.0, max_steps_per_epoch=3, device="cpu")
    res = distill(student, teachers, train, test, cfg, temperature=5.0, alpha=0.0)
    assert len(res.history) == 1 and 0.0 <= res.final["val_top1"] <= 100.0
    for t, b in zip(teachers, before):
        assert not t.training
        assert all(not p.requires_grad for p in t.parameters())
        assert all(torch.equal(b[k], v) for k, v in t.state_dict().items())
    assert any(not torch.equal(s_before[k], v) for k, v in student.state_dict().items())


def test_bad_settings_are_user_errors(digits_small):
    t = [_tiny_lenet(1)]
    for kwargs, needle in (({"temperature": 0.0}, "temperature must be in"), ({"alpha": 1.5}, "alpha must be in"),
                           ({"mode": "bogus"}, "unknown distillation mode 'bogus'")):
        with pytest.raises(PrunekitError, match=needle):
            DistillationHook(t, **kwargs)
    with pytest.raises(PrunekitError, match="at least one teacher"):
        DistillationHook([])
    cfg = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=1, device="cpu")
    with pytest.raises(PrunekitError, match="teacher 1 has 3 classes, the student has 10"):
        distill(_tiny_lenet(0), [_tiny_lenet(1, num_classes=3)], digits_small[0], None, cfg)
    student = _tiny_lenet(0)
    with pytest.raises(PrunekitError, match="teacher 1 is the student model itself"):
        distill(student, [student], digits_small[0], None, cfg)


def _run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_distill_command_defaults_are_the_seed_schedule():
    args = build_parser().parse_args(["distill", "--teachers", "a,b", "--out", "x"])
    assert (args.lr, args.epochs, args.weight_decay, args.gamma, args.milestones) == (0.01, 40, 0.0, 0.2, "0.5,0.75")
    assert (args.temperature, args.alpha, args.kd_mode, args.optimizer) == (5.0, 0.0, "per_teacher", "sgd")


def test_distill_command_keeps_student_masks_and_writes_summary(tmp_path, capsys):
    student = _tiny_lenet(0)
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(p.shape, generator=g) > 0.5 for n, p in student.named_parameters() if p.dim() > 1}
    apply_masks(student, masks)
    save_model(student, tmp_path / "student", masks=masks)
    save_model(_tiny_lenet(1), tmp_path / "t1")
    save_model(_tiny_lenet(2), tmp_path / "t2.safetensors")
    out = tmp_path / "d"
    teachers = f"{tmp_path / 't1'},{tmp_path / 't2.safetensors'}"
    code, stdout, _ = _run(["distill", "--checkpoint", str(tmp_path / "student"), "--teachers", teachers,
                            "--epochs", "2", "--limit", "64", "--batch-size", "32", "--lr", "0.05",
                            "--kd-mode", "mean_teacher", "--alpha", "0.25", "--out", str(out), "--no-progress"],
                           capsys)
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    from prunekit.data import get_dataset, subset

    test = subset(get_dataset("digits", train=False), 64)
    assert s["student_top1_before"] == evaluate(load_checkpoint(tmp_path / "student").model, test)["top1"]
    ens = evaluate_ensemble([load_checkpoint(tmp_path / p).model for p in ("t1", "t2.safetensors")], test)
    assert s["teacher_ensemble_top1"] == ens["top1"] and [t["top1"] for t in s["teachers"]] == ens["members"]
    after = load_checkpoint(out)
    assert s["student_top1_after"] == evaluate(after.model, test)["top1"]
    assert (s["kd_mode"], s["alpha"], s["temperature"], s["masked"]) == ("mean_teacher", 0.25, 5.0, True)
    assert after.masks is not None and set(after.masks) == set(masks)
    params = dict(after.model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(after.masks[n], m)
        assert int(params[n][~m].ne(0).sum()) == 0
    assert any(not torch.equal(params[n], p) for n, p in student.named_parameters())
    assert len(list(csv.DictReader((out / "log.csv").open()))) == 2
    assert "student distilled" in stdout and "E-1-2" in stdout


@pytest.mark.parametrize("teachers,needle", [(",", "--teachers needs at least one checkpoint"),
                                             ("{missing}", "checkpoint not found")])
def test_bad_teacher_list_exits_2_with_one_line(teachers, needle, tmp_path, capsys):
    save_model(_tiny_lenet(0), tmp_path / "s")
    out = tmp_path / "out"
    code, _, err = _run(["distill", "--checkpoint", str(tmp_path / "s"), "--teachers",
                         teachers.format(missing=tmp_path / "missing"), "--epochs", "1", "--limit", "16",
                         "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunekit: error:") and needle in err, err
    assert not out.exists()
