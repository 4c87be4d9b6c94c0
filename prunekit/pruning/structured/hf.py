"""Hugging Face models after a structured prune: which groups a stock config can describe, and that config.

A ``transformers`` model is rebuilt by ``from_pretrained`` from its ``config`` alone, one number per field
(``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``, ``hidden_size``, ``head_dim``,
``num_hidden_layers``). So a prune stays loadable by the stock classes only when every layer is pruned alike and
only what those fields describe is pruned: heads, the MLP width inside each block, the hidden width. Models whose
head size is derived (``hidden_size / num_attention_heads``: BERT, ViT) also need ``hidden = heads · head_dim``.
:func:`hf_config` derives the new fields from a pruned model and checks them by building the stock class from
them (on the meta device) and comparing every parameter shape.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..calibrated.blocks import find_blocks
from .graph import DependencyGraph, Group, candidates
from .heads import attention_table, removed_roots
from .selection import top_units

log = logging.getLogger(__name__)


def is_hf_model(model: nn.Module) -> bool:
    """A ``transformers`` model with a config (``PreTrainedModel``)."""
    cfg = getattr(model, "config", None)
    return type(model).__module__.startswith("transformers.") and hasattr(cfg, "to_dict") and \
        hasattr(cfg, "model_type")


def stock_describable(model: nn.Module) -> bool:
    """The config holds one head count and one hidden width for every layer (Llama, BERT, ViT; not Swin, whose
    stages differ): a uniform prune can be described by it."""
    cfg = model.config
    heads, hidden = getattr(cfg, "num_attention_heads", None), getattr(cfg, "hidden_size", None)
    return isinstance(heads, int) and isinstance(hidden, int)


def block_index(name: str, blocks: Sequence[str]) -> int | None:
    """Index of the block (a path of ``blocks``) that module ``name`` lies in, or None."""
    for i, b in enumerate(blocks):
        if name == b or name.startswith(b + "."):
            return i
    return None


def describable(groups: Sequence[Any], blocks: Sequence[str]) -> list[Any]:
    """The groups a stock config can describe: heads, the hidden width, and channel groups inside one block."""
    out = []
    for g in groups:
        if g.kind in ("heads", "hidden"):
            out.append(g)
            continue
        names = [k[1] for k in g.positions]
        idx = {block_index(n, blocks) for n in names}
        if len(idx) == 1 and None not in idx:
            out.append(g)
    return out


def derived_head_dim(model: nn.Module) -> bool:
    """The config has no ``head_dim``: the head size is ``hidden_size // num_attention_heads``."""
    return getattr(model.config, "head_dim", None) is None


def hf_config(pruned: nn.Module, table: Sequence[Mapping[str, Any]], widths: Mapping[str, Sequence[int]],
              layers: int | None = None) -> tuple[Any, dict[str, list[Any]], str | None]:
    """``(new config, {field: [before, after]}, reason it cannot describe the model or None)``.

    ``table``: rows of :func:`~.heads.attention_table` after the prune; ``widths``: kept widths of the groups by
    kind (``"mlp"``: one per block, ``"hidden"``: one); ``layers``: the number of blocks kept (depth pruning).
    """
    cfg = copy.deepcopy(pruned.config)
    changes: dict[str, list[Any]] = {}

    def put(field: str, values: Sequence[int]) -> str | None:
        if not values:
            return None
        if len(set(values)) != 1:
            return f"{field} differs between layers ({sorted(set(values))}): a stock config holds one value"
        before = getattr(cfg, field, None)
        if before is None and field not in ("head_dim",):
            return f"the config has no field {field!r}"
        if before != values[0]:
            changes[field] = [before, values[0]]
            setattr(cfg, field, values[0])
        return None

    per_module: dict[str, list[Mapping[str, Any]]] = {}
    for row in table:
        per_module.setdefault(row["module"], []).append(row)
    q = [max(rows, key=lambda r: r["heads"]) for rows in per_module.values()]
    kv = [min(rows, key=lambda r: r["heads"]) for rows in per_module.values()]
    problems = [put("num_attention_heads", [r["heads_kept"] for r in q])]
    if getattr(cfg, "num_key_value_heads", None) is not None:
        problems.append(put("num_key_value_heads", [r["heads_kept"] for r in kv]))
    if getattr(cfg, "head_dim", None) is not None:
        problems.append(put("head_dim", [r["head_dim_kept"] for r in q]))
    problems.append(put("intermediate_size", list(widths.get("mlp", ()))))
    problems.append(put("hidden_size", list(widths.get("hidden", ()))))
    if layers is not None:
        before = getattr(cfg, "num_hidden_layers", None)
        if before is not None and before != layers:
            changes["num_hidden_layers"] = [before, layers]
            cfg.num_hidden_layers = layers
    reason = next((p for p in problems if p), None)
    if reason is None and callable(getattr(cfg, "validate", None)):
        try:  # the config class's own checks (LlamaConfig: hidden_size a multiple of num_attention_heads)
            cfg.validate()
        except Exception as exc:  # its check failed: the stock class would refuse this config
            reason = f"{type(cfg).__name__} refuses the new config ({str(exc).splitlines()[0]})"
    if reason is None:
        reason = _shapes_differ(pruned, cfg)
    return cfg, changes, reason


def _shapes_differ(pruned: nn.Module, cfg: Any) -> str | None:
    """Build the stock class from ``cfg`` on the meta device; name the first parameter whose shape differs."""
    try:
        with torch.device("meta"):
            fresh = type(pruned)(cfg)
    except Exception as exc:  # the class refuses the config (a library check): not describable
        return f"{type(pruned).__name__} cannot be built from the new config ({type(exc).__name__}: {exc})"
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in pruned.state_dict().items()}
    for k, shape in have.items():
        if want.get(k) != shape:
            return f"{k} is {shape} in the pruned model, the config builds {want.get(k)}"
    missing = sorted(set(want) - set(have))
    if missing:
        return f"the config builds {missing[0]}, which the pruned model does not have"
    return None


def hidden_follows_heads(graph: DependencyGraph, groups: Sequence[Group], scores: Mapping[str, np.ndarray],
                          removed: dict[str, list[int]], notes: list[str]) -> None:
    """For a config whose head size is ``hidden_size / num_attention_heads`` (BERT, ViT): the hidden width keeps
    ``heads · head_dim`` channels, or, when the hidden width may not be pruned, no head goes."""
    table = attention_table(graph, removed_roots(graph, removed))
    if not table or all(r["heads_kept"] == r["heads"] for r in table):
        return
    q = max(table, key=lambda r: r["heads"])
    want = q["heads_kept"] * q["head_dim"]
    hidden = [g for g in groups if g.kind == "hidden"]
    if len(hidden) == 1 and 1 <= want <= hidden[0].size:
        notes.append(f"hidden width set to {want} = {q['heads_kept']} heads × {q['head_dim']}: the config derives the "
                     "head size from hidden_size / num_attention_heads")
    if len(hidden) != 1 or want < 1 or want > hidden[0].size:
        for g in groups:
            if g.kind == "heads":
                removed[g.name] = []
        notes.append("heads kept: this config derives the head size from hidden_size / num_attention_heads, so "
                     "heads can only go with the hidden width (kinds must include 'hidden')")
        return
    g = hidden[0]
    removed[g.name] = [u for u in range(g.size) if u not in set(top_units(scores[g.name], want))]


def hidden_multiple_of_heads(graph: DependencyGraph, groups: Sequence[Group], scores: Mapping[str, np.ndarray],
                              removed: dict[str, list[int]], info: dict[str, Any]) -> None:
    """Stock configs check ``hidden_size % num_attention_heads == 0`` (Llama does, even with ``head_dim``): the hidden
    width keeps a multiple of the heads kept, rounded down, and the report says so."""
    table = attention_table(graph, removed_roots(graph, removed))
    hidden = [g for g in groups if g.kind == "hidden"]
    if not table or len(hidden) != 1:
        return
    heads = max(r["heads_kept"] for r in table)
    g = hidden[0]
    n = g.size - len(removed.get(g.name, []))
    want = n - n % heads
    if want < 1 or want == n:
        return
    removed[g.name] = [u for u in range(g.size) if u not in set(top_units(scores[g.name], want))]
    info.setdefault("notes", []).append(f"hidden width {n} rounded down to {want}, a multiple of the {heads} heads "
                                        "kept (the config requires it)")


def follow_hidden(graph: DependencyGraph, followers: Sequence[Group], scores: Mapping[str, np.ndarray],
                   removed: dict[str, list[int]]) -> None:
    """Groups whose width the config ties to ``hidden_size`` keep as many channels as the hidden width."""
    hidden = [g for g in graph.groups if g.kind == "hidden"]
    if not followers or len(hidden) != 1:
        return
    want = hidden[0].size - len(removed.get(hidden[0].name, []))
    for g in followers:
        removed[g.name] = [u for u in range(g.size) if u not in set(top_units(scores[g.name], want))]


def update_hf_config(res: Any, graph: DependencyGraph, table: Sequence[Mapping[str, Any]], chain: Any,
               depth_res: Any) -> dict[str, Any]:
    """Set ``res.model.config`` to what the stock class needs to rebuild the pruned model, when one config can."""
    chain = chain or find_blocks(res.model)
    widths: dict[str, list[int]] = {"mlp": [], "hidden": []}
    per_block: dict[int, list[int]] = {}
    for g in graph.groups:
        n = len(res.keep.get(g.name, candidates(graph, g)))
        if g.kind == "hidden":
            widths["hidden"].append(n)
        elif g.kind == "channels":
            idx = {block_index(k[1], chain.names) for k in g.positions}
            if len(idx) == 1 and None not in idx:
                per_block.setdefault(idx.pop(), []).append(n)
    if per_block and all(len(v) == 1 for v in per_block.values()):
        widths["mlp"] = [v[0] for v in per_block.values()]
    layers = len(chain.names) if depth_res is not None else None
    cfg, changes, reason = hf_config(res.model, table, widths, layers)
    if reason is None:
        res.model.config = cfg
    else:
        log.info("the pruned model keeps its prunekit plan: %s", reason)
    return {"loadable": reason is None, "config": changes, "reason": reason}
