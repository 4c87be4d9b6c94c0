"""Recipe-only stage commands (not ``prunekit`` subcommands).

``init`` builds a zoo model with a given ``cfg`` (e.g. a narrow VGG for a quick experiment) and saves it, freshly
initialised, so that a later ``train`` stage can start from it (``from: <init stage>``)::

    - {name: arch, command: init, args: {model: vgg11, cfg: [16, M, 32, M, 64, 64, M, 128, 128, M, 128, 128]}}
    - {name: baseline, command: train, from: arch, args: {epochs: 10}}
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import PrunekitError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise PrunekitError(f"{self.prog}: {message}")


def _init_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="init", description="build a zoo model (optionally with a cfg) and save it untrained")
    p.add_argument("--model", required=True, help="zoo model name")
    p.add_argument("--cfg", default=None, help="comma-separated cfg, 'M' for max-pool (VGG)")
    p.add_argument("--dataset", default="digits", help="dataset whose classes/channels the model is built for")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--out", required=True, help="output folder")
    return p


def parse_cfg(text: str | None) -> list[Any] | None:
    """``"16,M,32"`` -> ``[16, 'M', 32]``; a bad entry is a PrunekitError naming it."""
    if text is None or str(text).strip() == "":
        return None
    out: list[Any] = []
    for tok in str(text).split(","):
        tok = tok.strip()
        if tok == "M":
            out.append("M")
            continue
        try:
            out.append(int(tok))
        except ValueError:
            raise PrunekitError(f"--cfg entries must be integers or 'M', got {tok!r} in {text!r}") from None
    return out


def run_init(argv: Sequence[str]) -> int:
    """``init --model NAME [--cfg ...] [--dataset D] [--seed S] --out DIR``: save a fresh model + summary.json."""
    import torch

    from ..checkpoint import save_model
    from ..data import dataset_info
    from ..metrics import summarize
    from ..models import create_model
    from ..utils.io import write_json

    args = _init_parser().parse_args(list(argv))
    info = dataset_info(args.dataset)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=info["num_classes"], cfg=parse_cfg(args.cfg),
                         in_channels=info["in_channels"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out, extra={"dataset": args.dataset, "init_seed": args.seed})
    metrics = summarize(model, (1, info["in_channels"], *info["image_size"]))
    write_json(out / "summary.json", {"command": "init", "model": args.model, "cfg": model.prunekit_cfg,
                                      "dataset": args.dataset, "seed": args.seed, **metrics})
    print(f"init: {args.model} cfg={model.prunekit_cfg} params {metrics['params']:,}; wrote {out}")
    return 0


# name -> (parser factory, runner)
INTERNAL: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[Sequence[str]], int]]] = {
    "init": (_init_parser, run_init),
}
