"""Batched augmentation correctness/determinism and BatchLoader order, resume and DDP sharding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prunekit.data import BatchLoader, Shard, get_dataset
from prunekit.data import transforms as T
from prunekit.errors import PrunekitError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shift(img: torch.Tensor, sy: int, sx: int) -> torch.Tensor:
    """Content moved down by sy, right by sx, zero fill (what a padded crop must produce)."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)] = \
        img[..., max(-sy, 0):h - max(sy, 0), max(-sx, 0):w - max(sx, 0)]
    return out


# ---------------------------------------------------------------------------------------------- transforms
def test_hflip_reverses_last_axis_exactly():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)
    assert torch.equal(T.random_hflip(x, _gen(0), p=1.0), x.flip(-1))
    assert torch.equal(T.random_hflip(x, _gen(0), p=0.0), x)
    y = T.random_hflip(x.repeat(50, 1, 1, 1), _gen(1))
    flipped = [torch.equal(y[i], x[i % 2].flip(-1)) for i in range(100)]
    kept = [torch.equal(y[i], x[i % 2]) for i in range(100)]
    assert all(f != k for f, k in zip(flipped, kept)) and 30 < sum(flipped) < 70


def test_crop_with_padding_shifts_content_with_zero_fill():
    base = torch.zeros(1, 2, 6, 6, dtype=torch.uint8)
    base[0, 0, 2:4, 1:5] = torch.tensor([[10, 20, 30, 40], [50, 60, 70, 80]], dtype=torch.uint8)
    base[0, 1] = 200
    x = base.repeat(300, 1, 1, 1)
    y = T.random_crop_with_padding(x, 1, _gen(7))
    assert y.shape == x.shape and y.dtype == torch.uint8
    seen = set()
    for i in range(300):
        matches = [(sy, sx) for sy in (-1, 0, 1) for sx in (-1, 0, 1) if torch.equal(y[i], _shift(base[0], sy, sx))]
        assert len(matches) == 1, f"sample {i} is not a zero-filled shift of the input"
        seen.add(matches[0])
    assert len(seen) == 9  # every offset in [-pad, pad]^2 occurs
    assert torch.equal(T.random_crop_with_padding(x, 0, _gen(7)), x)


def test_reflect_pad_then_crop_equals_hand_built_crops():
    """GPMT's augmentation: F.pad(x, (p,)*4, mode='reflect') then a random crop back to H x W."""
    x = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8).view(1, 1, 3, 3).repeat(200, 1, 1, 1)
    padded = torch.tensor([[5, 4, 5, 6, 5],  # reflect: the row/column beyond an edge mirrors the one inside it
                           [2, 1, 2, 3, 2],
                           [5, 4, 5, 6, 5],
                           [8, 7, 8, 9, 8],
                           [5, 4, 5, 6, 5]], dtype=torch.uint8)
    y = T.random_crop_with_padding(x, 1, _gen(5), mode="reflect")
    g = _gen(5)  # the documented draws: dy for every sample, then dx, each uniform in [0, 2*pad]
    dy, dx = torch.randint(3, (200,), generator=g), torch.randint(3, (200,), generator=g)
    expected = torch.stack([padded[a:a + 3, b:b + 3] for a, b in zip(dy.tolist(), dx.tolist())]).unsqueeze(1)
    assert y.dtype == torch.uint8 and torch.equal(y, expected)
    assert len({(a, b) for a, b in zip(dy.tolist(), dx.tolist())}) == 9
    # the same offsets whatever the mode: centre crops agree, zero-fill differs only at the border
    z = T.random_crop_with_padding(x, 1, _gen(5))
    centre = (dy == 1) & (dx == 1)
    assert torch.equal(z[centre], y[centre]) and not torch.equal(z, y)
    assert torch.equal(T.random_crop_with_padding(x, T.CropPad(1, "reflect"), _gen(5)), y)  # mode carried by pad


def test_reflect_pad_errors_and_dataset_option():
    with pytest.raises(PrunekitError, match="reflect padding of 3 pixels needs images larger"):
        T.random_crop_with_padding(torch.zeros(1, 1, 3, 3), 3, _gen(0), mode="reflect")
    with pytest.raises(PrunekitError, match="pad_mode must be one of"):
        T.random_crop_with_padding(torch.zeros(1, 1, 3, 3), 1, _gen(0), mode="wrap")
    from prunekit.data import dataset_info, parse_dataset_name

    assert parse_dataset_name("cifar10:pad_mode=reflect") == ("cifar10", {"pad_mode": "reflect"})
    assert dataset_info("cifar10:pad_mode=reflect")["image_size"] == (32, 32)
    ds = get_dataset("synthetic:n=16,size=8,pad_mode=reflect")
    assert ds.augment.crop_pad == 1 and ds.augment.crop_pad.mode == "reflect"
    assert ds.describe()["augment"] == "pad-1 (reflect) crop + hflip"
    g = _gen(2)  # train_transform draws the crop offsets then the flips from one generator
    cropped = T.random_crop_with_padding(ds.images, 1, g, mode="reflect")
    assert torch.equal(ds.train_transform(ds.images, _gen(2)), T.normalize(T.random_hflip(cropped, g), ds.mean,
                                                                           ds.std))
    assert get_dataset("digits:pad=0").augment.crop_pad == 0
    assert get_dataset("synthetic:n=4,pad=3").augment.crop_pad == 3
    with pytest.raises(PrunekitError, match="pad_mode=reflect needs pad"):
        get_dataset("digits:pad=8,pad_mode=reflect")
    with pytest.raises(PrunekitError, match="option pad_mode must be one of"):
        get_dataset("digits:pad_mode=mirror")
    with pytest.raises(PrunekitError, match="has no option pad_mode"):
        dataset_info("imagenet:pad_mode=reflect")


def test_augmentation_same_seed_identical_different_seed_differs():
    ds = get_dataset("synthetic:n=32,size=16")
    a = ds.train_transform(ds.images, _gen(3))
    b = ds.train_transform(ds.images, _gen(3))
    c = ds.train_transform(ds.images, _gen(4))
    assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_exact_values():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    y = T.normalize(x, (0.5,), (0.25,))
    assert y.flatten().tolist() == [-2.0, 2.0]
    with pytest.raises(PrunekitError, match="3 channels"):
        T.normalize(torch.zeros(1, 3, 2, 2), (0.5,), (0.25,))


def test_default_pad_rule():
    assert [T.default_pad(h) for h in (8, 16, 28, 32, 224)] == [1, 2, 3, 4, 28]


def test_resized_crop_params_fallback_and_range():
    # no attempt fits (area 1.0 at aspect 1 needs a 14x14 box in a 20x10 image): centred box, ratio clamped
    u = torch.full((10,), 0.5)
    assert T.resized_crop_params(20, 10, u, u, torch.zeros(10, 2), (1.0, 1.0), (1.0, 1.0)) == (5, 0, 10, 10)
    g = _gen(0)
    for _ in range(200):
        r = torch.rand(10, 4, generator=g, dtype=torch.float64)
        top, left, h, w = T.resized_crop_params(37, 53, r[:, 0], r[:, 1], r[:, 2:], (0.08, 1.0), (0.75, 4 / 3))
        assert 0 <= top and top + h <= 37 and 0 <= left and left + w <= 53 and h > 0 and w > 0


def test_imagenet_transforms_output_sizes():
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=_gen(h)) for h, w in ((40, 60), (300, 90))]
    out = T.random_resized_crop(imgs, _gen(0), size=32)
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, T.random_resized_crop(imgs, _gen(0), size=32))
    ev = T.resize_center_crop(imgs, resize=36, crop=32)
    assert ev.shape == (2, 3, 32, 32)
    const = torch.full((1, 3, 50, 70), 77, dtype=torch.uint8)  # a constant image stays constant
    assert torch.allclose(T.resize_center_crop(const, 36, 32), torch.full((1, 3, 32, 32), 77.0))


# ---------------------------------------------------------------------------------------------- loader
def _collect(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_epoch_determinism_and_resume():
    ds = get_dataset("synthetic:n=40,size=8")
    run = BatchLoader(ds, batch_size=16, shuffle=True, seed=5)
    assert len(run) == 3
    epochs = []
    for e in range(3):
        run.set_epoch(e)
        epochs.append(_collect(run))
    assert [x.shape[0] for x, _ in epochs[0]] == [16, 16, 8]
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])  # new order per epoch
    resumed = BatchLoader(ds, batch_size=16, shuffle=True, seed=5)
    resumed.set_epoch(2)
    for (x, y), (x2, y2) in zip(epochs[2], _collect(resumed)):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    again = _collect(resumed)  # no set_epoch: the same epoch again
    assert torch.equal(again[1][0], epochs[2][1][0])
    labels = torch.cat([y for _, y in epochs[0]])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())


def test_loader_same_order_new_augmentation_each_epoch_without_shuffle():
    ds = get_dataset("synthetic:n=8,size=8")
    ld = BatchLoader(ds, batch_size=8, shuffle=False, seed=0)
    (x0, y0), = _collect(ld)
    ld.set_epoch(1)
    (x1, y1), = _collect(ld)
    assert torch.equal(y0, ds.labels) and torch.equal(y1, ds.labels) and not torch.equal(x0, x1)
    ev = BatchLoader(ds, batch_size=8, shuffle=False, seed=0, train=False)
    (xe, _), = _collect(ev)
    assert torch.equal(xe, T.normalize(ds.images, ds.mean, ds.std))


@pytest.mark.parametrize("name", ["synthetic:n=40,size=8", "digits"])
def test_two_ranks_reproduce_single_process_batches(name):
    ds = get_dataset(name)
    single = BatchLoader(ds, batch_size=8, shuffle=True, seed=11, drop_last=False, limit=40)
    ranks = [BatchLoader(ds, batch_size=8, shuffle=True, seed=11, rank=r, world_size=2, limit=40) for r in (0, 1)]
    for ld in [single, *ranks]:
        ld.set_epoch(4)
    ref, parts = _collect(single), [_collect(r) for r in ranks]
    assert len(ref) == len(parts[0]) == len(parts[1]) == 5
    for b, (x, y) in enumerate(ref):
        for r in (0, 1):
            xr, yr = parts[r][b]
            assert xr.shape[0] == 4
            assert torch.equal(xr, x[r::2]) and torch.equal(yr, y[r::2])


def test_two_ranks_folder_dataset_match_single_process(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(3):
                (tmp_path / split / c).mkdir(parents=True, exist_ok=True)
                arr = rng.randint(0, 256, size=(12 + 3 * i, 15, 3)).astype(np.uint8)
                Image.fromarray(arr).save(tmp_path / split / c / f"{i}.png")
    ds = get_dataset("imagenet:crop_size=8,resize_size=10", root=str(tmp_path))
    single = _collect(BatchLoader(ds, batch_size=4, shuffle=True, seed=2))
    parts = [_collect(BatchLoader(ds, batch_size=4, shuffle=True, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    assert [x.shape[0] for x, _ in single] == [4, 2]
    for b, (x, y) in enumerate(single):
        for r in (0, 1):
            assert torch.equal(parts[r][b][0], x[r::2]) and torch.equal(parts[r][b][1], y[r::2])


def test_sharding_pads_like_distributed_sampler_or_stays_exact():
    ds = get_dataset("synthetic:n=7,size=4")
    padded = [BatchLoader(ds, 4, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    idx = [torch.cat([i for i, _, _ in ld.batches()]) for ld in padded]
    assert len(idx[0]) == len(idx[1]) == 4 and len(padded[0]) == len(padded[1]) == 2
    order = padded[0].global_order()
    assert order.tolist()[7] == order.tolist()[0] and sorted(order[:7].tolist()) == list(range(7))
    exact = [BatchLoader(ds, 4, shuffle=True, seed=1, rank=r, world_size=2, pad_shards=False) for r in (0, 1)]
    idx = [torch.cat([i for i, _, _ in ld.batches()]) for ld in exact]
    assert sorted(torch.cat(idx).tolist()) == list(range(7)) and (len(idx[0]), len(idx[1])) == (4, 3)
    single = [i for i, _, _ in BatchLoader(ds, 4, shuffle=True, seed=1, drop_last=True).batches()]
    assert len(single) == 1 and len(single[0]) == 4


def test_loader_argument_errors():
    ds = get_dataset("synthetic:n=8,size=4")
    with pytest.raises(PrunekitError, match="not divisible by world size 3"):
        BatchLoader(ds, 8, rank=0, world_size=3)
    with pytest.raises(PrunekitError, match="rank 2"):
        BatchLoader(ds, 8, rank=2, world_size=2)
    with pytest.raises(PrunekitError, match="Shard"):
        T.random_hflip(torch.zeros(3, 1, 2, 2), _gen(0), shard=Shard(0, 2, 4))
    assert BatchLoader(ds, 3, limit=5).num_samples == 5 and len(BatchLoader(ds, 3, limit=5)) == 2
