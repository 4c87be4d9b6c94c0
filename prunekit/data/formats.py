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
import pickle
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


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` compressed or raw) into a numpy array with its stored shape."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise PrunekitError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise PrunekitError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise PrunekitError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise PrunekitError(f"{path}: IDX header says shape {dims} ({expected} bytes) but the file holds "
                            f"{len(data) - header} bytes of data")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, MemoryError) as exc:
        raise PrunekitError(f"{path} is not a readable dataset pickle: {type(exc).__name__}: {exc}") from None
    return _reject_object_arrays(obj, path)


def _reject_object_arrays(obj: Any, path: Path) -> Any:
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        raise PrunekitError(f"{path}: object arrays are not allowed in a dataset pickle")
    if isinstance(obj, dict):
        for v in obj.values():
            _reject_object_arrays(v, path)
    return obj


def dict_get(d: dict, key: str, path: Path) -> Any:
    """``d[key]`` accepting a str or bytes key (pickles read with ``encoding='bytes'`` have bytes keys)."""
    if not isinstance(d, dict):
        raise PrunekitError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    if key in d:
        return d[key]
    if key.encode() in d:
        return d[key.encode()]
    keys = ", ".join(sorted(str(k) for k in d))
    raise PrunekitError(f"{path}: missing key {key!r} (found: {keys})")


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
