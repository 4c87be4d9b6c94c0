"""The blocks of a model for sequential calibration, and the captured inputs of its first block.

A *block chain* is a list of modules that the model calls one after the other, each taking the previous one's
output as its first input: the decoder layers of an LLM (``model.layers``), the encoder layers of BERT / ViT
(``encoder.layer``), the ``blocks`` of a timm ViT, or the residual blocks of a CNN's stages. It is found from the
model's structure (:func:`find_blocks`): the sibling ``ModuleList`` / ``Sequential`` containers of one parent whose
children are composite modules holding Linear/Conv layers, the chain with the most prunable weights wins. An explicit
path (``"model.layers"``, or several joined by commas) overrides the search. A model without such a chain is one
block: the whole model.

:func:`capture_inputs` runs the calibration batches up to the first block (a forward pre-hook records its ``args``
and ``kwargs`` and raises a private exception that stops the run), so nothing after the first block is computed.
:func:`verify_chain` checks, on one batch, that the chain really is a chain (each block called once, in order,
on the previous block's output) before anything is pruned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from ...errors import PrunekitError
from ..scope import layer_kind

log = logging.getLogger(__name__)

#: Keyword arguments that carry a KV cache: dropped (set to None / False) from captured block inputs so a replayed
#: block never appends to a cache.
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


class _StopForward(Exception):
    """Raised by a hook to stop a forward pass once what it needed was recorded (never escapes this package)."""


@dataclass
class BlockChain:
    """``names``: module paths of the blocks in call order; ``modules``: the blocks; ``whole``: True when the model
    itself is the only block (no repeated blocks found or asked for)."""

    names: list[str]
    modules: list[nn.Module]
    whole: bool = False


def _prunable_count(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules()
               if layer_kind(m) is not None and isinstance(getattr(m, "weight", None), nn.Parameter))


def _is_block_container(module: nn.Module) -> bool:
    kids = list(module.children())
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or not kids:
        return False
    return all(len(list(k.children())) > 0 and _prunable_count(k) > 0 for k in kids)


def find_blocks(model: nn.Module, blocks: str | Sequence[str] | None = None) -> BlockChain:
    """The block chain of ``model`` (see the module docstring); ``blocks`` names the container(s) explicitly."""
    named = dict(model.named_modules())
    if blocks is not None:
        paths = [p.strip() for p in (blocks.split(",") if isinstance(blocks, str) else blocks) if p.strip()]
        if not paths:
            raise PrunekitError("blocks: give a module path such as 'model.layers'")
        names: list[str] = []
        for p in paths:
            if p not in named:
                near = [n for n in named if n.endswith(p.split(".")[-1])][:5]
                raise PrunekitError(f"blocks: the model has no module {p!r}" + (f"; similar: {', '.join(near)}"
                                                                               if near else ""))
            mod = named[p]
            if isinstance(mod, (nn.ModuleList, nn.Sequential)):
                names += [f"{p}.{k}" for k, _ in mod.named_children()]
            else:
                names.append(p)
        return BlockChain(names=names, modules=[named[n] for n in names])
    best: tuple[int, list[str]] | None = None
    for pname, parent in named.items():
        chain: list[str] = []
        for cname, child in parent.named_children():
            if _is_block_container(child):
                path = f"{pname}.{cname}" if pname else cname
                chain += [f"{path}.{k}" for k, _ in child.named_children()]
        if chain:
            size = sum(_prunable_count(named[n]) for n in chain)
            if best is None or size > best[0]:
                best = (size, chain)
    if best is None:
        return BlockChain(names=[""], modules=[model], whole=True)
    return BlockChain(names=best[1], modules=[named[n] for n in best[1]])


def whole_model(model: nn.Module) -> BlockChain:
    """The chain of one block: the model itself."""
    return BlockChain(names=[""], modules=[model], whole=True)


def as_call(batch: Any) -> Inputs:
    """A calibration batch as ``(args, kwargs)``: a tensor is one argument, a tuple/list the arguments, a dict the
    keyword arguments."""
    if isinstance(batch, dict):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    return (batch,), {}


def call_model(module: nn.Module, args: Sequence[Any], kwargs: dict[str, Any], what: str) -> Any:
    """``module(*args, **kwargs)``; an exception from inputs the module does not accept becomes a PrunekitError."""
    try:
        return module(*args, **kwargs)
    except _StopForward:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunekitError(f"the {what} does not accept the calibration inputs: {type(exc).__name__}: "
                            f"{first[:300]}") from exc


def first_tensor(out: Any) -> torch.Tensor:
    """The hidden states of a block's output (the output, or its first element)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    hs = getattr(out, "hidden_states", None) if not isinstance(out, dict) else out.get("hidden_states")
    if isinstance(hs, torch.Tensor):
        return hs
    raise PrunekitError(f"a block returned {type(out).__name__}, not a tensor or a tuple starting with one; "
                        "name other blocks with blocks=...")


def _scrub(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    for k in _CACHE_KWARGS:
        if k in out:
            out[k] = None
    if "use_cache" in out:
        out["use_cache"] = False
    return out


def capture_inputs(model: nn.Module, first: nn.Module, batches: Iterable[Any]) -> list[Inputs]:
    """The ``(args, kwargs)`` of ``first`` for every calibration batch, recorded by a pre-hook that stops the run."""
    got: list[Inputs] = []

    def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        got.append((tuple(args), _scrub(kwargs)))
        raise _StopForward

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            args, kwargs = as_call(batch)
            try:
                call_model(model, args, kwargs, "model")
            except _StopForward:
                continue
            raise PrunekitError("the model finished a forward pass without calling its first block "
                                f"({type(first).__name__}); name the blocks with blocks=...")
    finally:
        handle.remove()
    if not got:
        raise PrunekitError("no calibration data: the calibration iterable is empty")
    return got


def replace_hidden(inputs: Inputs, hidden: torch.Tensor) -> Inputs:
    """The inputs of the next block: ``inputs`` with the hidden states (first argument) replaced."""
    args, kwargs = inputs
    if args:
        return (hidden, *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    raise PrunekitError("cannot tell which input of a block carries the hidden states (no positional argument, no "
                        "hidden_states keyword)")


def verify_chain(model: nn.Module, chain: BlockChain, batch: Any) -> str | None:
    """None when ``chain`` is a real chain on ``batch``, else the reason it is not.

    Runs the model on ``batch`` with hooks on the blocks, up to the end of the last block.
    """
    calls: list[tuple[int, int, int]] = []  # block index, id of its input, id of its output
    handles = []
    last = len(chain.modules) - 1

    def make(i: int):
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs.get("hidden_states")
            calls.append((i, id(x), -1))

        def post(_m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
            j, xin, _ = calls[-1]
            try:
                calls[-1] = (j, xin, id(first_tensor(out)))
            except PrunekitError:
                calls[-1] = (j, xin, -2)
            if i == last:
                raise _StopForward
        return pre, post

    for i, mod in enumerate(chain.modules):
        pre, post = make(i)
        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))
    try:
        args, kwargs = as_call(batch)
        with torch.no_grad():
            try:
                call_model(model, args, kwargs, "model")
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    order = [c[0] for c in calls]
    if order != list(range(len(chain.modules))):
        return f"the blocks were called in the order {order[:12]}, not once each in order"
    for (_, _, out), (i, xin, _) in zip(calls, calls[1:]):
        if out != xin:
            return f"block {chain.names[i]} does not take the previous block's output as its input"
    return None
