"""Which weights are prunable: selection by layer kind, by name pattern, and first/last-layer switches.

A *layer* here is the ``weight`` parameter of a ``Conv{1,2,3}d`` / ``ConvTranspose{1,2,3}d`` (kind ``"conv"``)
or ``Linear`` (kind ``"linear"``) module. Biases, BatchNorm and every other parameter are never in scope.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch.nn as nn

from ..errors import PrunekitError

KINDS = ("conv", "linear")


@dataclass(frozen=True)
class Scope:
    """A description of the prunable weights.

    ``kinds``: any of ``"conv"``, ``"linear"``. ``include``: regexes; when given, a layer is in scope only if one
    of them matches its parameter name (``re.search``). ``exclude``: regexes that remove matching layers.
    ``skip_first`` / ``skip_last``: leave out the first / last conv-or-linear layer *of the network* (module
    registration order), whatever ``kinds`` says; with ``kinds=("conv",)`` ``skip_last`` therefore only matters
    when the network ends in a conv.
    """

    kinds: tuple[str, ...] = ("conv",)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise PrunekitError(f"scope kinds must be a non-empty subset of {', '.join(KINDS)}, got "
                                f"{','.join(kinds) or '(none)'}")
        object.__setattr__(self, "kinds", kinds)
        for attr in ("include", "exclude"):
            pats = tuple(getattr(self, attr))
            for p in pats:
                try:
                    re.compile(p)
                except re.error as e:
                    raise PrunekitError(f"invalid --{attr} regex {p!r}: {e}") from None
            object.__setattr__(self, attr, pats)

    def to_dict(self) -> dict:
        """JSON-able description."""
        return {"kinds": list(self.kinds), "include": list(self.include), "exclude": list(self.exclude),
                "skip_first": self.skip_first, "skip_last": self.skip_last}

    @classmethod
    def from_dict(cls, d: dict) -> "Scope":
        """Inverse of :meth:`to_dict`."""
        return cls(kinds=tuple(d.get("kinds", ("conv",))), include=tuple(d.get("include", ())),
                   exclude=tuple(d.get("exclude", ())), skip_first=bool(d.get("skip_first", False)),
                   skip_last=bool(d.get("skip_last", False)))


@dataclass
class Layer:
    """One prunable weight: ``name`` is the parameter name (``"features.0.weight"``)."""

    name: str
    module_name: str
    kind: str
    module: nn.Module = field(repr=False)

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def numel(self) -> int:
        return self.module.weight.numel()


def layer_kind(module: nn.Module) -> str | None:
    """``"conv"``, ``"linear"`` or None."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def all_layers(model: nn.Module) -> list[Layer]:
    """Every conv / linear layer with a weight parameter, in module order (shared modules listed once)."""
    out: list[Layer] = []
    seen: set[int] = set()
    for mname, module in model.named_modules():
        kind = layer_kind(module)
        w = getattr(module, "weight", None)
        if kind is None or not isinstance(w, nn.Parameter) or id(w) in seen:
            continue
        seen.add(id(w))
        out.append(Layer(name=f"{mname}.weight" if mname else "weight", module_name=mname, kind=kind,
                         module=module))
    return out


def parse_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"conv,linear"`` -> ``("conv", "linear")`` (also accepts ``fc`` for linear)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = []
    for item in items:
        k = item.strip().lower()
        k = "linear" if k in ("fc", "dense") else k
        if k and k not in kinds:
            kinds.append(k)
    return tuple(kinds)


def select_layers(model: nn.Module, scope: Scope) -> list[Layer]:
    """The layers of ``model`` inside ``scope``, in module order.

    Raises ``PrunekitError`` when nothing is left, naming the scope.
    """
    layers = all_layers(model)
    chosen = list(layers)
    if scope.skip_first and layers:
        chosen = [lay for lay in chosen if lay is not layers[0]]
    if scope.skip_last and layers:
        chosen = [lay for lay in chosen if lay is not layers[-1]]
    chosen = [lay for lay in chosen if lay.kind in scope.kinds]
    if scope.include:
        chosen = [lay for lay in chosen if any(re.search(p, lay.name) for p in scope.include)]
    if scope.exclude:
        chosen = [lay for lay in chosen if not any(re.search(p, lay.name) for p in scope.exclude)]
    if not chosen:
        raise PrunekitError(f"no prunable layer in scope {scope.to_dict()} (model has {len(layers)} conv/linear "
                            "layers)")
    return chosen


def make_scope(kinds: str | Iterable[str] | None = None, include: Iterable[str] = (),
               exclude: Iterable[str] = (), skip_first: bool = False, skip_last: bool = False,
               default_kinds: Sequence[str] = ("conv",)) -> Scope:
    """Build a :class:`Scope` from CLI-style values (``kinds=None`` means ``default_kinds``)."""
    k = parse_kinds(kinds) if kinds is not None else tuple(default_kinds)
    return Scope(kinds=k, include=tuple(include or ()), exclude=tuple(exclude or ()), skip_first=skip_first,
                 skip_last=skip_last)
