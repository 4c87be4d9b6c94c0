"""``BatchLoader``: deterministic, shardable batch iteration that yields device tensors ready for the model.

Determinism contract (what makes resume and DDP exact):

* The sample order of an epoch is ``torch.randperm(N)`` under a generator seeded from ``(seed, epoch)`` only
  (``arange(N)`` without shuffling). Call :meth:`BatchLoader.set_epoch` before each epoch; iterating again
  without it repeats the same epoch.
* With ``world_size > 1`` the order is padded to a multiple of ``world_size`` by repeating its first entries
  (as ``DistributedSampler`` does) and rank ``r`` takes ``order[r::world_size]``. ``batch_size`` is the GLOBAL
  batch: each rank yields ``batch_size // world_size`` samples per step, and the samples of step ``b`` over all
  ranks are exactly global batch ``b`` of a 1-process run.
* Augmentation randomness for step ``b`` comes from a CPU generator seeded from ``(seed, epoch, b)``; it is drawn
  for the whole global batch and each rank keeps its rows (:class:`~prunekit.data.transforms.Shard`), so the
  augmented tensors of a 2-rank run equal those of the 1-rank run, bit for bit.

``limit=n`` uses only the first ``n`` samples of the dataset (clamped to its size), for quick runs; use
:func:`prunekit.data.subset` for a seeded random subset. ``pad_shards=False`` gives disjoint, unpadded shards
whose union is the dataset exactly (for sharded evaluation; ranks may then yield different numbers of batches).
"""
from __future__ import annotations

import hashlib
import math
import struct
from typing import Iterator

import torch

from ..errors import PrunekitError
from .base import ImageDataset
from .transforms import Shard

_PERM_STREAM, _AUG_STREAM = 1, 2


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of integer ``parts`` (stable across processes and runs)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *(int(p) for p in parts)), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class _FolderView(torch.utils.data.Dataset):
    """What the DataLoader workers see: decode sample ``i`` of a folder dataset."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[i]


def _collate_list(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [img for img, _ in items], torch.tensor([lab for _, lab in items], dtype=torch.int64)


class BatchLoader:
    """Iterate ``(inputs, targets)``: float32 normalised inputs and int64 targets, both on ``device``.

    ``train=True`` applies ``dataset.train_transform`` (augmentation), ``train=False`` ``eval_transform``.
    Tensor datasets are indexed directly (moved to ``device`` once when ``on_device``); folder datasets are
    decoded by a ``torch.utils.data.DataLoader`` with ``num_workers`` workers.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 train: bool = True, *, num_workers: int = 0, limit: int | None = None, pad_shards: bool = True,
                 on_device: bool = True) -> None:
        if batch_size < 1:
            raise PrunekitError(f"batch size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise PrunekitError(f"rank {rank} is invalid for world size {world_size}")
        if batch_size % world_size:
            raise PrunekitError(f"global batch size {batch_size} is not divisible by world size {world_size}")
        if num_workers < 0:
            raise PrunekitError(f"num_workers must be >= 0, got {num_workers}")
        if limit is not None and limit < 1:
            raise PrunekitError(f"limit must be >= 1 sample, got {limit}")
        if len(dataset) == 0:
            raise PrunekitError(f"dataset {dataset.name} is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.local_batch_size = self.batch_size // world_size
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = torch.device(device)
        self.train = bool(train)
        self.num_workers = int(num_workers)
        self.num_samples = len(dataset) if limit is None else min(int(limit), len(dataset))
        self.pad_shards = bool(pad_shards)
        self.on_device = bool(on_device)
        self.epoch = 0
        self._device_data: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------ order & batches
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def _padded_length(self) -> int:
        n, w = self.num_samples, self.world_size
        return math.ceil(n / w) * w if (self.pad_shards and w > 1) else n

    def global_order(self) -> torch.Tensor:
        """The epoch's sample order over all ranks (padded for sharding), int64 on the CPU."""
        n = self.num_samples
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _PERM_STREAM))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        extra = self._padded_length() - n
        if extra:
            order = torch.cat([order, order.repeat(math.ceil(extra / n))[:extra]])
        return order

    def _plan(self) -> list[tuple[int, int, int]]:
        """``(global batch index, start in the local shard, global batch size)`` of this rank's batches."""
        total, big, w = self._padded_length(), self.batch_size, self.world_size
        n_global = total // big if self.drop_last else math.ceil(total / big)
        plan, start = [], 0
        for b in range(n_global):
            size = min(big, total - b * big)
            local = len(range(self.rank, size, w))
            if local:
                plan.append((b, start, size))
                start += local
        return plan

    def __len__(self) -> int:
        return len(self._plan())

    def batches(self) -> list[tuple[torch.Tensor, Shard, int]]:
        """This rank's ``(dataset indices, shard of the global batch, global batch index)`` for the epoch."""
        local = self.global_order()[self.rank::self.world_size]
        out = []
        for b, start, size in self._plan():
            shard = Shard(self.rank, self.world_size, size)
            out.append((local[start:start + shard.local_size()], shard, b))
        return out

    def augment_generator(self, batch_index: int) -> torch.Generator:
        """The CPU generator of global batch ``batch_index`` in the current epoch."""
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _AUG_STREAM, batch_index))

    # ------------------------------------------------------------------------------------ iteration
    def _transform(self, x: torch.Tensor | list[torch.Tensor], shard: Shard, b: int) -> torch.Tensor:
        if self.train:
            return self.dataset.train_transform(x, self.augment_generator(b), shard=shard)
        return self.dataset.eval_transform(x)

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.dataset
        if not self.on_device or self.device.type == "cpu":
            return ds.images, ds.labels
        if self._device_data is None:
            n = self.num_samples
            self._device_data = (ds.images[:n].to(self.device), ds.labels[:n].to(self.device))
        return self._device_data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.batches()
        if self.dataset.is_tensor:
            yield from self._iter_tensor(plan)
        else:
            yield from self._iter_folder(plan)

    def _iter_tensor(self, plan: list[tuple[torch.Tensor, Shard, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self._tensors()
        non_blocking = self.device.type == "cuda"
        for idx, shard, b in plan:
            idx = idx.to(images.device)
            x = images[idx].to(self.device, non_blocking=non_blocking)
            y = labels[idx].to(self.device, non_blocking=non_blocking)
            yield self._transform(x, shard, b), y

    def _iter_folder(self, plan: list[tuple[torch.Tensor, Shard, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not plan:
            return
        pin = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(_FolderView(self.dataset), batch_sampler=[i.tolist() for i, _, _ in plan],
                                             num_workers=self.num_workers, collate_fn=_collate_list,
                                             pin_memory=pin)
        for (imgs, y), (_, shard, b) in zip(loader, plan):
            imgs = [img.to(self.device, non_blocking=pin) for img in imgs]
            yield self._transform(imgs, shard, b), y.to(self.device, non_blocking=pin)
