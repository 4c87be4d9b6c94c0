"""The README's quickstart: a real pruning result on real data, pruned within 2 points of dense."""
from __future__ import annotations

import json

from prunekit.cli import main


def test_quickstart_prunes_80_percent_and_stays_within_2_points(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| dense " in table and "| pruned " in table
    s = json.loads((tmp_path / "summary.json").read_text())
    dense, pruned = s["dense"], s["pruned"]
    for part in (dense, pruned):
        assert set(part) >= {"top1", "params", "nonzero_params", "flops", "latency_ms"}
        assert part["latency_ms"] > 0
    assert dense["top1"] > 90.0
    assert pruned["top1"] >= dense["top1"] - 2.0
    assert pruned["params"] == dense["params"]  # unstructured: same shapes ...
    assert pruned["nonzero_params"] < 0.3 * dense["nonzero_params"]  # ... but 80% of conv+fc weights are zero
    assert pruned["flops"] < 0.4 * dense["flops"]
    # the finetuned checkpoint carries its masks and its zeros
    from prunekit import load_checkpoint

    ck = load_checkpoint(tmp_path / "pruned")
    params = dict(ck.model.named_parameters())
    assert ck.masks and all(int((params[n][~m] != 0).sum()) == 0 for n, m in ck.masks.items())
