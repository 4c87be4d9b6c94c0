"""The channel-dependency graph of any model, discovered by running its traced graph once.

:func:`build_graph` traces the model (:mod:`.trace`), runs the fx graph on an example input with an interpreter
that applies the channel rules of :mod:`.rules` to every node, and collects

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
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ...errors import PrunekitError
from ...metrics._common import input_checks
from . import builtin_rules  # noqa: F401  (fills the rule tables)
from . import rules as R
from .trace import how_to_proceed, node_module, node_op, node_source, trace

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
    """Sites and channel units of one model for one input size (see the module docstring)."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule, ignore: set[str]) -> None:
        self.model = model
        self.gm = gm
        self.ignore = ignore
        self.uf = UnionFind()
        self.sites: dict[SiteKey, Site] = {}
        self.chs: dict[fx.Node, Any] = {}
        self.modules = dict(model.named_modules())
        self.select_scores: dict[str, tuple[str, list[int]]] = {}
        self.groups: list[Group] = []
        self.example: tuple[torch.Tensor, ...] = ()

    # -- used by rules --------------------------------------------------------------------------------------------
    def ch_of(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.chs.get(a, R.OPAQUE)
        if isinstance(a, (list, tuple)):
            return type(a)(self.ch_of(x) for x in a)
        return None

    def add_site(self, kind: str, name: str, labels: np.ndarray, node: fx.Node, **info: Any) -> None:
        key = (kind, name)
        if key in self.sites:  # a module called twice (weights shared): both calls slice the same weights
            self.uf.union_arrays(self.sites[key].labels, labels)
            return
        self.sites[key] = Site(kind, name, np.asarray(labels, dtype=np.int64).copy(), dict(info),
                               order=len(self.sites))

    # -- building -------------------------------------------------------------------------------------------------
    def _rule(self, node: fx.Node) -> R.Rule | None:
        if node.op == "call_module":
            name = str(node.target)
            if name in self.ignore:
                return R.opaque_rule
            return R.module_rule_for(self.modules[name])
        if node.op == "call_function":
            return R.function_rule_for(node.target)
        if node.op == "call_method":
            return R.METHOD_RULES.get(str(node.target))
        return None

    def _cannot_place(self, node: fx.Node, why: str) -> PrunekitError:
        path = node_module(node)
        op = node_op(node, self.modules)
        return PrunekitError(f"structured pruning cannot place op {op} in module {path or '<root>'!r} at "
                             f"{node_source(node)}: {why}; {how_to_proceed(path, node.op, op)}")

    def propagate(self, example: Sequence[torch.Tensor]) -> None:
        graph = self

        class _Interp(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                out = super().run_node(n)
                graph._after(n, out, self)
                return out

        try:
            _Interp(self.gm).run(*example)
        except PrunekitError as exc:  # fx appends "While executing %node ..." to the message: keep one line
            raise PrunekitError(str(exc).split("\n\nWhile executing")[0].strip()) from exc

    def _after(self, n: fx.Node, out: Any, interp: fx.Interpreter) -> None:
        if n.op == "placeholder":
            self.chs[n] = R.OPAQUE
            return
        if n.op == "get_attr":
            if isinstance(out, torch.Tensor):
                self.chs[n] = R.Ch(None, None, str(n.target), tuple(range(out.dim())))
            else:
                self.chs[n] = None
            return
        if n.op == "output":
            self._fix_outputs(self.ch_of(n.args[0]))
            return
        args, kwargs = interp.fetch_args_kwargs_from_env(n)
        module = self.modules.get(str(n.target)) if n.op == "call_module" else None
        has_tensor_in = any(isinstance(c, R.Ch) and c.cdim is not None for c in _flat(self.ch_of(list(n.args))))
        has_tensor_in = has_tensor_in or any(isinstance(c, R.Ch) and c.cdim is not None
                                             for c in _flat(self.ch_of(list(n.kwargs.values()))))
        rule = self._rule(n)
        if rule is None:
            if not _has_tensor(args) and not _has_tensor(kwargs):
                self.chs[n] = R.OPAQUE if _has_tensor(out) else None  # constants, shapes: no channels
                return
            if not has_tensor_in and n.op != "call_module":
                self.chs[n] = _opaque_like(out)  # only opaque/param inputs: nothing to couple
                return
            if not _has_tensor(out) and n.op == "call_method":
                ctx = R.RuleContext(self, n, tuple(args), dict(kwargs), out, module)
                ctx.fix_inputs()
                self.chs[n] = None
                return
            what = "no channel rule is known for it"
            raise self._cannot_place(n, what)
        ctx = R.RuleContext(self, n, tuple(args), dict(kwargs), out, module)
        try:
            self.chs[n] = rule(ctx)
        except PrunekitError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise self._cannot_place(n, f"its channel rule failed ({type(exc).__name__}: {exc})") from exc

    def _fix_outputs(self, c: Any) -> None:
        for x in _flat(c):
            if isinstance(x, R.Ch) and x.labels is not None:
                self.uf.union_arrays(x.labels, np.zeros_like(x.labels))

    # -- groups ---------------------------------------------------------------------------------------------------
    def build_groups(self) -> list[Group]:
        """Group the non-FIXED units by the set of sites they touch."""
        units: dict[int, dict[SiteKey, list[int]]] = {}
        first_seen: dict[int, tuple[int, int]] = {}
        root_of = self.uf.all_roots()
        for site in sorted(self.sites.values(), key=lambda s: s.order):
            roots = root_of[site.labels]
            live = np.nonzero(roots)[0]
            for pos, r in zip(live.tolist(), roots[live].tolist()):
                per = units.get(r)
                if per is None:
                    units[r] = per = {}
                    first_seen[r] = (site.order, pos)
                lst = per.get(site.key)
                if lst is None:
                    per[site.key] = [pos]
                else:
                    lst.append(pos)  # positions arrive in increasing order
        by_sig: dict[frozenset, list[int]] = {}
        for r, per_site in units.items():
            by_sig.setdefault(frozenset(per_site), []).append(r)
        conv_ids = {n: i + 1 for i, n in enumerate(n for n, m in self.model.named_modules()
                                                     if isinstance(m, nn.Conv2d))}
        groups = []
        for sig, roots in by_sig.items():
            roots.sort(key=lambda r: first_seen[r])
            keys = sorted(sig, key=lambda k: self.sites[k].order)
            positions = {k: [units[r][k] for r in roots] for k in keys}
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
                norm_types=tuple(self.sites[("norm", b)].info.get("module_type", "") for b in norms)))
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


def build_graph(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
                ignore: Iterable[str] = ()) -> DependencyGraph:
    """Trace ``model`` and discover its channel groups for ``example_inputs`` (a tensor or a tuple of them).

    ``ignore``: module paths kept whole (not traced into, never sliced; every channel entering or leaving them is
    FIXED). The model is run once in eval mode without gradients; its training mode is restored.
    """
    ignore = set(ignore)
    modules = dict(model.named_modules())
    for p in ignore:
        if p not in modules:
            raise PrunekitError(f"ignore: the model has no module {p!r}")
    gm = trace(model, leaf_paths=ignore, has_rule=lambda m: R.module_rule_for(m) is not None)
    example = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    graph = DependencyGraph(model, gm, ignore)
    graph.example = example
    was = model.training
    model.eval()
    dims = tuple(example[0].shape) if len(example) == 1 and isinstance(example[0], torch.Tensor) else None
    try:
        with torch.no_grad(), (input_checks(model, dims) if dims else contextlib.nullcontext()):
            graph.propagate(example)  # a wrong input size is named (first layer's channels, too-small spatial size)
    finally:
        model.train(was)
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
