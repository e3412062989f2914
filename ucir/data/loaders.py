"""Batches for training, feature extraction and evaluation, on the training device.

In-memory splits (ArraySplit) are moved to the device once as uint8 and cropped, flipped and normalised there in
batches; an epoch's order and random draws go to the device in one copy, so a training step never waits for the
host. Folder splits (ImageNet) are decoded by torchvision transforms in one persistent DataLoader per job (its
workers live as long as the job), into pinned memory, copied without blocking. Both yield (x: N x C x H x W float
on device, y: N int64 on device).
"""
from __future__ import annotations

import atexit
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import crop_flip, epoch_draws, normalize
from .specs import DataSpec
from .splits import ArraySplit, FolderSplit, Split


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy that does not block the host (from pinned memory) on CUDA."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


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
        order, draws = epoch_draws(indices, train, self.spec.pad, g)
        rows = [order] if draws is None else [order, draws[0], draws[1], draws[2].long()]
        plan = to_device(torch.stack(rows), self.device)                 # R x N: index, dy, dx, flip
        for start in range(0, plan.shape[1], batch_size):
            p = plan[:, start:start + batch_size]
            x = self.images[p[0]]
            if draws is not None:
                x = crop_flip(x, p[1], p[2], p[3].bool(), self.spec.pad)
            yield normalize(x, self.mean, self.std), self.targets[p[0]]


def ignore_sigterm(_worker_id: int = 0) -> None:
    """DataLoader workers ignore SIGTERM and SIGINT. Slurm sends SIGTERM to every process of a job at its time limit
    or on preemption, Ctrl-C sends SIGINT to every process in the terminal's foreground; a worker that died of either
    would make the loader raise before the training process saves its resumable state. The training process stops
    its workers itself when it exits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _FolderDataset(Dataset):
    """Item (i, seed): sample i, decoded; seed >= 0: the training transform with torch's RNG seeded from `seed` (the
    same crop and flip whichever worker decodes it), seed < 0: the test transform."""

    def __init__(self, samples: list[tuple[str, int]], train_tf, test_tf):
        self.samples, self.train_tf, self.test_tf = samples, train_tf, test_tf

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]):
        from PIL import Image
        i, seed = item
        path, target = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        if seed < 0:
            return self.test_tf(img), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.train_tf(img), target


class _Plan:
    """The loader's batch sampler: the batches of the pass being made, set before each pass."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FolderImages:
    """A FolderSplit decoded by torchvision: RandomResizedCrop(224) + flip for training, Resize(256) +
    CenterCrop(224) for testing (Sec. 4.1). One DataLoader serves every pass of the job (training epochs and
    feature extraction), so its `workers` processes start once. The order and each image's augmentation seed are
    drawn from `g` in this process: the same seed gives the same batches with any number of workers, and a resumed
    epoch replays its draws."""

    def __init__(self, split: FolderSplit, spec: DataSpec, device: torch.device, workers: int = 8):
        from torchvision import transforms as T  # imported only for folder datasets
        self.split, self.spec, self.device, self.workers = split, spec, device, workers
        norm = T.Normalize(spec.mean, spec.std)
        train_tf = T.Compose([T.RandomResizedCrop(spec.size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test_tf = T.Compose([T.Resize(spec.test_resize), T.CenterCrop(spec.size), T.ToTensor(), norm])
        self._dataset = _FolderDataset(split.samples, train_tf, test_tf)
        self._plan = _Plan()
        self._loader: DataLoader | None = None

    def loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(self._dataset, batch_sampler=self._plan, num_workers=self.workers,
                                      pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                                      worker_init_fn=ignore_sigterm if self.workers > 0 else None,
                                      prefetch_factor=4 if self.workers > 0 else None)
            if self.workers > 0:
                # Before multiprocessing's own exit handler (atexit runs the last registered first), which would
                # SIGTERM the workers, which ignore it, and then wait for them forever.
                atexit.register(self.close)
        return self._loader

    def close(self) -> None:
        """Stop the loader's workers (they finish their batch and exit); the next pass starts new ones."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None:
            it._shutdown_workers()
        self._loader = None

    def batches(self, indices: torch.Tensor, batch_size: int, train: bool,
                g: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if train:
            order = indices[torch.randperm(len(indices), generator=g)]
            seeds = torch.randint(0, 2 ** 62, (len(order),), generator=g)
        else:
            order, seeds = indices, torch.full((len(indices),), -1)
        items = list(zip(order.tolist(), seeds.tolist()))
        self._plan.batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
        cuda = self.device.type == "cuda"
        for x, y in self.loader():
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)


def on_device(split: Split, spec: DataSpec, device: torch.device, workers: int = 8) -> DeviceArrays | FolderImages:
    if isinstance(split, ArraySplit):
        return DeviceArrays(split, spec, device)
    return FolderImages(split, spec, device, workers)
