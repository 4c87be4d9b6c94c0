"""Batched image augmentation that runs on the training device.

Every function takes a whole batch (a uint8 or float tensor ``[N, C, H, W]`` on any device; the ImageNet
functions also accept a list of ``[C, H, W]`` tensors of different sizes) and draws all of its randomness from an
explicit :class:`torch.Generator`, so a fixed seed gives bit-identical batches.

Random numbers are drawn *per sample, for a whole global batch*: with ``shard=Shard(rank, world_size, total)``
a function draws the numbers of all ``total`` samples of the global batch and keeps rows ``rank::world_size``,
which is exactly the part of the global batch this rank holds (see :mod:`prunekit.data.loader`). A 2-process
run therefore sees the same augmented samples as a 1-process run. Draws happen on the generator's device (a CPU
generator is the usual choice; the few numbers are then moved to the batch's device), so CPU and GPU runs with
the same seed crop and flip identically.

Pixel scale: uint8 input is 0..255; float input to the geometric functions is assumed to use the same 0..255
scale; :func:`normalize` turns either into ``(x / 255 - mean) / std`` in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import PrunekitError

Batch = Union[torch.Tensor, Sequence[torch.Tensor]]

IMAGENET_CROP = 224
IMAGENET_RESIZE = 256


@dataclass(frozen=True)
class Shard:
    """This process holds rows ``rank::world_size`` of a global batch of ``total`` samples."""

    rank: int
    world_size: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise PrunekitError(f"shard rank {self.rank} is outside [0, {self.world_size})")
        if self.total < 0:
            raise PrunekitError(f"shard total must be >= 0, got {self.total}")

    def local_size(self) -> int:
        """How many of the ``total`` rows belong to this rank."""
        return len(range(self.rank, self.total, self.world_size))


PAD_MODES = ("constant", "reflect", "replicate")


class CropPad(int):
    """The padding of the pad + random-crop augmentation: an ``int`` (pixels per side) carrying a padding ``mode``.

    ``mode``: ``"constant"`` (zeros, CIFAR's usual pad-4 crop), ``"reflect"`` (mirror without repeating the edge
    pixel: GPMT's ``F.pad(x, (4, 4, 4, 4), mode='reflect')`` before ``RandomCrop(32)``) or ``"replicate"`` (repeat
    the edge pixel). Being an ``int``, it can stand wherever a padding amount is expected (``Augment.crop_pad``);
    :func:`random_crop_with_padding` reads its mode. Compares equal to the plain ``int``.
    """

    mode: str

    def __new__(cls, pad: int, mode: str = "constant") -> "CropPad":
        if mode not in PAD_MODES:
            raise PrunekitError(f"pad_mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
        if isinstance(pad, bool) or int(pad) != pad or int(pad) < 0:
            raise PrunekitError(f"crop padding must be a non-negative integer, got {pad!r}")
        obj = super().__new__(cls, int(pad))
        obj.mode = mode
        return obj

    def __reduce__(self):  # pickles / deep-copies with its mode
        return (CropPad, (int(self), self.mode))

    def __repr__(self) -> str:
        return f"CropPad({int(self)}, mode={self.mode!r})"

    def __format__(self, spec: str) -> str:
        text = format(int(self), spec)
        return text if spec or self.mode == "constant" else f"{text} ({self.mode})"

    def __str__(self) -> str:
        return format(self, "")


def default_pad(height: int) -> int:
    """Padding for :func:`random_crop_with_padding`: ``max(1, H // 8)`` (4 for 32x32, 3 for 28x28, 1 for 8x8)."""
    return max(1, int(height) // 8)


def _draw_uniform(generator: torch.Generator, n: int, shape: tuple[int, ...], shard: Shard | None) -> torch.Tensor:
    """Uniform [0, 1) float64 numbers of shape ``(n, *shape)`` (the rows of this shard), on the CPU."""
    total = n if shard is None else shard.total
    u = torch.rand((total, *shape), generator=generator, dtype=torch.float64, device=generator.device)
    if shard is not None:
        u = u[shard.rank::shard.world_size]
        if u.shape[0] != n:
            raise PrunekitError(f"shard {shard} holds {u.shape[0]} samples but the batch has {n}")
    return u.cpu()


def _draw_int(generator: torch.Generator, n: int, high: int, shard: Shard | None) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` for the ``n`` samples of this shard (int64, CPU)."""
    total = n if shard is None else shard.total
    v = torch.randint(high, (total,), generator=generator, device=generator.device)
    if shard is not None:
        v = v[shard.rank::shard.world_size]
        if v.shape[0] != n:
            raise PrunekitError(f"shard {shard} holds {v.shape[0]} samples but the batch has {n}")
    return v.cpu()


def _check_batch(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise PrunekitError(f"{what} expects a batch tensor [N, C, H, W], got {shape}")


def random_crop_with_padding(x: torch.Tensor, pad: int, generator: torch.Generator, *, mode: str | None = None,
                             shard: Shard | None = None) -> torch.Tensor:
    """Pad each side by ``pad`` pixels, then take a random ``H x W`` crop per sample (CIFAR's pad-4 crop).

    ``mode``: ``"constant"`` (zero fill, the default), ``"reflect"`` or ``"replicate"`` (see :class:`CropPad`);
    ``None`` takes the mode of a :class:`CropPad` ``pad`` (else ``"constant"``). Reflect padding needs ``pad``
    smaller than the image height and width. Offsets ``(dy, dx)`` are drawn uniformly from ``[0, 2*pad]`` (dy
    first, for all samples, then dx; the same draws whatever the mode); output dtype and device equal the
    input's. Vectorised: one gather for the whole batch.
    """
    _check_batch(x, "random_crop_with_padding")
    if pad < 0:
        raise PrunekitError(f"crop padding must be >= 0, got {pad}")
    mode = getattr(pad, "mode", "constant") if mode is None else mode
    if mode not in PAD_MODES:
        raise PrunekitError(f"pad_mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")
    pad = int(pad)
    n, c, h, w = x.shape
    if mode == "reflect" and pad > 0 and (pad >= h or pad >= w):
        raise PrunekitError(f"reflect padding of {pad} pixels needs images larger than {pad}x{pad}, got {h}x{w}")
    dy = _draw_int(generator, n, 2 * pad + 1, shard)
    dx = _draw_int(generator, n, 2 * pad + 1, shard)
    if pad == 0 or n == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dev = x.device
    rows = (dy.to(dev)[:, None] + torch.arange(h, device=dev)[None, :])  # [N, H]
    cols = (dx.to(dev)[:, None] + torch.arange(w, device=dev)[None, :])  # [N, W]
    n_idx = torch.arange(n, device=dev)[:, None, None, None]
    c_idx = torch.arange(c, device=dev)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, *,
                 shard: Shard | None = None) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p`` (one uniform draw per sample)."""
    _check_batch(x, "random_hflip")
    n = x.shape[0]
    flip = _draw_uniform(generator, n, (), shard) < p
    if n == 0:
        return x
    mask = flip.to(x.device)[:, None, None, None]
    return torch.where(mask, x.flip(-1), x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, float32; ``x`` is uint8 or float on the 0..255 scale."""
    _check_batch(x, "normalize")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise PrunekitError(f"normalize: batch has {c} channels but mean/std have {len(mean)}/{len(std)} entries")
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    return x.to(torch.float32).div(255.0).sub(m).div(s)


def _as_list(batch: Batch, what: str) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        _check_batch(batch, what)
        return list(batch.unbind(0))
    items = list(batch)
    for i, img in enumerate(items):
        if not isinstance(img, torch.Tensor) or img.dim() != 3:
            raise PrunekitError(f"{what}: sample {i} must be a [C, H, W] tensor")
    return items


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of one [C, H, W] image to float32 [C, *size] on the 0..255 scale."""
    x = img.to(torch.float32).unsqueeze(0)
    if tuple(x.shape[-2:]) == tuple(size):
        return x[0]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def resized_crop_params(height: int, width: int, u_scale: torch.Tensor, u_ratio: torch.Tensor,
                        u_pos: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float]
                        ) -> tuple[int, int, int, int]:
    """The crop box ``(top, left, h, w)`` of a random-resized-crop given pre-drawn uniforms.

    Same rule as the usual RandomResizedCrop: up to ``len(u_scale)`` attempts of area fraction in ``scale`` and
    log-uniform aspect ratio in ``ratio``; the first box that fits wins, its position drawn from ``u_pos`` (2
    uniforms per attempt). If none fits: the largest centred box whose aspect ratio is clamped into ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for a in range(u_scale.shape[0]):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(u_scale[a]))
        aspect = math.exp(log_lo + (log_hi - log_lo) * float(u_ratio[a]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(float(u_pos[a, 0]) * (height - h + 1)), height - h)
            left = min(int(float(u_pos[a, 1]) * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(batch: Batch, generator: torch.Generator, size: int = IMAGENET_CROP,
                        scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        attempts: int = 10, *, shard: Shard | None = None) -> torch.Tensor:
    """ImageNet training crop: random area/aspect box per sample, resized to ``size x size``.

    Draws a fixed ``4 * attempts`` uniforms per sample whatever the image sizes (so draws never depend on the
    data), crops each sample and resizes it with antialiased bilinear interpolation. Returns float32
    ``[N, C, size, size]`` on the 0..255 scale, on the input's device.
    """
    images = _as_list(batch, "random_resized_crop")
    n = len(images)
    u = _draw_uniform(generator, n, (attempts, 4), shard)
    out = []
    for k, img in enumerate(images):
        h_img, w_img = int(img.shape[-2]), int(img.shape[-1])
        top, left, h, w = resized_crop_params(h_img, w_img, u[k, :, 0], u[k, :, 1], u[k, :, 2:], scale, ratio)
        out.append(_resize(img[:, top:top + h, left:left + w], (size, size)))
    if not out:
        raise PrunekitError("random_resized_crop got an empty batch")
    return torch.stack(out)


def resize_center_crop(batch: Batch, resize: int = IMAGENET_RESIZE, crop: int = IMAGENET_CROP) -> torch.Tensor:
    """ImageNet evaluation: resize the short side to ``resize`` (aspect kept), then centre-crop ``crop x crop``.

    Returns float32 ``[N, C, crop, crop]`` on the 0..255 scale. A batch tensor of equal-size images is resized in
    one call; a list of differently sized images is resized one by one.
    """
    images = _as_list(batch, "resize_center_crop")
    if not images:
        raise PrunekitError("resize_center_crop got an empty batch")
    out = []
    groups = [batch] if isinstance(batch, torch.Tensor) else [img.unsqueeze(0) for img in images]
    for g in groups:
        h, w = int(g.shape[-2]), int(g.shape[-1])
        if h <= w:
            new_h, new_w = resize, int(resize * w / h)
        else:
            new_h, new_w = int(resize * h / w), resize
        if new_h < crop or new_w < crop:
            raise PrunekitError(f"resize_center_crop: resize {resize} is smaller than crop {crop}")
        x = g.to(torch.float32)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top = int(round((new_h - crop) / 2.0))
        left = int(round((new_w - crop) / 2.0))
        out.append(x[:, :, top:top + crop, left:left + crop])
    return torch.cat(out)
