"""Per-dataset facts: image shape, normalisation and augmentation (Sec. 4.1)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    channels: int
    size: int                       # training crop size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool                 # ArraySplit (device-resident) or FolderSplit (DataLoader)
    pad: int = 4                    # random crop padding for in-memory data
    test_resize: int = 256          # folder data only: Resize(256) + CenterCrop(224)


SPECS = {
    # the official CIFAR code's statistics (METHOD-NOTES)
    "cifar100": DataSpec(3, 32, (0.5071, 0.4866, 0.4409), (0.2009, 0.1984, 0.2023), True),
    "fashion_mnist": DataSpec(1, 28, (0.2860,), (0.3530,), True),
    "synthetic": DataSpec(3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True),
    "imagenet": DataSpec(3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    "imagenet_subset": DataSpec(3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
}


def spec_for(source: str) -> DataSpec:
    return SPECS[source]
