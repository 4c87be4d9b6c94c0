"""Bounds on what a cfg or a checkpoint's metadata (from a file, a recipe or ``--cfg``) can make prunekit build.

A leaf module (imports nothing from prunekit at import time): the registry, the checkpoint loader and the CLI all
check against the same limits.
"""
from __future__ import annotations

import math
import threading
from typing import Any


MAX_WIDTH = 32_768  # widest channel count a cfg may ask for (the zoo's widest layer is 4,096)
MAX_CFG_LEN = 10_000  # longest cfg (the zoo's deepest, resnet1202-style stacks, need ~600 entries)
MAX_CLASSES = 1_000_000  # most classes a model (or a checkpoint's metadata) may declare
MAX_IN_CHANNELS = 4096  # most input channels
MAX_ELEMENTS = 2_000_000_000  # tensor elements a model build may allocate (~8 GB of float32)


def check_cfg_bounds(cfg: Any, field: str = "cfg") -> list[Any] | None:
    """Check the shape of a cfg without building anything: None, or a list of at most :data:`MAX_CFG_LEN`
    entries, each ``'M'`` (a pooling slot) or an integer width in ``[1, MAX_WIDTH]``. Returns it as a plain list;
    a bad one is a :class:`~prunekit.errors.PrunekitError` naming ``field`` (and the entry's index)."""
    from numbers import Integral

    from ..errors import PrunekitError

    if cfg is None:
        return None
    if not isinstance(cfg, (list, tuple)):
        raise PrunekitError(f"{field} must be a list of widths, got {type(cfg).__name__} {_short(cfg)}")
    if len(cfg) > MAX_CFG_LEN:
        raise PrunekitError(f"{field} has {len(cfg)} entries; at most {MAX_CFG_LEN} are allowed")
    out: list[Any] = []
    for i, v in enumerate(cfg):
        if v == "M":
            out.append("M")
        elif isinstance(v, Integral) and not isinstance(v, bool) and 1 <= int(v) <= MAX_WIDTH:
            out.append(int(v))
        else:
            raise PrunekitError(f"{field}[{i}] must be an integer width in [1, {MAX_WIDTH}] or 'M', got {_short(v)}")
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _numel(size: Any) -> int | None:
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        return math.prod(size)
    return None


def _requested(name: str, args: tuple, kwargs: dict) -> int | None:
    """Elements a tensor constructor call asks for, worked out from its arguments (None: not recognised).

    Done by hand for the constructors models use: a meta-device dry run of ``randn``/``arange`` costs 1.4 s the
    first time (torch loads its meta kernels)."""
    if name in ("empty", "zeros", "ones", "rand", "randn"):
        return _numel(kwargs["size"] if "size" in kwargs else args[0] if len(args) == 1 else tuple(args))
    if name in ("full", "empty_strided", "empty_permuted"):
        return _numel(kwargs.get("size", args[0] if args else None))
    if name == "randint":
        return _numel(kwargs.get("size", next((a for a in args if isinstance(a, (tuple, list))), None)))
    if name == "randperm":
        return _numel(args[0] if args else kwargs.get("n"))
    if name == "eye":
        n = args[0] if args else kwargs.get("n")
        m = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("m", n)
        return _numel([n, m]) if m is not None else None
    if name in ("linspace", "logspace"):
        return _numel(args[2] if len(args) > 2 else kwargs.get("steps"))
    if name == "arange":
        nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(nums) != len(args) or not 1 <= len(nums) <= 3 or kwargs.keys() & {"start", "end", "step"}:
            return None
        start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) > 2 else 1)
        return max(0, math.ceil((end - start) / step)) if step else None
    return None


class _AllocationGuard:
    """A TorchFunctionMode that adds up the elements every tensor constructor is asked for and raises before
    the allocation that would cross ``limit`` (shapes it cannot read off the arguments are worked out on the
    meta device)."""

    def __init__(self, limit: int, what: str) -> None:
        import torch
        from torch.overrides import TorchFunctionMode

        try:
            from torch.utils._device import _device_constructors

            ctors = set(_device_constructors())
        except ImportError:  # pragma: no cover - older/newer torch without the private helper
            ctors = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
                     torch.empty_strided, torch.eye, torch.arange, torch.randperm}
        ctors -= {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor}  # copy data that exists
        guard = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                if func in ctors and str(kwargs.get("device", "")) != "meta":
                    n = _requested(getattr(func, "__name__", ""), tuple(args), kwargs)
                    if n is None:
                        try:
                            n = int(func(*args, **{**kwargs, "device": "meta"}).numel())
                        except (RuntimeError, TypeError, ValueError, NotImplementedError):
                            n = 0  # not a shape meta can work out: let the real call decide
                    guard.add(n)
                return func(*args, **kwargs)

        self.mode = Mode()
        self.limit, self.what, self.total = int(limit), what, 0

    def add(self, n: int) -> None:
        from ..errors import PrunekitError

        self.total += max(0, n)
        if self.total > self.limit:
            raise PrunekitError(f"{self.what} would allocate more than {self.limit:,} tensor elements "
                                f"(prunekit.models.bounds.MAX_ELEMENTS); refusing to build it")


class _Depth(threading.local):
    depth = 0


_ACTIVE = _Depth()  # bounded_build calls active in this thread


def bounded_build(build: Any, what: str, limit: int = MAX_ELEMENTS) -> Any:
    """Call ``build()`` (a model constructor) while refusing, before it happens, any allocation that would take
    the tensors it creates past ``limit`` elements: a :class:`~prunekit.errors.PrunekitError` that starts with
    ``what`` (say which fields of which file or flag describe the model). Nested calls (the checkpoint loader
    around :func:`~prunekit.models.create_model`) are measured by the outermost guard, whose ``what`` is named."""
    if _ACTIVE.depth:
        return build()
    guard = _AllocationGuard(limit, what)
    _ACTIVE.depth += 1
    try:
        with guard.mode:
            return build()
    finally:
        _ACTIVE.depth -= 1
