"""``prunekit prune --model HF_FOLDER --method structured``: heads, widths and blocks of a Hugging Face model.

The model is loaded offline from a local folder (``config.json`` + safetensors). Example inputs: token ids (the
folder's tokenizer on ``--example-text`` when it has one, else ``--example-len`` seeded random ids) or ``pixel_values``
(``--input-size``, else the config's image size). ``--kinds heads,hidden,channels`` says what may be pruned,
``--depth N`` removes N blocks first, ``--head-dims`` prunes dims inside heads instead of whole heads.

Writes into ``--out``: ``model.safetensors`` (prunekit's format: the dense class and config + the plan + weights;
reloads with ``prunekit.load_model``), ``hf/`` (``save_pretrained``, with the tokenizer files, when the stock config
describes the pruned model: every layer pruned alike), ``plan.json``, ``attention.csv`` (heads per attention before
and after), ``structured_report.md`` and ``summary.json``; prints the report.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import PrunekitError
from ..metrics import count_params
from ..models.hf import load_hf_folder
from ..pruning.structured.pruner import KINDS, prune_structured
from ..utils.io import write_csv, write_json, write_text
from ..utils.table import markdown_table
from .common import out_dir, parse_input_size

log = logging.getLogger(__name__)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "tokenizer.model")


def example_inputs(model: nn.Module, folder: str, args: Any) -> dict[str, torch.Tensor]:
    """Keyword example inputs for ``model``: token ids or pixel values (see the module docstring)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(int(args.seed))
    if getattr(cfg, "vocab_size", None) and not hasattr(cfg, "num_channels"):
        if args.example_text:
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                return {"input_ids": tok(args.example_text, return_tensors="pt")["input_ids"]}
            except (OSError, ValueError) as exc:
                raise PrunekitError(f"--example-text: {folder} has no tokenizer prunekit can load ({exc}); drop "
                                    "--example-text to use random token ids") from None
        n = int(args.example_len)
        n = min(n, int(getattr(cfg, "max_position_embeddings", None) or n))
        return {"input_ids": torch.randint(0, int(cfg.vocab_size), (1, n), generator=gen)}
    size = parse_input_size(args.input_size)
    if size is None:
        side = getattr(cfg, "image_size", None)
        side = side[0] if isinstance(side, (list, tuple)) else side
        if not side:
            raise PrunekitError("give --input-size C,H,W: the config says nothing of the image size")
        size = (int(getattr(cfg, "num_channels", 3)), int(side), int(side))
    return {"pixel_values": torch.randn(1, *size, generator=gen)}


def _widths(model: nn.Module) -> dict[str, Any]:
    cfg = model.config
    return {k: getattr(cfg, k, None) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                                "num_key_value_heads", "head_dim", "num_hidden_layers")}


def run(args: Any) -> int:
    """Prune the Hugging Face model in folder ``args.model``; write the outputs; return 0."""
    if args.checkpoint:
        raise PrunekitError("--checkpoint does not combine with a Hugging Face folder as --model")
    if args.ratio is None and args.target_params is None and args.target_macs is None:
        raise PrunekitError("a Hugging Face model takes --ratio R, --target-params F or --target-macs F")
    if args.criterion == "taylor":
        raise PrunekitError("--criterion taylor needs training batches; for a Hugging Face folder use l1, l2 or random")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the command prints its own report; restored below
    try:
        return _run(args)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _run(args: Any) -> int:
    folder = args.model
    model = load_hf_folder(folder)
    example = example_inputs(model, folder, args)
    kinds = tuple(args.kinds) or KINDS
    before = {"params": count_params(model), **_widths(model)}
    res = prune_structured(model, example, ratio=args.ratio, global_ranking=args.global_ranking,
                           target_macs=args.target_macs, target_params=args.target_params,
                           criterion=args.criterion or "l1", ignore=args.ignore, round_to=args.round_to,
                           kinds=kinds, depth=args.depth, head_dims=args.head_dims, seed=args.seed,
                           strict_empty=args.strict_empty)
    pruned = res.model
    hf = res.info.get("hf", {})
    after = {"params": count_params(pruned), **(_widths(pruned) if hf.get("loadable") else {})}
    out = out_dir(args)
    from ..checkpoint import save_model

    save_model(pruned, out, extra={"method": "structured", "source": str(folder), "kinds": list(kinds)})
    files = ["model.safetensors", "plan.json", "attention.csv", "structured_report.md", "summary.json"]
    write_json(out / "plan.json", res.plan)
    rows = [{"module": r["module"], "heads": r["heads"], "heads_kept": r["heads_kept"], "head_dim": r["head_dim"],
             "head_dim_kept": r["head_dim_kept"]} for r in res.info.get("attention", [])]
    write_csv(out / "attention.csv", rows, ["module", "heads", "heads_kept", "head_dim", "head_dim_kept"])
    if hf.get("loadable"):
        pruned.save_pretrained(out / "hf")
        for name in _TOKENIZER_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                shutil.copy(os.path.join(folder, name), out / "hf" / name)
        files.insert(1, "hf/")
    table = [[k, before.get(k), after.get(k, "-")] for k in before]
    notes = [f"exact: relative difference to the reference {res.info.get('rel_diff', 0.0):.3g}",
             "Hugging Face folder: " + (f"written to {out / 'hf'} (from_pretrained loads it)" if hf.get("loadable")
                                        else f"not written: {hf.get('reason')} (prunekit.load_model reloads "
                                             "model.safetensors)")]
    if res.info.get("depth"):
        notes.append("blocks removed: " + ", ".join(res.info["depth"]["removed"]))
    if res.info.get("attention_note"):
        notes.append(res.info["attention_note"])
    notes += res.info.get("notes", [])
    text = markdown_table(["", "before", "after"], table) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    write_text(out / "structured_report.md", f"# {Path(folder).name}: structured prune\n\n{text}\n")
    write_json(out / "summary.json", {"command": "prune", "method": "structured", "model": str(folder),
                                      "kinds": list(kinds), "before": before, "after": after, "hf": hf,
                                      "attention": rows, "depth": res.info.get("depth"),
                                      "rel_diff": res.info.get("rel_diff"), "files": files})
    print(text)
    print(f"wrote {out / 'model.safetensors'} and reports in {out}")
    return 0
