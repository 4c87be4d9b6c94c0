"""Recipe-only stage command (not a ``prunekit`` subcommand).

``random-filter`` is the control of L1-filter pruning (seed 002, claim (e)): the same per-stage ratios, skipped
blocks and number of rounds, hence exactly the same widths, but the kept filters of each pruned conv are drawn
uniformly at random (seeded) instead of by largest L1 norm. Without finetune in between, K rounds equal one shot to
the K-round widths.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from ..cli import UserErrorParser
from ..errors import PrunekitError


def _random_filter_parser() -> argparse.ArgumentParser:
    p = UserErrorParser(prog="random-filter",
                        description="structured pruning with random filter selection (control)")
    p.add_argument("--checkpoint", required=True, help="the model to prune")
    p.add_argument("--ratios", required=True, help="per-stage ratios 'r1,r2,r3' (or one for all), as l1-filter")
    p.add_argument("--skip", default=None, help="blocks/layers kept whole, as l1-filter")
    p.add_argument("--rounds", type=int, default=1, help="rounds, each pruning the ratio of the remaining filters")
    p.add_argument("--eval", action="store_true", help="evaluate the pruned model on the test split")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    p.add_argument("--out", required=True, help="output folder")
    return p


def random_filter_round(model: Any, ratios: Sequence[float], skip: Sequence[str], gen: Any) -> Any:
    """One round: every prunable conv keeps ``keep_count(size, ratio)`` filters drawn at random."""
    import torch

    from ..pruning.structured.l1_filter import keep_count, l1_groups, layer_ratios
    from ..pruning.structured.pruner import finish, guard_empty

    graph, groups = l1_groups(model)
    per_layer = layer_ratios(groups, stage_ratios=list(ratios), skip=list(skip))
    notes: list[str] = []
    keep = {}
    for g in groups:
        if g.name in per_layer:
            kept = sorted(torch.randperm(g.size, generator=gen)[:keep_count(g.size, per_layer[g.name])].tolist())
            keep[g.name] = guard_empty(g, kept, 0, strict=False, what="random filter pruning", notes=notes)
    return finish(graph, groups, keep, "random-filter", notes, {"ratios": per_layer})


def run_random_filter(argv: Sequence[str]) -> int:
    """``random-filter --checkpoint C --ratios R [--skip S] [--rounds K] [--eval] --out DIR``."""
    import torch

    from ..checkpoint import load_checkpoint, save_model
    from ..cli.common import parse_floats
    from ..data import dataset_info, get_dataset, subset
    from ..metrics import summarize
    from ..utils.io import write_json

    args = _random_filter_parser().parse_args(list(argv))
    if args.rounds < 1:
        raise PrunekitError(f"--rounds must be a positive integer, got {args.rounds}")
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.masks:
        raise PrunekitError(f"{args.checkpoint} carries weight masks; random-filter prunes dense models")
    model = ckpt.model.eval()
    ratios = parse_floats(args.ratios, "--ratios")
    skip = [t.strip() for t in (args.skip or "").split(",") if t.strip()]
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.rounds):
        model = random_filter_round(model, ratios, skip, gen).model
    top1 = top5 = None
    if args.eval:
        from ..engine.evaluate import evaluate

        test = get_dataset(args.dataset, root=args.data_dir, train=False)
        acc = evaluate(model, subset(test, args.limit) if args.limit else test, args.batch_size, "cpu")
        top1, top5 = acc["top1"], acc["top5"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out, extra={"dataset": args.dataset, "source_checkpoint": args.checkpoint,
                                  "method": "random-filter", "seed": args.seed})
    info = dataset_info(args.dataset)
    metrics = summarize(model, (1, info["in_channels"], *info["image_size"]))
    write_json(out / "summary.json", {"command": "random-filter", "model": model.prunekit_name,
                                      "dataset": args.dataset, "checkpoint_in": args.checkpoint, "top1": top1,
                                      "top5": top5, "cfg": model.prunekit_cfg, "ratios": ratios, "skip": skip,
                                      "rounds": args.rounds, **metrics})
    print(f"random-filter: {model.prunekit_name} cfg={model.prunekit_cfg} params {metrics['params']:,} "
          f"top-1 {top1}; wrote {out}")
    return 0


# name -> (parser factory, runner)
INTERNAL: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[Sequence[str]], int]]] = {
    "random-filter": (_random_filter_parser, run_random_filter),
}
