"""Attention heads after a prune: how many each attention keeps, and the module attributes that must follow.

The graph records every place a projection's channels were viewed as heads (:mod:`.multidim`). Given the units a
prune removes, each such view keeps some heads (and, with ``head_dims``, some dims per head). Modules whose forward
reads a head count (timm's ``self.num_heads`` in ``reshape(B, N, 3, self.num_heads, self.head_dim)``, BERT's
``all_head_size``) get the new values through the plan's ``attrs`` entry.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .multidim import HEAD_COUNT_ATTRS, HEAD_DIM_ATTRS

KV_COUNT_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head", "num_kv")
WIDTH_ATTRS = ("all_head_size", "inner_dim", "split_size", "attn_dim")


def removed_roots(graph: Any, removed: Mapping[str, Sequence[int]]) -> set[int]:
    """Union-find roots of every unit ``removed`` takes (group name -> unit indexes)."""
    by_name = {g.name: g for g in graph.groups}
    out: set[int] = set()
    for name, units in removed.items():
        roots = by_name[name].roots
        out.update(roots[u] for u in units)
    return out


def attention_table(graph: Any, gone: set[int]) -> list[dict[str, Any]]:
    """One row per head view: module, heads and head dim before and after removing the units with roots ``gone``."""
    root_of = graph.uf.all_roots()
    rows = []
    for rec in graph.attention:
        lab = np.asarray(rec["labels"])
        h, d = rec["heads"], rec["head_dim"]
        roots = root_of[lab.reshape(-1)].reshape(-1, h, d)[0]
        alive = ~np.isin(roots, list(gone)) if gone else np.ones_like(roots, dtype=bool)
        rows.append({"module": rec["module"], "heads": h, "head_dim": d,
                     "heads_kept": int(alive.any(axis=1).sum()), "head_dim_kept": int(alive.any(axis=0).sum())})
    return rows


def attention_attrs(graph: Any, table: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """``{module: {attr: [before, after]}}`` for the head attributes of the modules that view heads."""
    per_module: dict[str, list[Mapping[str, Any]]] = {}
    for row in table:
        per_module.setdefault(row["module"], []).append(row)
    out: dict[str, dict[str, list[int]]] = {}
    for name, rows in per_module.items():
        m = graph.modules.get(name)
        if m is None:
            continue
        q = max(rows, key=lambda r: r["heads"])
        kv = min(rows, key=lambda r: r["heads"])
        changes: dict[str, list[int]] = {}

        def follow(attrs: Sequence[str], before: int, after: int, changes: dict = changes, m: Any = m) -> None:
            for a in attrs:
                v = getattr(m, a, None)
                if isinstance(v, int) and not isinstance(v, bool) and v == before and before != after:
                    changes[a] = [before, after]

        follow(HEAD_COUNT_ATTRS, q["heads"], q["heads_kept"])
        follow(KV_COUNT_ATTRS, kv["heads"], kv["heads_kept"])
        follow(HEAD_DIM_ATTRS, q["head_dim"], q["head_dim_kept"])
        follow(WIDTH_ATTRS, q["heads"] * q["head_dim"], q["heads_kept"] * q["head_dim_kept"])
        if changes:
            out[name] = changes
    return out
