"""Batches for training, feature extraction and evaluation, on the training device.

In-memory splits (ArraySplit) are moved to the device once as uint8 and cropped, flipped and normalised there in
batches; an epoch's order and random draws go to the device in one copy, so a training step never waits for the
host. Folder splits (ImageNet) are decoded and cropped by torchvision transforms in one persistent DataLoader per
job (its workers live as long as the job, one per CPU the job was given but the training process's own), and travel
as uint8 (shared memory, pinned memory, the copy to the device: a quarter of float32's bytes) to be normalised on
the device. Both yield (x: N x C x H x W float on device, y: N int64 on device).
"""
from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import crop_flip, epoch_draws, normalize
from .specs import DataSpec
from .splits import ArraySplit, FolderSplit, Split


PREFETCH = 2                # batches each DataLoader worker keeps ready (torch's default); they wait in /dev/shm
SHM = "/dev/shm"            # where DataLoader workers put their batches (torch's file-descriptor sharing)


def decode_workers(threads: int) -> int:
    """DataLoader workers for folder data: one per CPU the job was given (its threads, capped by the CPUs this
    process may run on, e.g. a Slurm allocation's), but the one the training process keeps; at least one."""
    return max(1, min(threads, len(os.sched_getaffinity(0))) - 1)


def shm_free(path: str = SHM) -> int | None:
    """Bytes free in the shared-memory file system, None where there is none (not Linux)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def shm_problem(workers: int, batch_size: int, spec: DataSpec, free: int | None) -> str | None:
    """Why `workers` DataLoader workers, each with PREFETCH uint8 batches of `batch_size` images ready, would not fit
    in `free` bytes of shared memory (a bus error in the middle of an epoch), and what to change; None if they fit."""
    batch = batch_size * spec.channels * spec.size * spec.size                    # uint8: one byte per value
    need = workers * PREFETCH * batch
    if workers == 0 or free is None or need <= free:
        return None
    mb = 2 ** 20
    fit = free // (PREFETCH * batch)
    instead = (f"set `workers: {fit}` (each worker needs {PREFETCH * batch / mb:.0f} MB)" if fit else
               "lower the batch size")
    return (f"folder data: {workers} loader workers x {PREFETCH} batches x {batch_size} images of {spec.channels} x "
            f"{spec.size} x {spec.size} uint8 need {need / mb:.0f} MB of shared memory, but {SHM} has "
            f"{free / mb:.0f} MB free (a container's default is 64 MB). Give the job more (docker/podman run "
            f"--shm-size={-(-need * 5 // 4 // mb)}m, a quarter to spare; Kubernetes: a memory-backed emptyDir "
            f"mounted at /dev/shm), or {instead} in the config")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy that does not block the host (from pinned memory) on CUDA."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def channel_stats(spec: DataSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation's mean and std, C x 1 x 1 float32 on the device (augment.normalize)."""
    return (torch.tensor(spec.mean, device=device).view(-1, 1, 1),
            torch.tensor(spec.std, device=device).view(-1, 1, 1))


class DeviceArrays:
    """An ArraySplit resident on the device as uint8 (moved once per process)."""

    def __init__(self, split: ArraySplit, spec: DataSpec, device: torch.device):
        self.images = split.images.to(device)
        self.targets = split.targets.to(device)
        self.spec = spec
        self.device = device
        self.mean, self.std = channel_stats(spec, device)

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
    CenterCrop(224) for testing (Sec. 4.1), as uint8; normalised on the device. One DataLoader serves every pass of
    the job (training epochs and feature extraction), so its `workers` processes start once. The order and each
    image's augmentation seed are drawn from `g` in this process: the same seed gives the same batches with any
    number of workers, and a resumed epoch replays its draws.

    The floats are those of torchvision's ToTensor + Normalize in the workers (what this class did before): both
    compute (x / 255 - mean) / std in float32 from the same uint8 values, one correctly rounded IEEE operation at a
    time, in the same order (tests/test_folder_loader.py compares them)."""

    def __init__(self, split: FolderSplit, spec: DataSpec, device: torch.device, workers: int = 8):
        from torchvision import transforms as T  # imported only for folder datasets
        self.split, self.spec, self.device, self.workers = split, spec, device, workers
        self.mean, self.std = channel_stats(spec, device)
        train_tf = T.Compose([T.RandomResizedCrop(spec.size), T.RandomHorizontalFlip(), T.PILToTensor()])
        test_tf = T.Compose([T.Resize(spec.test_resize), T.CenterCrop(spec.size), T.PILToTensor()])
        self._dataset = _FolderDataset(split.samples, train_tf, test_tf)
        self._plan = _Plan()
        self._loader: DataLoader | None = None

    def loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(self._dataset, batch_sampler=self._plan, num_workers=self.workers,
                                      pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                                      worker_init_fn=ignore_sigterm if self.workers > 0 else None,
                                      prefetch_factor=PREFETCH if self.workers > 0 else None)
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
        problem = shm_problem(self.workers, min(batch_size, len(items)), self.spec, shm_free())
        if problem:
            raise RuntimeError(problem)
        self._plan.batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
        cuda = self.device.type == "cuda"
        for x, y in self.loader():                                      # x: N x C x H x W uint8 (pinned on CUDA)
            x = x.to(self.device, non_blocking=cuda)
            yield normalize(x, self.mean, self.std), y.to(self.device, non_blocking=cuda)


def on_device(split: Split, spec: DataSpec, device: torch.device, workers: int = 8) -> DeviceArrays | FolderImages:
    if isinstance(split, ArraySplit):
        return DeviceArrays(split, spec, device)
    return FolderImages(split, spec, device, workers)
