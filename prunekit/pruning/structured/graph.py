"""The channel-dependency graph of any model, discovered by running its traced graph once.

:func:`build_graph` runs the model once on example inputs (:mod:`.capture`: every torch op of the run, leaf
modules as single ops), applies the channel rules of :mod:`.rules` to every op, and collects

* *sites*: module dimensions sliced by kept channels (``("out", "layer1.0.conv1")``, ``("in", "fc")``,
  ``("norm", "bn1")``, ``("param", "blocks.0.gamma@0")``, ``("select_out", "select")``, custom ones);
* *units*: sets of site positions that must be removed together (union-find over channel labels);
* *groups*: units that touch exactly the same sites (one conv's filters, one residual stream, ...), each with
  its positions per site, a name, a stage (index of its spatial resolution) and aliases.

The graph knows nothing of importance or selection (see :mod:`.importance` and :mod:`.pruner`).
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...metrics._common import input_checks
from . import transformer_rules  # noqa: F401  (attention heads, embeddings, stream norms)
from . import builtin_rules  # noqa: F401  (fills the rule tables)
from . import multidim as M
from . import rules as R
from .capture import (Call, Capture, Inputs, as_inputs, cannot_place, flat_tensors, iter_tensors, rule_for,
                      unrun_modules, user_source)
from .trace import _user_frame_from_lines

log = logging.getLogger(__name__)


class UnionFind:
    """Union-find over integer channel labels; label 0 is FIXED and always its own root."""

    def __init__(self) -> None:
        self.parent: list[int] = [0]

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        if ra == 0 or (rb != 0 and ra < rb):  # FIXED (0) wins; otherwise the older label
            self.parent[rb] = ra
        else:
            self.parent[ra] = rb

    def union_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
        if len(a) != len(b):
            raise RuntimeError(f"channel label arrays of different lengths {len(a)} and {len(b)}")
        for x, y in zip(a.tolist(), b.tolist()):
            if x != y:
                self.union(x, y)

    def roots(self, a: np.ndarray) -> np.ndarray:
        return np.fromiter((self.find(x) for x in a.tolist()), dtype=np.int64, count=len(a))

    def all_roots(self) -> np.ndarray:
        """The root of every label at once (vectorised pointer jumping), for grouping after the unions."""
        p = np.asarray(self.parent, dtype=np.int64)
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


SiteKey = tuple[str, str]


@dataclass
class Site:
    """One sliced dimension: ``kind`` (out / in / norm / param / select_out / custom), the module or parameter
    ``name``, its channel labels (one per position) and extra info (module type, spatial size, param dim, ...)."""

    kind: str
    name: str
    labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    order: int = 0

    @property
    def key(self) -> SiteKey:
        return (self.kind, self.name)

    @property
    def size(self) -> int:
        return int(len(self.labels))


@dataclass
class Group:
    """Channels that go together: ``size`` units, each removable alone, all touching the same ``sites``.

    ``positions[site_key][u]`` lists the positions of unit ``u`` in that site. ``producers``: modules whose outputs
    these channels are (conv/linear ``out`` sites); ``norms``: norm layers over them; ``consumers``: modules that
    read them (``in`` sites); ``select``: the ChannelSelection that produces them, if any. ``simple`` groups have
    one producer conv, at most one norm, and no parameter or custom sites (the groups of Li et al. and slimming).
    """

    name: str
    size: int
    positions: dict[SiteKey, list[list[int]]]
    producers: list[str]
    norms: list[str]
    consumers: list[str]
    params: list[str]
    select: str | None = None
    stage: int = 0
    layer_id: int | None = None
    aliases: tuple[str, ...] = ()
    spatial: tuple[int, ...] = ()
    producer_types: tuple[str, ...] = ()
    norm_types: tuple[str, ...] = ()
    select_bn: str | None = None
    roots: list[int] = field(default_factory=list)
    kind: str = "channels"

    # ``kind``: "heads" (attention heads, or key/value groups with their query heads), "hidden" (the residual stream:
    # it crosses a LayerNorm/RMSNorm over the channels) or "channels" (every other group: MLP widths, conv filters)

    @property
    def conv(self) -> str | None:
        """The single producer (None for several or none)."""
        return self.producers[0] if len(self.producers) == 1 else None

    @property
    def bn(self) -> str | None:
        """The single norm layer (None for several or none); for a selection group, the BN feeding it."""
        if self.select is not None:
            return self.select_bn
        return self.norms[0] if len(self.norms) == 1 else None

    @property
    def out_modules(self) -> tuple[str, ...]:
        return tuple(self.producers) + tuple(self.norms)

    @property
    def in_modules(self) -> tuple[str, ...]:
        return tuple(self.consumers)

    @property
    def simple(self) -> bool:
        return (len(self.producers) == 1 and len(self.norms) <= 1 and not self.params and self.select is None
                and not any(k[0] == "custom" for k in self.positions))

    @property
    def channels(self) -> int:
        """Total positions this group covers in its widest site."""
        return max(sum(len(p) for p in ps) for ps in self.positions.values())


class DependencyGraph:
    """Sites and channel units of one model for one example input (see the module docstring)."""

    def __init__(self, model: nn.Module, ignore: set[str], options: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.ignore = ignore
        self.options = dict(options or {})
        self.uf = UnionFind()
        self.sites: dict[SiteKey, Site] = {}
        self.chs: dict[int, tuple[torch.Tensor, Any]] = {}
        self.modules = dict(model.named_modules())
        self.select_scores: dict[str, tuple[str, list[int]]] = {}
        self.groups: list[Group] = []
        self.example: Inputs = Inputs()
        self.attention: list[dict[str, Any]] = []
        self.kept_whole: list[str] = []
        self.output_sites: list[SiteKey] = []
        self.made_by: dict[int, str] = {}
        self.activation_norms: dict[str, Any] = {}  # filled for criterion "activation" (importance.activation_norms)
        self._path = ""
        self.trainable = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        for name, p in list(model.named_parameters(remove_duplicate=False)) + \
                list(model.named_buffers(remove_duplicate=False)):
            if id(p) not in self.chs:
                self.chs[id(p)] = (p, R.Ch(None, None, name, tuple(range(p.dim()))))

    # -- used by rules --------------------------------------------------------------------------------------------
    def ch_of(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            hit = self.chs.get(id(a))
            return hit[1] if hit is not None and hit[0] is a else R.OPAQUE
        if isinstance(a, (list, tuple)) and not isinstance(a, torch.Size):  # a Size has no channels
            return type(a)(self.ch_of(x) for x in a) if not hasattr(a, "_fields") else tuple(self.ch_of(x) for x in a)
        return None

    def set_ch(self, value: Any, c: Any) -> None:
        """Record the channels ``c`` of ``value`` (a tensor, or nested tuples matching nested ``c``)."""
        if isinstance(value, torch.Tensor):
            self.chs[id(value)] = (value, c if isinstance(c, R.Ch) else R.OPAQUE)
        elif isinstance(value, (list, tuple)):
            parts = c if isinstance(c, (list, tuple)) and len(c) == len(value) else [None] * len(value)
            for v, x in zip(value, parts):
                self.set_ch(v, x if x is not None else _opaque_like(v))
        elif isinstance(value, Mapping):
            for v in value.values():
                self.set_ch(v, _opaque_like(v))

    @property
    def current_module(self) -> str:
        """The module path of the op being placed (for rules' messages and records)."""
        return self._path

    def add_site(self, kind: str, name: str, labels: np.ndarray, node: Any, **info: Any) -> None:
        key = (kind, name)
        if key in self.sites:  # a module called twice (weights shared): both calls slice the same weights
            self.uf.union_arrays(self.sites[key].labels, np.asarray(labels).reshape(-1))
            return
        self.sites[key] = Site(kind, name, np.asarray(labels, dtype=np.int64).reshape(-1).copy(), dict(info),
                               order=len(self.sites))

    # -- building -------------------------------------------------------------------------------------------------
    def _rule(self, call: Call, module: nn.Module | None) -> R.Rule | None:
        if call.op == "call_module":
            if call.target in self.ignore:
                return R.opaque_rule
            return R.module_rule_for(module)
        return rule_for(call.op, call.target)

    def is_leaf(self, m: nn.Module, path: str) -> bool:
        return path in self.ignore or R.module_rule_for(m) is not None

    def apply(self, call: Call, out: Any, module: nn.Module | None, path: str) -> None:
        """Place one op of the run: apply its rule and record its output's channels."""
        self._path = path
        args, kwargs = call.args, call.kwargs
        rule = self._rule(call, module)
        chs_in = [c for c in _flat(self.ch_of(list(args)) + [self.ch_of(v) for v in kwargs.values()])
                  if isinstance(c, R.Ch)]
        has_channels = any(c.cdim is not None for c in chs_in)
        if rule is None:
            if not _has_tensor(args) and not _has_tensor(kwargs):
                self.set_ch(out, _opaque_like(out))  # constants, shapes, factories: no channels
                return
            if not has_channels and call.op != "call_module":
                self.set_ch(out, _opaque_like(out))  # only opaque/param inputs: nothing to couple
                return
            if not _has_tensor(out) and call.op == "call_method":
                R.RuleContext(self, call, args, kwargs, out, module).fix_inputs()
                return
            raise cannot_place(call, path, module, "no channel rule is known for it", user_source())
        if not getattr(rule, "multidim", False):  # channels on several dims meet a rule that knows one
            for t in iter_tensors((args, kwargs)):
                c = self.ch_of(t)
                if M.is_multi(c):
                    flat = np.asarray(c.labels).reshape(-1)
                    self.uf.union_arrays(flat, np.zeros_like(flat))
                    self.chs[id(t)] = (t, R.OPAQUE)
                    if path not in self.kept_whole:  # heads met an op without a rule for them: kept whole
                        self.kept_whole.append(path)
        ctx = R.RuleContext(self, call, args, kwargs, out, module)
        try:
            result = rule(ctx)
        except PrunekitError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise cannot_place(call, path, module, f"its channel rule failed ({type(exc).__name__}: {exc})",
                               user_source()) from exc
        self.set_ch(out, result)
        if call.op == "call_module" and isinstance(out, torch.Tensor):
            self.made_by[id(out)] = call.target

    def producer_of(self, t: Any) -> str | None:
        """The leaf module whose call returned tensor ``t`` (None if an op or nothing made it)."""
        if not isinstance(t, torch.Tensor) or self.chs.get(id(t), (None,))[0] is not t:
            return None
        return self.made_by.get(id(t))

    def propagate(self, example: Inputs) -> Any:
        """Run the model on ``example``, placing every op; fix the channels of everything it returns."""
        cap = Capture(self.model, self.is_leaf, self.apply)
        try:
            out = cap.run(example)
        except PrunekitError:
            raise
        except Exception as exc:  # the model itself failed on the example: a user error, named where it happened
            frames = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
            where = _user_frame_from_lines(frames) or "unknown source"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PrunekitError(f"running {type(self.model).__name__} on the example inputs failed: {first} (in "
                                f"module {cap.path or '<root>'!r}, at {where}); check the example inputs "
                                "(shape, dtype, keyword names)") from exc
        unrun = unrun_modules(self.model, cap, self.ignore)
        if unrun:
            why = f"data-dependent control flow at {cap.decision} took another path" if cap.decision else \
                "a branch the example did not take, or a training-only head"
            names = ", ".join(f"{n!r} ({type(self.modules[n]).__name__})" for n in unrun[:4])
            more = f" and {len(unrun) - 4} more" if len(unrun) > 4 else ""
            raise PrunekitError(f"structured pruning cannot place module {names}{more}: it has parameters but did not "
                                f"run on the example inputs ({why}); give example inputs that run every module, or "
                                f"pass ignore=[{'^' + unrun[0] + '$'!r}] to leave it out (the pruned model is then "
                                "exact only on inputs that take the same path)")
        self._fix_outputs(out)
        return out

    def _fix_outputs(self, out: Any) -> None:
        for t in flat_tensors(out):
            c = self.ch_of(t)
            if isinstance(c, R.Ch) and c.labels is not None:
                labels = np.asarray(c.labels).reshape(-1)
                self.uf.union_arrays(labels, np.zeros_like(labels))

    # -- groups ---------------------------------------------------------------------------------------------------
    def build_groups(self) -> list[Group]:
        """Group the non-FIXED units by the set of sites they touch (vectorised: one sort of every live position
        by (root, site, position), then one pass over the (root, site) runs)."""
        root_of = self.uf.all_roots()
        ordered = sorted(self.sites.values(), key=lambda st: st.order)
        site_keys = [st.key for st in ordered]
        parts = []
        for si, site in enumerate(ordered):
            roots = root_of[site.labels]
            live = np.flatnonzero(roots)
            parts.append((roots[live], np.full(live.size, si, dtype=np.int64), live))
        if parts:
            R = np.concatenate([p[0] for p in parts])
            S = np.concatenate([p[1] for p in parts])
            P = np.concatenate([p[2] for p in parts])
        else:
            R = S = P = np.zeros(0, dtype=np.int64)
        idx = np.lexsort((P, S, R))
        R, S, P = R[idx], S[idx], P[idx]
        brk = np.flatnonzero((R[1:] != R[:-1]) | (S[1:] != S[:-1])) + 1
        pstart = np.concatenate([[0], brk]).astype(np.int64) if R.size else np.zeros(0, dtype=np.int64)
        pend = np.concatenate([brk, [R.size]]).astype(np.int64) if R.size else np.zeros(0, dtype=np.int64)
        pr, ps = R[pstart], S[pstart]
        rb = np.flatnonzero(pr[1:] != pr[:-1]) + 1
        rstart = np.concatenate([[0], rb]) if pr.size else np.zeros(0, dtype=np.int64)
        rend = np.concatenate([rb, [pr.size]]) if pr.size else np.zeros(0, dtype=np.int64)
        p_list, ps_list, pstart_l, pend_l = P.tolist(), ps.tolist(), pstart.tolist(), pend.tolist()
        by_sig: dict[bytes, list[tuple[tuple[int, int], int, int, int]]] = {}
        for a, b in zip(rstart.tolist(), rend.tolist()):
            first = (ps_list[a], p_list[pstart_l[a]])  # the unit's first position in site order
            by_sig.setdefault(ps[a:b].tobytes(), []).append((first, a, b, int(pr[a])))
        conv_ids = {n: i + 1 for i, n in enumerate(n for n, m in self.model.named_modules()
                                                     if isinstance(m, nn.Conv2d))}
        groups = []
        for sig, members in by_sig.items():
            members.sort(key=lambda t: t[0])
            roots = [t[3] for t in members]
            keys = [site_keys[k] for k in np.frombuffer(sig, dtype=np.int64).tolist()]
            pairs = np.array([a for _, a, _, _ in members], dtype=np.int64)[:, None] + np.arange(len(keys))
            first_pos = pstart[pairs]
            if bool(((pend[pairs] - first_pos) == 1).all()):  # one position per unit and site (most groups)
                cols = P[first_pos].T.tolist()
                positions = {k: [[x] for x in col] for k, col in zip(keys, cols)}
            else:
                positions = {k: [] for k in keys}
                for _, a, b, _ in members:
                    for j in range(a, b):
                        positions[site_keys[ps_list[j]]].append(p_list[pstart_l[j]:pend_l[j]])
            producers = [k[1] for k in keys if k[0] == "out"]
            norms = [k[1] for k in keys if k[0] == "norm"]
            consumers = [k[1] for k in keys if k[0] == "in"]
            params = [k[1] for k in keys if k[0] == "param"]
            select = next((k[1] for k in keys if k[0] == "select_out"), None)
            if select is not None:
                name = self.select_scores.get(select, (select,))[0]
            elif producers:
                name = producers[0]
            else:
                name = keys[0][1]
            spatial = tuple(self.sites[("out", producers[0])].info.get("spatial", ())) if producers else ()
            if select is not None:
                spatial = tuple(self.sites[("select_out", select)].info.get("spatial", ()))
            spatial = self._consumed_at(spatial, consumers)
            groups.append(Group(
                name=name, size=len(roots), positions=positions, producers=producers, norms=norms,
                consumers=consumers, params=params, select=select, layer_id=conv_ids.get(producers[0])
                if len(producers) == 1 else None, spatial=spatial,
                select_bn=self.select_scores.get(select, (None,))[0] if select is not None else None,
                producer_types=tuple(self.sites[("out", p)].info.get("module_type", "") for p in producers),
                norm_types=tuple(self.sites[("norm", b)].info.get("module_type", "") for b in norms),
                roots=list(roots)))
        attention_roots = set(np.unique(np.concatenate([root_of[np.asarray(a["labels"]).reshape(-1)]
                                                         for a in self.attention])).tolist()) if self.attention else set()
        for g in groups:
            if attention_roots.intersection(g.roots):
                g.kind = "heads"
            elif any(self.sites[("norm", b)].info.get("stat") for b in g.norms):
                g.kind = "hidden"
        groups.sort(key=lambda g: min(self.sites[k].order for k in g.positions))
        _assign_stages(groups)
        _assign_aliases(groups)
        self.groups = groups
        return groups

    def _consumed_at(self, spatial: tuple[int, ...], consumers: Sequence[str]) -> tuple[int, ...]:
        """The resolution a group's channels are consumed at: a strided conv that reads them directly (no pooling
        in between, e.g. a bottleneck's 3x3) puts them in its output's stage."""
        if not spatial or len(consumers) != 1:
            return spatial
        best = spatial
        for c in consumers:
            info = self.sites[("in", c)].info
            if tuple(info.get("in_spatial", ())) == spatial and info.get("out_spatial"):
                out = tuple(info["out_spatial"])
                if int(np.prod(out)) < int(np.prod(best)):
                    best = out
        return best

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name or name in g.aliases:
                return g
        raise PrunekitError(f"no prunable channel group named {name!r}")


def candidates(graph: DependencyGraph, g: Group) -> list[int]:
    """The channels of ``g`` as the keep lists name them: full-width positions for a selection group, else unit
    indexes ``0..size-1`` (for a single conv: its filter indexes)."""
    if g.select is not None:
        return list(graph.sites[("select_out", g.select)].info["kept"])
    return list(range(g.size))


def _flat(c: Any) -> Iterable[Any]:
    if isinstance(c, (list, tuple)):
        for x in c:
            yield from _flat(x)
    elif isinstance(c, dict):
        for x in c.values():
            yield from _flat(x)
    else:
        yield c


def _has_tensor(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_tensor(x) for x in v)
    if isinstance(v, dict):
        return any(_has_tensor(x) for x in v.values())
    return False


def _opaque_like(out: Any) -> Any:
    if isinstance(out, (list, tuple)):
        return tuple(_opaque_like(x) for x in out)
    return R.OPAQUE if isinstance(out, torch.Tensor) else None


def _assign_stages(groups: list[Group]) -> None:
    """Stage = index of the group's spatial resolution among all conv-produced resolutions (largest first);
    groups without a spatial size (linear layers) or at 1×1 (pooled features: squeeze-excitation) join the
    last stage."""
    sizes = sorted({int(np.prod(g.spatial)) for g in groups if g.spatial and int(np.prod(g.spatial)) > 1},
                   reverse=True)
    idx = {s: i for i, s in enumerate(sizes)}
    last = max(len(sizes) - 1, 0)
    for g in groups:
        g.stage = idx.get(int(np.prod(g.spatial)), last) if g.spatial else last


def _assign_aliases(groups: list[Group]) -> None:
    """Names a user (or a paper's plan) may use for a group: its modules, ``conv<id>``, ``conv<stage>_<k>`` and
    the enclosing block when no other simple group has a producer in it."""
    parents: dict[str, int] = {}
    for g in groups:
        if g.simple and g.conv:
            parent = g.conv.rsplit(".", 1)[0] if "." in g.conv else ""
            parents[parent] = parents.get(parent, 0) + 1
    per_stage: dict[int, int] = {}
    for g in groups:
        al = [g.name] + [p for p in g.producers if p != g.name] + [b for b in g.norms if b != g.name]
        if g.select:
            al.append(g.select)
        if g.simple and g.conv:
            parent = g.conv.rsplit(".", 1)[0] if "." in g.conv else ""
            if parent and parents.get(parent) == 1:
                al.append(parent)
            if g.layer_id is not None:
                al.append(f"conv{g.layer_id}")
            if g.producer_types == ("conv",):
                per_stage[g.stage] = per_stage.get(g.stage, 0) + 1
                al.append(f"conv{g.stage + 1}_{per_stage[g.stage]}")
        g.aliases = tuple(dict.fromkeys(al))


def build_graph(model: nn.Module, example_inputs: Any, *, ignore: Iterable[str] = (),
                options: Mapping[str, Any] | None = None) -> DependencyGraph:
    """Run ``model`` once on ``example_inputs`` and discover its channel groups.

    ``example_inputs``: a tensor, a tuple of positional inputs, a dict of keyword inputs (``input_ids=...``) or
    :class:`~.capture.Inputs`. ``ignore``: module paths kept whole (single ops, never sliced; every channel entering
    or leaving them is FIXED). ``options``: graph-level choices the rules read (``head_dims``: heads lose the same
    dims instead of whole heads). The model runs in eval mode without gradients; its training mode is restored.
    """
    ignore = set(ignore)
    modules = dict(model.named_modules())
    for p in ignore:
        if p not in modules:
            raise PrunekitError(f"ignore: the model has no module {p!r}")
    example = as_inputs(example_inputs)
    graph = DependencyGraph(model, ignore, options)
    graph.example = example
    was = model.training
    model.eval()
    dims = tuple(example[0].shape) if len(example) == 1 and not example.kwargs and \
        isinstance(example[0], torch.Tensor) and example[0].is_floating_point() else None
    try:
        with torch.no_grad(), (input_checks(model, dims) if dims else contextlib.nullcontext()):
            graph.propagate(example)  # a wrong input size is named (first layer's channels, too-small spatial size)
    finally:
        model.train(was)
    graph.chs.clear()  # the run's tensors are not needed any more
    graph.made_by.clear()
    graph.build_groups()
    log.debug("dependency graph: %d sites, %d groups", len(graph.sites), len(graph.groups))
    return graph


def ignore_paths(model: nn.Module, patterns: Sequence[str]) -> set[str]:
    """Module paths that match any of the regular expressions ``patterns`` (``re.search``), outermost only."""
    import re

    out: set[str] = set()
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as exc:
            raise PrunekitError(f"--ignore {p!r} is not a valid regular expression: {exc}") from None
    for name, _ in model.named_modules():
        if name and any(c.search(name) for c in compiled):
            if not any(name.startswith(o + ".") for o in out):
                out.add(name)
    for c, p in zip(compiled, patterns):
        if not any(c.search(n) for n, _ in model.named_modules() if n):
            raise PrunekitError(f"--ignore {p!r} matches no module of the model")
    return out


def group_table(groups: Sequence[Group]) -> list[Mapping[str, Any]]:
    """One row per group (name, units, channels, stage, producers, norms, consumers) for reports and debugging."""
    return [{"group": g.name, "units": g.size, "channels": g.channels, "stage": g.stage + 1,
             "producers": ",".join(g.producers), "norms": ",".join(g.norms), "consumers": ",".join(g.consumers),
             "simple": g.simple} for g in groups]
