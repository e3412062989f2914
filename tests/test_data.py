"""Class order, synthetic data, batched augmentation against torchvision's per-sample transforms, relabelling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from ucir.config import resolve
from ucir.data import load_run_data
from ucir.data.augment import crop_flip, draw_crop_flip, normalize
from ucir.data.order import class_order, positions
from ucir.data.splits import ArraySplit, indices_of_classes, relabel, subsample_per_class
from ucir.data.synthetic import make_synthetic

torch.set_num_threads(2)


# ------------------------------------------------------------------------------------------------ class order

def test_official_class_order():
    order = class_order(100, 1993)
    assert order[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    ref = np.arange(100)
    np.random.RandomState(1993).shuffle(ref)                      # the legacy generator the official code seeds
    assert order == ref.tolist()
    assert sorted(order) == list(range(100))
    assert class_order(100, 1994) != order
    assert class_order(100, 0) != order


def test_class_order_leaves_global_numpy_rng_alone():
    np.random.seed(123)
    expected = np.random.random(5)
    np.random.seed(123)
    class_order(100, 1993)
    class_order(10, 5)
    np.testing.assert_array_equal(np.random.random(5), expected)


def test_positions_inverse():
    order = class_order(20, 3)
    inv = positions(order)
    for pos, c in enumerate(order):
        assert inv[c] == pos


# ------------------------------------------------------------------------------------------------ synthetic

def test_synthetic_deterministic_and_balanced():
    tr1, te1 = make_synthetic(5, 12, 4, seed=3)
    tr2, te2 = make_synthetic(5, 12, 4, seed=3)
    tr3, _ = make_synthetic(5, 12, 4, seed=4)
    assert torch.equal(tr1.images, tr2.images) and torch.equal(te1.images, te2.images)
    assert torch.equal(tr1.targets, tr2.targets)
    assert not torch.equal(tr1.images, tr3.images)
    assert tr1.images.dtype == torch.uint8 and tr1.images.shape == (60, 3, 32, 32)
    assert te1.images.shape == (20, 3, 32, 32)
    assert torch.bincount(tr1.targets).tolist() == [12] * 5
    assert torch.bincount(te1.targets).tolist() == [4] * 5
    assert not torch.equal(tr1.images[:4], te1.images[:4])        # test images are fresh draws
    # images use the range and are not constant
    assert int(tr1.images.max()) > 200 and int(tr1.images.min()) < 50
    per_class = [tr1.images[tr1.targets == c].float().mean(0) for c in range(5)]
    assert min(float((per_class[a] - per_class[b]).abs().mean()) for a in range(5) for b in range(a)) > 1.0


# ------------------------------------------------------------------------------------------------ augmentation

def _reference(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    """Per-sample pipeline: RandomCrop(size, padding=pad) + RandomHorizontalFlip with the given parameters."""
    h, w = img.shape[-2:]
    out = TF.crop(TF.pad(img, [pad]), dy, dx, h, w)
    return TF.hflip(out) if flip else out


@pytest.mark.parametrize("c,size", [(3, 32), (1, 28)])
def test_crop_flip_matches_torchvision(c, size):
    g = torch.Generator().manual_seed(c)
    n, pad = 24, 4
    x = torch.randint(1, 256, (n, c, size, size), generator=g, dtype=torch.uint8)   # 1..255: pad zeros visible
    dy, dx, flip = draw_crop_flip(n, pad, torch.Generator().manual_seed(10 + c))
    got = crop_flip(x, dy, dx, flip, pad)
    assert got.shape == x.shape and got.dtype == torch.uint8
    for i in range(n):
        assert torch.equal(got[i], _reference(x[i], int(dy[i]), int(dx[i]), bool(flip[i]), pad)), i
    # explicit corner cases
    zeros = torch.zeros(2, dtype=torch.long)
    full = torch.full((2,), 2 * pad, dtype=torch.long)
    no = torch.zeros(2, dtype=torch.bool)
    assert torch.equal(crop_flip(x[:2], torch.full((2,), pad), torch.full((2,), pad), no, pad), x[:2])
    top_left = crop_flip(x[:2], zeros, zeros, no, pad)
    assert torch.all(top_left[:, :, :pad, :] == 0) and torch.equal(top_left[:, :, pad:, pad:], x[:2, :, :-pad, :-pad])
    bottom_right = crop_flip(x[:2], full, full, torch.ones(2, dtype=torch.bool), pad)
    assert torch.equal(bottom_right, TF.hflip(TF.crop(TF.pad(x[:2], [pad]), 2 * pad, 2 * pad, size, size)))


def test_draw_crop_flip_ranges_and_seed():
    dy, dx, flip = draw_crop_flip(4000, 4, torch.Generator().manual_seed(0))
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))
    assert 0.45 < float(flip.float().mean()) < 0.55
    again = draw_crop_flip(4000, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((dy, dx, flip), again))


def test_normalize():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)   # 1 x 2 x 1 x 2
    mean = torch.tensor([0.5, 0.2]).view(2, 1, 1)
    std = torch.tensor([0.25, 0.1]).view(2, 1, 1)
    exp = torch.tensor([[[[(0 - 0.5) / 0.25, (1 - 0.5) / 0.25]], [[(0.2 - 0.2) / 0.1, (0.4 - 0.2) / 0.1]]]])
    torch.testing.assert_close(normalize(x, mean, std), exp)


# ------------------------------------------------------------------------------------------------ relabelling

def test_relabel_and_indices_of_classes():
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, 10, (80,), generator=g)
    images = torch.randint(0, 256, (80, 3, 2, 2), generator=g, dtype=torch.uint8)
    order = class_order(10, 11)
    split = relabel(ArraySplit(images, targets), positions(order))
    assert torch.equal(split.images, images)
    for i in range(80):
        assert int(split.targets[i]) == order.index(int(targets[i]))
    n_old = 4
    old = indices_of_classes(split.targets, 0, n_old).tolist()
    assert old == [i for i in range(80) if int(targets[i]) in order[:n_old]]
    new = indices_of_classes(split.targets, n_old, 6).tolist()
    assert new == [i for i in range(80) if int(targets[i]) in order[n_old:6]]


def test_load_run_data_relabels_synthetic():
    cfg = resolve("lucir", dict(num_classes=6, base_classes=4, phases=1, seed=5, source="synthetic",
                                train_per_class=7, test_per_class=3, backbone="resnet8"))
    data = load_run_data(cfg, torch.device("cpu"))
    raw_train, raw_test = make_synthetic(6, 7, 3)
    order = class_order(6, 5)
    assert data.order == order
    assert torch.equal(data.train.images, raw_train.images)
    assert data.train.targets.tolist() == [order.index(int(t)) for t in raw_train.targets]
    assert data.test.targets.tolist() == [order.index(int(t)) for t in raw_test.targets]
    base = data.train_indices(0, 4).tolist()
    assert base == [i for i, t in enumerate(raw_train.targets.tolist()) if t in order[:4]]
    assert len(base) == 28 and set(data.train.targets[base].tolist()) == {0, 1, 2, 3}
    assert data.test_indices(4, 5).tolist() == [i for i, t in enumerate(raw_test.targets.tolist()) if t == order[4]]


def test_subsample_per_class():
    targets = torch.tensor([0] * 10 + [1] * 3 + [2] * 6)
    split = ArraySplit(torch.arange(19, dtype=torch.uint8).view(19, 1, 1, 1), targets)
    sub = subsample_per_class(split, 4, seed=0)
    assert torch.bincount(sub.targets).tolist() == [4, 3, 4]
    kept = sub.images.flatten().tolist()
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    assert all(int(targets[k]) == int(t) for k, t in zip(kept, sub.targets))
    assert subsample_per_class(split, 4, seed=0).images.flatten().tolist() == kept
    assert subsample_per_class(split, None) is split
