"""Removing whole blocks from a container (a plan's ``depth`` entry): the module surgery, nothing else."""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from ...errors import CheckpointError


def drop_blocks(model: nn.Module, container: str, entry: Mapping[str, Any]) -> None:
    """Remove the children ``entry["removed"]`` (indexes among ``entry["full"]``) of the ``ModuleList`` /
    ``Sequential`` at ``container``; renumber the ``layer_idx`` of what follows (Hugging Face attention layers
    index their cache by it) and trim a per-layer ``config.layer_types`` list. Idempotent: a container already at
    the kept length is left alone."""
    try:
        box = model.get_submodule(container)
    except AttributeError:
        raise CheckpointError(f"channel plan names block container {container!r}, which the model does not "
                              "have") from None
    if not isinstance(box, (nn.ModuleList, nn.Sequential)):
        raise CheckpointError(f"channel plan: {container!r} is a {type(box).__name__}, not a list of blocks")
    full, removed = int(entry["full"]), set(entry["removed"])
    kids = list(box.children())
    if len(kids) == full - len(removed):
        return
    if len(kids) != full:
        raise CheckpointError(f"channel plan: {container!r} has {len(kids)} blocks, the plan expects {full} (base) "
                              f"or {full - len(removed)} (pruned)")
    kept = [k for i, k in enumerate(kids) if i not in removed]
    new = nn.ModuleList(kept) if isinstance(box, nn.ModuleList) else nn.Sequential(*kept)
    parent, _, attr = container.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
    old_index = [i for i in range(full) if i not in removed]
    for i, block in enumerate(kept):
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int) and m.layer_idx == old_index[i]:
                m.layer_idx = i
    cfg = getattr(model, "config", None)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and len(types) == full:
        cfg.layer_types = [t for i, t in enumerate(types) if i not in removed]
