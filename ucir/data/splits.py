"""The two shapes a dataset split takes inside the package.

ArraySplit holds the whole split in memory as uint8 (CIFAR-100, Fashion-MNIST, synthetic): it can live on the
training device and be augmented there in batches. FolderSplit is a list of image files (ImageNet), decoded by
torchvision through a DataLoader. `targets` are original class ids until `relabel` maps them to positions in the
class order, after which old classes are always 0..n_old-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ArraySplit:
    images: torch.Tensor   # N x C x H x W, uint8
    targets: torch.Tensor  # N, int64

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class FolderSplit:
    samples: list[tuple[str, int]]  # (path, original class id)
    targets: torch.Tensor           # N, int64

    def __len__(self) -> int:
        return len(self.targets)


Split = ArraySplit | FolderSplit


def relabel(split: Split, inverse_order: np.ndarray) -> Split:
    """Targets become positions in the class order (inverse_order[original] = position)."""
    targets = torch.as_tensor(inverse_order, dtype=torch.int64)[split.targets]
    if isinstance(split, ArraySplit):
        return ArraySplit(split.images, targets)
    return FolderSplit([(p, int(t)) for (p, _), t in zip(split.samples, targets)], targets)


def subsample_per_class(split: Split, per_class: int | None, seed: int = 0) -> Split:
    """Keep at most `per_class` images of every class, chosen by a fixed seed (independent of the class order,
    so every run of a grid sees the same images)."""
    if per_class is None:
        return split
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(split.targets):
        idx = torch.nonzero(split.targets == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]].sort().values)
    keep = torch.cat(keep).sort().values
    if isinstance(split, ArraySplit):
        return ArraySplit(split.images[keep], split.targets[keep])
    return FolderSplit([split.samples[i] for i in keep.tolist()], split.targets[keep])


def indices_of_classes(targets: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Indices of the samples whose (position) label lies in [lo, hi)."""
    return torch.nonzero((targets >= lo) & (targets < hi)).flatten()
