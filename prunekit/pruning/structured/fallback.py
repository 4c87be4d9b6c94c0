"""A pruned model that cannot run is never returned: where it fails, and which groups to keep whole instead.

Some forwards read a width as a constant (timm's ``reshape(B, N, C)`` with ``C`` the input width, a head count
written into a view): removing channels there makes the pruned model fail. :func:`first_failure` runs the pruned
model and names the innermost module of the model that raised; :func:`groups_to_keep_whole` picks the groups to
keep whole for the next try (the heads of every attention of that class, else every group with a site there).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from .capture import call_model
from .graph import DependencyGraph, Group


def first_failure(model: nn.Module, example: Any) -> tuple[str, str] | None:
    """``(module path, error)`` where the pruned model fails on ``example``, or None if it runs."""
    paths = {id(m): n for n, m in model.named_modules()}
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, example)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        path = ""
        tb = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in paths:
                path = paths[id(owner)]
            tb = tb.tb_next
        return path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    finally:
        model.train(was)
    return None


def groups_to_keep_whole(graph: DependencyGraph, groups: Sequence[Group], path: str) -> list[str]:
    """The pruned groups to keep whole when ``path`` fails: its attention heads if it views heads, else every
    group with a site in it."""
    inside = lambda n: n == path or n.startswith(path + ".") if path else True  # noqa: E731
    heads = {a["module"] for a in graph.attention if inside(a["module"])}
    kind = type(graph.modules.get(path)) if path in graph.modules else None
    if heads and kind is not None:  # every attention of that class fails alike (timm's blocks): keep them all
        heads |= {a["module"] for a in graph.attention if type(graph.modules.get(a["module"])) is kind}
    if heads:
        labels = set()
        root_of = graph.uf.all_roots()
        for a in graph.attention:
            if a["module"] in heads:
                labels.update(root_of[np.asarray(a["labels"]).reshape(-1)].tolist())
        hit = [g.name for g in groups if labels.intersection(g.roots)]
        if hit:
            return hit
    return [g.name for g in groups if any(inside(k[1]) for k in g.positions)]
