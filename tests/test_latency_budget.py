"""Latency within a time budget: models timed pass by pass in turn, median with spread, noise said as such.

The models here sleep a known time per sample, so the expected passes, skips and verdicts follow from the budget
arithmetic, not from this machine's speed.
"""
from __future__ import annotations

import json
import re
import time

import pytest
import torch
import torch.nn as nn

from prunekit.metrics.latency import LatencyComparison, compare_latency


class _Sleeper(nn.Module):
    """Sleeps ``ms_per_sample`` per sample of the batch and counts its calls by batch size."""

    def __init__(self, ms_per_sample: float) -> None:
        super().__init__()
        self.ms = ms_per_sample
        self.fc = nn.Linear(2, 2)
        self.calls: dict[int, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls[x.shape[0]] = self.calls.get(x.shape[0], 0) + 1
        time.sleep(self.ms * x.shape[0] / 1000.0)
        return self.fc(x)


def test_models_are_timed_in_turn_within_the_budget_and_too_slow_batches_are_skipped():
    a, b = _Sleeper(10.0), _Sleeper(30.0)
    start = time.perf_counter()
    comps = compare_latency({"a": a, "b": b}, (2,), batch_sizes=[1, 50], budget_s=0.5, max_passes=1000)
    elapsed = time.perf_counter() - start
    small, big = comps
    # batch 1: one warm-up pass each, then rounds of (a, b) until 2 x 0.5 s are spent: about 1.0 / 0.04 rounds
    assert small.skipped is None and small.reports["a"].repeats == small.reports["b"].repeats
    assert 10 <= small.reports["a"].repeats <= 25
    assert a.calls[1] == b.calls[1] == small.reports["a"].repeats + 1
    assert small.reports["b"].median_ms == pytest.approx(30.0, abs=15.0)
    assert small.reports["a"].q1_ms <= small.reports["a"].median_ms <= small.reports["a"].q3_ms
    # batch 50: one pass of b would take 50 x 30 ms = 1.5 s > 0.5 s: predicted from batch 1, never run
    assert big.skipped and re.search(r"about 1\.[5-9]\d* s", big.skipped) and "budget" in big.skipped
    assert not big.reports
    assert 50 not in a.calls and 50 not in b.calls
    assert elapsed < 2 * 0.5 + 0.5  # the budget, plus the last round and the warm-up of the first pass
    assert compare_latency({"a": a}, (2,), budget_s=0) == []


def test_a_first_pass_over_the_budget_skips_the_batch_and_the_larger_ones():
    slow = _Sleeper(300.0)
    [one, two] = compare_latency({"slow": slow}, (2,), batch_sizes=[1, 2], budget_s=0.1)
    assert one.skipped and re.search(r"about 0\.3\d* s", one.skipped) and two.skipped  # 0.30x: sleep overshoots
    assert slow.calls == {1: 1}  # the one warm-up pass that showed it, nothing at batch 2


def test_the_speedup_verdict_comes_from_the_paired_passes():
    def verdict(a, b):
        return LatencyComparison(1, 1.0, times={"a": a, "b": b}).speedup("a", "b")

    fast = verdict([10.0, 11.0, 10.5, 10.2, 9.9], [5.0, 5.6, 5.1, 4.9, 5.0])
    assert fast.verdict == "faster" and fast.ratio == pytest.approx(2.0, rel=0.05) and fast.passes == 5
    assert "2.0" in fast.describe("pruned") and "faster" in fast.describe("pruned")
    # the same shapes on a noisy machine: the paired ratios straddle 1, whatever the medians say
    noisy = verdict([1.0, 2.0, 1.0, 3.0, 1.0, 2.5], [2.0, 1.0, 1.5, 1.0, 1.2, 1.0])
    assert noisy.verdict == "within noise" and "within the noise" in noisy.describe()
    assert verdict([3.0, 3.1, 2.9, 3.2], [4.0, 4.2, 3.9, 4.1]).verdict == "slower"
    assert verdict([3.0, 3.0], [1.0, 1.0]).verdict == "too few passes"


def test_prune_prints_median_spread_and_passes_and_skips_with_budget_zero(tmp_path, capsys):
    from prunekit.cli import main

    args = ["prune", "--model", "resnet20", "--method", "l1-filter", "--ratio", "0.5", "--input-size", "3,16,16",
            "--latency-batch-sizes", "1", "--latency-budget", "0.3", "--out", str(tmp_path / "a")]
    assert main(args) == 0
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if ln.startswith("latency batch 1:")]
    assert "IQR" in line and "passes" in line and ("faster" in line or "slower" in line or "noise" in line
                                                    or "too few" in line)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    [entry] = s["latency"]
    assert entry["budget_s"] == 0.3 and entry["before"]["repeats"] == entry["after"]["repeats"] >= 1
    assert s["before"]["latency_ms_b1"] == entry["before"]["median_ms"]
    assert main(args[:-3] + ["0", "--out", str(tmp_path / "b")]) == 0
    assert "latency: not timed (--latency-budget 0)" in capsys.readouterr().out
    assert "latency_ms_b1" not in json.loads((tmp_path / "b" / "summary.json").read_text())["before"]
