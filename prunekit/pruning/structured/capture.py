"""The channel-dependency graph from a real run of the model: every torch op it executes, with its real values.

Why a real run (docs/ARCHITECTURE.md): channel dependencies are a property of what the model computes. Running the
model once on example inputs under a :class:`~torch.overrides.TorchFunctionMode` sees every torch function and
Tensor method with its real arguments, whatever Python produced them (control flow, keyword inputs such as
``input_ids`` / ``attention_mask``, ``ModelOutput`` dataclasses, lists of images), and module hooks say which
module each op runs in. Leaf modules (torch.nn layers with a rule, modules with a registered rule, modules the
user ignores) are single ops whose semantics the rules give; everything else is followed inside. Measured against
the other candidates: ``torch.fx`` symbolic tracing fails on Hugging Face models (no fx tracer ships with
transformers 5) and on Python control flow; ``torch.export`` needs a model free of graph breaks and loses module
calls as units; the autograd graph sees only differentiable ops. A real run sees everything, at the cost of one
forward pass (with a Python hook per op).

An op without a rule is one :class:`~prunekit.errors.PrunekitError` naming the op, the module path and the user's
source line, read from the Python stack at that moment.
"""
from __future__ import annotations

import dataclasses
import traceback
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from ...errors import PrunekitError
from . import rules as R
from .trace import _user_frame_from_lines, how_to_proceed


class Inputs(tuple):
    """Example inputs of a model: positional values (the tuple) and keyword values (``kwargs``)."""

    kwargs: dict[str, Any]

    def __new__(cls, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> "Inputs":
        obj = super().__new__(cls, args)
        obj.kwargs = dict(kwargs or {})
        return obj

    def __reduce__(self) -> Any:
        return (Inputs, (tuple(self), self.kwargs))


def as_inputs(example: Any) -> Inputs:
    """``example`` (a tensor, a tuple/list of positional inputs, a dict of keyword inputs, or :class:`Inputs`) as
    :class:`Inputs`."""
    if isinstance(example, Inputs):
        return example
    if isinstance(example, torch.Tensor):
        return Inputs((example,))
    if isinstance(example, Mapping):
        return Inputs((), example)
    if isinstance(example, (list, tuple)):
        return Inputs(tuple(example))
    raise PrunekitError(f"example inputs must be a tensor, a tuple of inputs or a dict of keyword inputs, "
                        f"not {type(example).__name__}")


def call_model(model: nn.Module, example: Any) -> Any:
    """``model(*args, **kwargs)`` for example inputs in any form :func:`as_inputs` takes."""
    inp = as_inputs(example)
    return model(*inp, **inp.kwargs)


def first_tensor(example: Any) -> torch.Tensor | None:
    """The first tensor among the example inputs (positional first), or None."""
    inp = as_inputs(example)
    for v in list(inp) + list(inp.kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v
    return None


def flat_tensors(y: Any) -> list[torch.Tensor]:
    """Every tensor inside ``y``: tensors, lists, tuples, dicts (``ModelOutput`` included) and dataclasses."""
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return [t for x in y for t in flat_tensors(x)]
    if isinstance(y, Mapping):
        return [t for x in y.values() for t in flat_tensors(x)]
    if dataclasses.is_dataclass(y) and not isinstance(y, type):
        return [t for f in dataclasses.fields(y) for t in flat_tensors(getattr(y, f.name, None))]
    return []


class Call:
    """One op of the run, in the terms the rules read (those of an fx node): ``op`` (call_function / call_method /
    call_module), ``target`` (the function, the method name or the module path) and the real ``args``/``kwargs``."""

    __slots__ = ("op", "target", "args", "kwargs")

    def __init__(self, op: str, target: Any, args: tuple, kwargs: dict) -> None:
        self.op, self.target, self.args, self.kwargs = op, target, args, kwargs


# Tensor dunder methods under the method names the rule tables use.
_BROADCAST_DUNDERS = ("floordiv", "rfloordiv", "mod", "rmod", "pow", "rpow", "and", "or", "xor", "rand", "ror",
                      "rxor", "eq", "ne", "lt", "le", "gt", "ge", "rtruediv", "rdiv", "iand", "ior", "ixor")
_DUNDER = {"__add__": "add", "__radd__": "add", "__iadd__": "add_", "__sub__": "sub", "__rsub__": "rsub",
           "__isub__": "sub_", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul_", "__truediv__": "div",
           "__div__": "div", "__itruediv__": "div_", "__idiv__": "div_", "__neg__": "neg", "__abs__": "abs",
           "__pos__": "contiguous", "__invert__": "contiguous", "__matmul__": "matmul", "__getitem__": "__getitem__",
           "__setitem__": "__setitem__", "__rmatmul__": "__rmatmul__"}
_DUNDER.update({f"__{n}__": "add" for n in _BROADCAST_DUNDERS})
_TENSOR_ATTRS = {"T": "t", "H": "t", "mT": "mT", "mH": "mT", "data": "contiguous", "real": "contiguous"}


def classify(func: Any) -> tuple[str, Any]:
    """``(op, target)`` of a function seen by the mode, in fx terms (Tensor methods by name)."""
    qual = getattr(func, "__qualname__", "") or ""
    name = getattr(func, "__name__", "") or ""
    if name == "__get__" and "getset_descriptor" in qual:
        attr = getattr(getattr(func, "__self__", None), "__name__", "")
        return ("call_method", _TENSOR_ATTRS[attr]) if attr in _TENSOR_ATTRS else ("attribute", attr)
    if qual.startswith(("TensorBase.", "Tensor.")):
        if name.startswith("__") and name.endswith("__"):
            return "call_method", _DUNDER.get(name, name)
        return "call_method", name
    return "call_function", func


def _rmatmul(ctx: R.RuleContext) -> Any:
    return R.METHOD_RULES["matmul"](ctx)


def _setitem(ctx: R.RuleContext) -> None:
    """``x[idx] = y``: in place; whatever channels meet there are kept whole."""
    ctx.fix_inputs()
    return None


def rule_for(op: str, target: Any) -> R.Rule | None:
    """The rule of a classified op (see :func:`classify`)."""
    if op == "call_function":
        return R.function_rule_for(target)
    if target == "__getitem__":
        return R.FUNCTION_RULES.get(__import__("operator").getitem)
    if target == "__setitem__":
        return _setitem
    if target == "__rmatmul__":
        return _rmatmul
    return R.METHOD_RULES.get(target)


def _op_name(call: Call) -> str:
    if call.op == "call_method":
        return f"Tensor.{call.target}"
    t = call.target
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)
    name = name.replace("_VariableFunctionsClass.", "")
    if mod.startswith("torch._C._"):
        sub = mod[len("torch._C._"):]
        mod, name = f"torch.{sub}", name.removeprefix(f"{sub}_")
    if not mod or mod in ("builtins", "torch._C") or mod.startswith("torch._C"):
        mod = "torch"
    return f"{mod}.{name}"


def user_source() -> str:
    """``file:line (function)`` of the innermost user frame on the current Python stack."""
    frames = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_stack()]
    return _user_frame_from_lines(frames) or "unknown source"


_DECISIONS = frozenset({"__bool__", "item", "__int__", "__float__", "__index__", "tolist"})


def unrun_modules(model: nn.Module, cap: "Capture", ignore: set[str]) -> list[str]:
    """Modules holding parameters that neither ran nor had their parameters read during ``cap``'s run (a branch the
    example did not take): their channels cannot be placed."""
    out = []
    for name, m in model.named_modules():
        params = [p for p in m._parameters.values() if p is not None]
        if not params or name in cap.executed or any(id(p) in cap.param_ids for p in params):
            continue
        if any(name == i or name.startswith(i + ".") for i in set(ignore) | cap.leaves_run):
            continue
        out.append(name)
    return out


class _Mode(TorchFunctionMode):
    def __init__(self, on_op: Callable[[Any, tuple, dict, Any], None]) -> None:
        super().__init__()
        self.on_op = on_op

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's protocol)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.on_op(func, args, kwargs, out)
        return out


class Capture:
    """Runs a model once and hands every op outside leaf modules, and every leaf module call, to ``apply``.

    ``apply(call, out, module, path)`` returns the output's ``Ch``; ``is_leaf(module, path)`` says which modules are
    single ops. ``path`` is the module the op runs in (for messages).
    """

    def __init__(self, model: nn.Module, is_leaf: Callable[[nn.Module, str], bool],
                 apply: Callable[[Call, Any, nn.Module | None, str], Any]) -> None:
        self.model = model
        self.is_leaf = is_leaf
        self.apply = apply
        self.paths = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = [""]
        self.leaf_depth = 0
        self.active = False
        self.executed: set[str] = set()
        self.leaves_run: set[str] = set()
        self.param_ids: set[int] = set()
        self.decision: str | None = None  # where a tensor's value first steered Python (``if x.sum() > 0``)

    @property
    def path(self) -> str:
        return self.stack[-1]

    def _pre(self, module: nn.Module, args: Any) -> None:
        if not self.active:
            return
        if self.leaf_depth:
            self.leaf_depth += 1
            return
        path = self.paths.get(id(module))
        if path is not None:
            self.executed.add(path)
        if path is None:  # a module built during forward: followed inside, named by its class
            self.stack.append(f"{self.path}.<{type(module).__name__}>".lstrip("."))
            return
        self.stack.append(path)
        if self.is_leaf(module, path):
            self.leaf_depth = 1
            self.leaves_run.add(path)

    def _post(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if not self.active:
            return
        if self.leaf_depth > 1:
            self.leaf_depth -= 1
            return
        if self.leaf_depth == 0 and self.paths.get(id(module)) is None and len(self.stack) > 1:
            self.stack.pop()
            return
        path = self.stack.pop() if len(self.stack) > 1 else ""
        if self.leaf_depth == 1:
            self.leaf_depth = 0
            self.apply(Call("call_module", path, tuple(args), dict(kwargs or {})), out, module, path)

    def _op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if not self.active or self.leaf_depth:
            return
        op, target = classify(func)
        if op == "attribute":
            return
        if target in _DECISIONS and self.decision is None:
            self.decision = user_source()
        for a in (*args, *kwargs.values()):  # F.linear(input=x, weight=self.qkv.weight): read by keyword too
            if isinstance(a, nn.Parameter):
                self.param_ids.add(id(a))
        self.apply(Call(op, target, tuple(args), dict(kwargs)), out, None, self.path)

    def run(self, example: Inputs) -> Any:
        """Run the model on ``example`` with the hooks and the mode on; return its output."""
        from torch.nn.modules import module as nn_module

        pre = nn_module.register_module_forward_pre_hook(self._pre)
        post = nn_module.register_module_forward_hook(self._post, with_kwargs=True)
        self.active = True
        try:
            with _Mode(self._op):
                return self.model(*example, **example.kwargs)
        finally:
            self.active = False
            pre.remove()
            post.remove()
            # torch's handle does not forget that the hook took kwargs; leave no trace in the global tables
            getattr(nn_module, "_global_forward_hooks_with_kwargs", {}).pop(post.id, None)


def iter_tensors(v: Any) -> Iterator[torch.Tensor]:
    """Tensors among ``v`` (nested lists/tuples/dicts)."""
    if isinstance(v, torch.Tensor):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from iter_tensors(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from iter_tensors(x)


def cannot_place(call: Call, path: str, module: nn.Module | None, why: str, source: str) -> PrunekitError:
    """The one error for an op structured pruning cannot handle: op, module path, source line, the way out."""
    op = f"module {type(module).__name__}" if module is not None else _op_name(call)
    kind = call.op
    return PrunekitError(f"structured pruning cannot place op {op} in module {path or '<root>'!r} at {source}: "
                         f"{why}; {how_to_proceed(path, kind, op)}")
