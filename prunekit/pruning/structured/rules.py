"""Channel rules: how each op moves, couples or consumes channels (the dependency graph's vocabulary).

Every tensor flowing through the traced graph carries a :class:`Ch`: which of its dimensions is the channel
dimension (``cdim``) and, for each position along it, a *channel label* (an element of the graph's union-find).
Positions that carry the same label (after unions) must be removed together. Label 0 is ``FIXED``: a channel that
can never be removed (the model's input and output, channels mixed by an op whose result would change).
A ``Ch`` with ``cdim=None`` is *opaque*: nothing about its channels is known, and any channel that meets it in an
op that aligns channels becomes FIXED.

A rule is ``rule(ctx: RuleContext) -> Ch | tuple | None``; it reads the input ``Ch``s and real values, records
slicing *sites* (``ctx.site(kind, name, labels)``: a module dimension that is sliced by the kept positions) and
unions labels (``ctx.union``). The built-in rules for torch.nn layers, torch functions and Tensor methods are in
:mod:`.builtin_rules`; users add their own with :func:`register_module_rule` / :func:`register_function_rule` /
:func:`register_method_rule`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

FIXED = 0


@dataclass
class Ch:
    """Channel information of one tensor: ``cdim`` (None = opaque) and one label per position along it.

    ``param``: for a raw parameter/buffer read (``get_attr``), its qualified name and ``pmap`` (for every dim of this
    tensor, the parameter dim it shows, or -1 for an inserted size-1 dim).

    ``inner``: further channel dims (attention heads: ``cdim`` = the heads dim, ``inner = (head_dim_dim,)``); then
    ``labels`` has one axis per channel dim, in the order ``(cdim, *inner)`` (see :mod:`.multidim`).
    """

    cdim: int | None = None
    labels: np.ndarray | None = None
    param: str | None = None
    pmap: tuple[int, ...] | None = None
    inner: tuple[int, ...] = ()

    @property
    def dims(self) -> tuple[int, ...]:
        """All channel dims, in label-axis order."""
        return () if self.cdim is None else (self.cdim, *self.inner)


OPAQUE = Ch()


class RuleContext:
    """What a rule sees: the op (``node``: ``op``, ``target``, ``args``, ``kwargs`` as an fx node has them), its real
    input values and output, input ``Ch``s, the module (for module calls), and the graph to record into."""

    def __init__(self, graph: Any, node: Any, args: tuple, kwargs: dict, out: Any,
                 module: nn.Module | None) -> None:
        self.graph, self.node, self.args, self.kwargs, self.out, self.module = graph, node, args, kwargs, out, module
        self.name = str(node.target) if node.op == "call_module" else ""

    # -- inputs ---------------------------------------------------------------------------------------------------
    def ch(self, i: int | str) -> Any:
        """The ``Ch`` (or nested tuple of ``Ch``) of positional arg ``i`` or keyword ``i``."""
        a = self.node.args[i] if isinstance(i, int) else self.node.kwargs.get(i)
        if isinstance(i, int) and i >= len(self.node.args):
            return None
        return self.graph.ch_of(a)

    def arg(self, i: int, key: str | None = None, default: Any = None) -> Any:
        """Real value of positional arg ``i`` (or keyword ``key``), else ``default``."""
        if i < len(self.args):
            return self.args[i]
        if key is not None and key in self.kwargs:
            return self.kwargs[key]
        return default

    def tensor_chs(self) -> list[tuple[Any, Ch]]:
        """``(real value, Ch)`` of every tensor among the args (flattened)."""
        out: list[tuple[Any, Ch]] = []

        def walk(node_arg: Any, value: Any) -> None:
            if isinstance(value, torch.Tensor):
                c = self.graph.ch_of(node_arg)
                out.append((value, c if isinstance(c, Ch) else OPAQUE))
            elif isinstance(value, (list, tuple)) and isinstance(node_arg, (list, tuple)):
                for a, v in zip(node_arg, value):
                    walk(a, v)

        for a, v in zip(self.node.args, self.args):
            walk(a, v)
        for k, v in self.kwargs.items():
            walk(self.node.kwargs.get(k), v)
        return out

    # -- recording ------------------------------------------------------------------------------------------------
    def new(self, n: int) -> np.ndarray:
        """``n`` fresh labels (new prunable channels)."""
        return self.graph.uf.new(n)

    def fixed(self, n: int) -> np.ndarray:
        """``n`` FIXED labels."""
        return np.zeros(n, dtype=np.int64)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Couple positions of ``a`` and ``b`` elementwise."""
        self.graph.uf.union_arrays(a, b)

    def fix(self, c: Any) -> None:
        """Make every channel of ``c`` (a ``Ch`` or nested tuple) FIXED."""
        if isinstance(c, Ch) and c.labels is not None:
            flat = np.asarray(c.labels).reshape(-1)
            self.graph.uf.union_arrays(flat, np.zeros_like(flat))
        elif isinstance(c, (list, tuple)):
            for x in c:
                self.fix(x)

    def fix_inputs(self) -> None:
        """FIXED for every tensor input."""
        for _, c in self.tensor_chs():
            self.fix(c)

    def site(self, kind: str, name: str, labels: np.ndarray, **info: Any) -> None:
        """Record that dimension ``kind`` of module/param ``name`` is sliced by the kept positions of ``labels``."""
        self.graph.add_site(kind, name, labels, self.node, **info)


Rule = Callable[[RuleContext], Any]

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


Slicer = Callable[[nn.Module, list, int], None]
MODULE_SLICERS: dict[type, Slicer] = {}


def register_module_rule(cls: type, rule: Rule, slicer: Slicer | None = None) -> None:
    """Give instances of ``cls`` (an ``nn.Module`` subclass) the channel semantics ``rule``; they become leaves of
    the trace (not traced into). Overrides any earlier rule for ``cls``. See :mod:`prunekit.pruning.structured.rules`
    for the rule protocol, and :data:`ELEMENTWISE` / :data:`OPAQUE_RULE` for the common cases.

    A rule that records a ``ctx.site("custom", ctx.name, labels)`` needs ``slicer(module, kept, full)``: it makes the
    module work on the ``kept`` positions (of ``full``) of that site.
    """
    MODULE_RULES[cls] = rule
    if slicer is not None:
        MODULE_SLICERS[cls] = slicer


def slicer_for(m: nn.Module) -> Slicer | None:
    """The slicer registered for module ``m``'s class (or a base class), or None."""
    for cls in type(m).__mro__:
        if cls in MODULE_SLICERS:
            return MODULE_SLICERS[cls]
    return None


def register_function_rule(fn: Any, rule: Rule) -> None:
    """Channel semantics of a function called inside ``forward`` (``torch.special.erf``, a user function, ...)."""
    FUNCTION_RULES[fn] = rule


def single_op(fn: Callable) -> Callable:
    """Make a user function one op of the run, with the rule given by :func:`register_function_rule` (register the
    returned wrapper), instead of being followed inside like any Python code (the default)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
        if torch.overrides.has_torch_function(tensors):
            return torch.overrides.handle_torch_function(wrapper, tensors, *args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def register_method_rule(name: str, rule: Rule) -> None:
    """Channel semantics of a Tensor method (``"my_method"``)."""
    METHOD_RULES[name] = rule


#: Functions known by name to act elementwise on channels (wrapped with ``torch.fx.wrap`` upstream, so they appear
#: as single calls): torchvision's ``stochastic_depth``, timm's ``drop_path`` / ``drop_block_2d``.
PASS_THROUGH_NAMES = frozenset({"stochastic_depth", "drop_path", "drop_block_2d", "drop_block_fast_2d"})


def function_rule_for(fn: Any) -> Rule | None:
    """The rule for a function called in ``forward``: registered ones first, then the known pass-through names."""
    try:
        rule = FUNCTION_RULES.get(fn)
    except TypeError:  # unhashable target
        return None
    if rule is None and getattr(fn, "__name__", None) in PASS_THROUGH_NAMES:
        return elementwise
    return rule


#: Rules for modules recognised by shape rather than class (``LlamaRMSNorm``, ``T5LayerNorm``: any library's norm
#: over the last dim): ``(predicate(module) -> bool, rule)``, tried after the class tables.
MODULE_PREDICATE_RULES: list[tuple[Callable[[nn.Module], bool], Rule]] = []


def module_rule_for(m: nn.Module) -> Rule | None:
    """The rule for module ``m``: its class's, or the nearest registered base class's when ``m`` does not override
    ``forward`` (a ``LayerNorm2d(nn.LayerNorm)`` that permutes in its own forward is traced into instead), or a
    predicate rule's."""
    own = type(m)
    for cls in own.__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls] if cls is own or own.forward is cls.forward else None
    for pred, rule in MODULE_PREDICATE_RULES:
        if pred(m):
            return rule
    return None


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _like_first(ctx: RuleContext) -> Ch:
    """Pass-through: the output has the first tensor input's channels."""
    chs = ctx.tensor_chs()
    if not chs:
        return OPAQUE
    v, c = chs[0]
    if c.inner and c.param is None:
        if not isinstance(ctx.out, torch.Tensor) or tuple(ctx.out.shape) != tuple(v.shape):
            ctx.fix(c)
            return OPAQUE
        return c
    if isinstance(ctx.out, torch.Tensor) and isinstance(v, torch.Tensor) and c.cdim is not None:
        if ctx.out.dim() != v.dim() or ctx.out.shape[c.cdim] != v.shape[c.cdim]:
            ctx.fix(c)
            return OPAQUE
    if c.param is not None:  # a parameter through .contiguous()/.to(): still that parameter
        same = isinstance(ctx.out, torch.Tensor) and isinstance(v, torch.Tensor) and ctx.out.shape == v.shape
        return c if same else OPAQUE
    return Ch(c.cdim, c.labels)


def elementwise(ctx: RuleContext) -> Ch:
    """Unary ops that act on each element (activations, dropout, casts, spatial pooling): channels pass through."""
    return _like_first(ctx)


def opaque_rule(ctx: RuleContext) -> Any:
    """Unknown mixing: every input channel becomes FIXED, the outputs are opaque."""
    ctx.fix_inputs()
    if isinstance(ctx.out, (tuple, list)):
        return tuple(OPAQUE for _ in ctx.out)
    return OPAQUE


ELEMENTWISE: Rule = elementwise
OPAQUE_RULE: Rule = opaque_rule
