"""Benchmark (not a test): prunekit vs the ``torch-pruning`` package on the same ResNet-56-A per-layer plan.

Both tools remove exactly the same filters (the ones prunekit's L1 ranking drops: every block's first conv, per
stage ratio 0.1, layers 16/20/38/54 kept whole); we compare parameter counts, outputs, time to prune and the
resulting CPU latency. ``torch-pruning`` is a benchmark-only dependency, never imported by the library or tests::

    pip install torch-pruning --no-deps      # --no-deps: keep the installed CPU torch
    python benchmarks/bench_torch_pruning.py [--repeats 10] [--rounds 3] [--threads 1]

Timing (second call of each, after a warm-up call, ``--threads`` threads): prunekit = fx tracing + dependency graph +
L1 ranking + plan + deep copy and slicing + the exactness check (also timed without it, ``verify=False``);
torch-pruning = dependency-graph tracing + pruning the given groups in place (its own importance criteria are not
used, so that the plans are identical). The groups are prunekit's ``res.keep``: kept filters per group, the group
named after its producing conv (``layer1.0.conv1``).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from prunekit.metrics import count_flops, count_params, measure_latency
from prunekit.models import create_model
from prunekit.pruning.structured import prune_l1_filter
from prunekit.pruning.structured.verify import randomize_bn
from prunekit.utils.table import markdown_table

SIZE = (3, 32, 32)


def prune_with_torch_pruning(model: torch.nn.Module, keep: dict[str, list[int]]) -> tuple[torch.nn.Module, float,
                                                                                          float]:
    """Prune a copy of ``model`` with torch-pruning, removing every filter not in ``keep[conv name]``.

    Returns ``(pruned, graph_seconds, prune_seconds)``.
    """
    import torch_pruning as tp

    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    dg = tp.DependencyGraph().build_dependency(m, example_inputs=torch.randn(1, *SIZE), verbose=False)
    t1 = time.perf_counter()
    mods = dict(m.named_modules())
    for conv_name, kept in keep.items():
        conv = mods[conv_name]
        removed = [i for i in range(conv.out_channels) if i not in set(kept)]
        if not removed:
            continue
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed)
        if not dg.check_pruning_group(group):
            raise RuntimeError(f"torch-pruning refused the group of {conv_name}")
        group.prune()
    t2 = time.perf_counter()
    return m, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    try:
        import torch_pruning as tp
    except ImportError:
        print("torch-pruning is not installed (pip install torch-pruning --no-deps): comparison not run")
        return
    torch.set_num_threads(args.threads)  # pruning too: on a shared machine extra threads only wait
    torch.manual_seed(0)
    dense = randomize_bn(create_model("resnet56"), seed=0).eval()

    ours = prune_l1_filter(dense, plan="resnet56-A")  # warm-up of both tools (lazy imports, allocator)
    prune_with_torch_pruning(dense, ours.keep)
    t0 = time.perf_counter()
    ours = prune_l1_filter(dense, plan="resnet56-A")
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prune_l1_filter(dense, plan="resnet56-A", verify=False)
    ours_noverify_s = time.perf_counter() - t0
    theirs, graph_s, tp_prune_s = prune_with_torch_pruning(dense, ours.keep)
    ours_m, theirs_m = ours.model.eval(), theirs.eval()

    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        diff = float((ours_m(x) - theirs_m(x)).abs().max())
    shapes_equal = all(a.shape == b.shape for a, b in zip(ours_m.state_dict().values(),
                                                          theirs_m.state_dict().values()))
    lat = {(label, bs): float("inf") for label in ("dense", "prunekit", "torch-pruning") for bs in (1, 64)}
    for _ in range(args.rounds):  # interleaved; best of the rounds' medians
        for label, m in (("dense", dense), ("prunekit", ours_m), ("torch-pruning", theirs_m)):
            for bs in (1, 64):
                ms = measure_latency(m, SIZE, batch_size=bs, warmup=2, repeats=args.repeats,
                                     threads=args.threads).median_ms
                lat[(label, bs)] = min(lat[(label, bs)], ms)
    rows = []
    for label, m, t in (("dense", dense, None), ("prunekit", ours_m, ours_s),
                        ("torch-pruning", theirs_m, graph_s + tp_prune_s)):
        rows.append([label, count_params(m), count_flops(m, (1, *SIZE)).macs, t, lat[(label, 1)], lat[(label, 64)]])
    print(f"resnet56-A, CPU, torch {torch.__version__}, torch-pruning {tp.__version__}, threads {args.threads}, "
          f"best of {args.rounds} medians of {args.repeats} passes")
    print(markdown_table(["tool", "params", "MACs", "prune s", "ms b1", "ms b64"], rows, precision=3))
    print(f"torch-pruning time split: dependency graph {graph_s:.3f} s + pruning {tp_prune_s:.3f} s; prunekit "
          f"without the exactness check: {ours_noverify_s:.3f} s")
    print(f"same shapes: {shapes_equal}; max |prunekit - torch-pruning| output difference: {diff:.2e}")


if __name__ == "__main__":
    main()
