"""Tracing a model into a torch.fx graph for channel-dependency analysis, with errors that name the place.

``torch.fx`` symbolic tracing is used (see docs/ARCHITECTURE.md for why): it keeps ``nn.Module`` calls as nodes
with their module path, records the Python source line of every op, and treats leaf modules (``torch.nn``
layers, modules with a registered rule, modules the user asked to ignore) as opaque calls whose semantics the
rules give. A model that cannot be traced (data-dependent control flow, unsupported Python) becomes one
:class:`~prunekit.errors.PrunekitError` naming the module and the source line, and how to proceed.
"""
from __future__ import annotations

import os
import re
import traceback
from typing import Callable, Iterable

import torch
import torch.fx as fx
import torch.nn as nn

from ...errors import PrunekitError

_TORCH_DIR = os.path.dirname(torch.__file__)
_PRUNEKIT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')

_REGISTER = {"call_module": "register_module_rule({cls}, rule)", "call_function": "register_function_rule({op}, rule)",
             "call_method": "register_method_rule({op!r}, rule)"}


def _user_frame_from_lines(frames: Iterable[tuple[str, int, str]]) -> str | None:
    """``file:line (function)`` of the innermost frame that is neither torch's nor prunekit's own."""
    found = None
    for filename, lineno, func in frames:
        path = os.path.abspath(filename)
        if path.startswith(_TORCH_DIR) or path.startswith(_PRUNEKIT_DIR + os.sep + "pruning"):
            continue
        found = f"{filename}:{lineno} ({func})"
    return found


def node_source(node: fx.Node) -> str:
    """The user source line an fx node was traced from (``file:line (function)``), or ``"unknown source"``."""
    text = node.stack_trace or ""
    frames = [(m.group(1), int(m.group(2)), m.group(3)) for m in _FRAME.finditer(text)]
    return _user_frame_from_lines(frames) or "unknown source"


def node_module(node: fx.Node) -> str:
    """The module path an fx node belongs to (its own target for module calls; ``""`` = the root model)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        return str(next(reversed(stack.values()))[0])
    return ""


def node_op(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """A readable name of the op of ``node`` (``torch.fft.rfft2``, ``Tensor.view``, ``module MyBlock``)."""
    if node.op == "call_module":
        return f"module {type(modules[str(node.target)]).__name__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)
    if mod.startswith("torch._C._"):  # torch._C._fft.fft_rfft2 -> torch.fft.rfft2
        sub = mod[len("torch._C._"):]
        mod, name = f"torch.{sub}", name.removeprefix(f"{sub}_")
    return f"{mod}.{name}" if mod and mod != "builtins" else name


def how_to_proceed(path: str, kind: str = "call_module", op: str = "") -> str:
    """The advice appended to every "cannot place" error: ignore the enclosing module, or register a rule."""
    reg = _REGISTER.get(kind, _REGISTER["call_module"])
    cls = op.split(" ", 1)[1] if op.startswith("module ") else "YourModule"
    what = reg.format(cls=cls, op=op.removeprefix("Tensor.") if kind == "call_method" else op)
    advice = f"register a rule with prunekit.pruning.structured.{what} (docs/ARCHITECTURE.md, 'Extension API')"
    if path:
        regex = "^" + re.escape(path) + "$"
        return (f"pass ignore=[{regex!r}] (CLI: --ignore '{regex}') to keep module {path!r} whole and unpruned, "
                f"or {advice}")
    return advice + ", or move it into a submodule and ignore that"


class _Tracer(fx.Tracer):
    def __init__(self, leaf_paths: set[str], has_rule: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.record_stack_traces = True
        self._leaf_paths = leaf_paths
        self._has_rule = has_rule
        self.current_path = ""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_paths or self._has_rule(m):
            return True
        if type(m).__module__.startswith("torch.nn") and not isinstance(m, (nn.Sequential, nn.ModuleList,
                                                                              nn.ModuleDict)):
            return True  # a torch.nn layer without a rule: a leaf, reported as "no channel rule" with its path
        return False

    def call_module(self, m, forward, args, kwargs):  # remember where we are, for error messages
        prev = self.current_path
        self.current_path = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.current_path = prev


_TRACE_ERRORS = (fx.proxy.TraceError, TypeError, RuntimeError, AttributeError, ValueError, NotImplementedError,
                 IndexError, KeyError, AssertionError)


def trace(model: nn.Module, *, leaf_paths: set[str], has_rule: Callable[[nn.Module], bool]) -> fx.GraphModule:
    """Symbolically trace ``model``; modules at ``leaf_paths`` or with a rule (``has_rule``) stay single calls."""
    tracer = _Tracer(leaf_paths, has_rule)
    try:
        graph = tracer.trace(model)
    except _TRACE_ERRORS as exc:
        frames = [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
        where = _user_frame_from_lines(frames) or "unknown source"
        path = tracer.current_path
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunekitError(
            f"cannot trace {type(model).__name__} for structured pruning: {first} (in module "
            f"{path or '<root>'!r}, at {where}); " + (how_to_proceed(path) if path else
                                                      "make its forward traceable by torch.fx (no Python control "
                                                      "flow on tensor values), or ignore the submodule that is not")
        ) from exc
    return fx.GraphModule(tracer.root, graph)
