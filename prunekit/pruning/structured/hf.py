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

import torch
import torch.nn as nn

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
