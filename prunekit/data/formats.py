"""Readers for on-disk dataset formats: IDX (MNIST family), CIFAR python batches, image files.

CIFAR batches are Python pickles of plain dicts holding a numpy array and lists; that is the dataset's
documented distribution format. They are read with :class:`SafeUnpickler`, which resolves only numpy's array
reconstruction functions and inert builtin types, so a hostile file cannot run code: any other global
(``os.system``, ``builtins.eval``, ...) is refused with a :class:`~prunekit.errors.PrunekitError`.
"""
from __future__ import annotations

import builtins
import codecs
import gzip
import io
import math
import pickle
import reprlib
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import PrunekitError

# ------------------------------------------------------------------------------------------------ IDX

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


MAX_IDX_BYTES = 2 << 30  # the largest IDX payload read (MNIST's train images: 47 MB; EMNIST's: ~550 MB)
_IDX_CHUNK = 1 << 22


def read_idx(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (``.gz`` compressed or raw) into a numpy array with its stored shape.

    The header's shape fixes how many bytes are read (at most ``max_bytes``): a file (or a gzip stream) that holds
    fewer or more is refused without decompressing more than one chunk past that size, so a gzip bomb fails fast."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = _read_idx_stream(f, path, max_bytes)
    except PermissionError:
        raise PrunekitError(f"cannot read IDX file {path}: permission denied") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise PrunekitError(f"cannot read IDX file {path}: {exc}") from None
    dtype, dims, payload = data
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _read_exactly(f: Any, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(_IDX_CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_idx_stream(f: Any, path: Path, max_bytes: int) -> tuple[np.dtype, tuple[int, ...], bytes]:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise PrunekitError(f"{path} is not an IDX file (bad magic number {magic[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    raw_dims = f.read(4 * ndim)
    if ndim == 0 or len(raw_dims) < 4 * ndim:
        raise PrunekitError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw_dims)
    expected = math.prod(dims) * dtype.itemsize
    if expected > max_bytes:
        raise PrunekitError(f"{path}: IDX header says shape {dims} ({expected:,} bytes), more than the "
                            f"{max_bytes:,} bytes prunekit reads from one IDX file")
    payload = _read_exactly(f, expected)
    if len(payload) < expected:
        raise PrunekitError(f"{path}: IDX header says shape {dims} ({expected} bytes) but the file holds "
                            f"{len(payload)} bytes of data")
    extra = len(f.read(_IDX_CHUNK))
    if extra:
        raise PrunekitError(f"{path}: IDX header says shape {dims} ({expected} bytes) but the file holds more data "
                            f"(at least {expected + extra} bytes)")
    return dtype, dims, payload


# ------------------------------------------------------------------------------------------------ pickle

def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    try:  # numpy >= 2
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {("numpy", "ndarray"): np.ndarray,
                                                          ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    if hasattr(nm, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(mod, "_frombuffer")] = nm._frombuffer
    return allowed


_SAFE_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
                  "complex", "bool")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only reconstructs numpy arrays/dtypes/scalars and inert builtin containers."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        if SafeUnpickler._allowed is None:
            allowed: dict[tuple[str, str], Any] = dict(_numpy_globals())
            for b in _SAFE_BUILTINS:
                allowed[("builtins", b)] = getattr(builtins, b)
                allowed[("__builtin__", b)] = getattr(builtins, b)
            allowed[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles store bytes
            SafeUnpickler._allowed = allowed
        obj = SafeUnpickler._allowed.get((module, name))
        if obj is None:
            raise PrunekitError(f"refusing to unpickle the global {module}.{name}: a dataset file may only hold "
                                "numpy arrays, lists, dicts and strings")
        return obj

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise PrunekitError("refusing to unpickle a persistent id")


def load_pickle(path: str | Path) -> Any:
    """Load a dataset pickle (Python 2 era CIFAR batches included: ``encoding='latin1'``) safely."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PrunekitError(f"cannot read {path}: {exc}") from None
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except PrunekitError as exc:
        raise PrunekitError(f"{path}: {exc}") from None
    except RecursionError:
        raise PrunekitError(f"{path} is not a readable dataset pickle: its objects are nested too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, MemoryError) as exc:
        raise PrunekitError(f"{path} is not a readable dataset pickle: {type(exc).__name__}: {exc}") from None
    return _check_plain(obj, path)


MAX_PICKLE_DEPTH = 32  # a CIFAR batch is a dict of arrays and lists: depth 2


def _check_plain(obj: Any, path: Path) -> Any:
    """Refuse object arrays anywhere in a loaded pickle and nesting deeper than :data:`MAX_PICKLE_DEPTH`
    (walked iteratively: a hostile nest of 20,000 dicts must not blow the stack)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, np.ndarray) and item.dtype == object:
            raise PrunekitError(f"{path}: object arrays are not allowed in a dataset pickle")
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        if depth >= MAX_PICKLE_DEPTH:
            raise PrunekitError(f"{path}: containers nested more than {MAX_PICKLE_DEPTH} deep; not a dataset pickle")
        seen.add(id(item))
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple, np.ndarray)))
    return obj


def dict_get(d: dict, key: str, path: Path) -> Any:
    """``d[key]`` accepting a str or bytes key (pickles read with ``encoding='bytes'`` have bytes keys)."""
    if not isinstance(d, dict):
        raise PrunekitError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    if key in d:
        return d[key]
    if key.encode() in d:
        return d[key.encode()]
    keys = sorted(reprlib.repr(k) for k in d)
    shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} keys)" if len(keys) > 10 else "")
    raise PrunekitError(f"{path}: missing key {key!r} (found: {shown or 'none'})")


# ------------------------------------------------------------------------------------------------ images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def decode_image(path: str | Path) -> torch.Tensor:
    """Decode an image file with Pillow into an RGB uint8 tensor ``[3, H, W]``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise PrunekitError(f"cannot decode image {path}: {exc}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
