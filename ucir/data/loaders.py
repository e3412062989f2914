"""Batches for training, feature extraction and evaluation, on the training device.

In-memory splits (ArraySplit) are moved to the device once as uint8 and cropped, flipped and normalised there in
batches. Folder splits (ImageNet) go through torchvision transforms in a DataLoader with workers, pinned memory
and persistent workers. Both yield (x: N x C x H x W float on device, y: N int64 on device).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import crop_flip, index_batches, normalize
from .specs import DataSpec
from .splits import ArraySplit, FolderSplit, Split


class DeviceArrays:
    """An ArraySplit resident on the device as uint8 (moved once per process)."""

    def __init__(self, split: ArraySplit, spec: DataSpec, device: torch.device):
        self.images = split.images.to(device)
        self.targets = split.targets.to(device)
        self.spec = spec
        self.device = device
        self.mean = torch.tensor(spec.mean, device=device).view(-1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(-1, 1, 1)

    def batches(self, indices: torch.Tensor, batch_size: int, train: bool,
                g: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, draws in index_batches(indices, batch_size, train, self.spec.pad, g):
            dev_idx = idx.to(self.device)
            x = self.images[dev_idx]
            if draws is not None:
                x = crop_flip(x, *draws, self.spec.pad)
            yield normalize(x, self.mean, self.std), self.targets[dev_idx]


class _FolderDataset(Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image
        path, target = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), target


class FolderImages:
    """A FolderSplit decoded by torchvision: RandomResizedCrop(224) + flip for training, Resize(256) +
    CenterCrop(224) for testing (Sec. 4.1)."""

    def __init__(self, split: FolderSplit, spec: DataSpec, device: torch.device, workers: int = 8):
        from torchvision import transforms as T  # imported only for folder datasets
        self.split, self.spec, self.device, self.workers = split, spec, device, workers
        norm = T.Normalize(spec.mean, spec.std)
        self.train_tf = T.Compose([T.RandomResizedCrop(spec.size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        self.test_tf = T.Compose([T.Resize(spec.test_resize), T.CenterCrop(spec.size), T.ToTensor(), norm])

    def batches(self, indices: torch.Tensor, batch_size: int, train: bool,
                g: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        samples = [self.split.samples[i] for i in indices.tolist()]
        ds = _FolderDataset(samples, self.train_tf if train else self.test_tf)
        cuda = self.device.type == "cuda"
        loader = DataLoader(ds, batch_size=batch_size, shuffle=train, generator=g if train else None,
                            num_workers=self.workers, pin_memory=cuda,
                            persistent_workers=self.workers > 0)
        for x, y in loader:
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)


def on_device(split: Split, spec: DataSpec, device: torch.device, workers: int = 8) -> DeviceArrays | FolderImages:
    if isinstance(split, ArraySplit):
        return DeviceArrays(split, spec, device)
    return FolderImages(split, spec, device, workers)
