"""Datasets, class orders, protocol and device-resident batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PREPARED_SOURCES, SOURCES
from .loaders import DeviceArrays, FolderImages, on_device
from .order import OFFICIAL_SEED, class_order, positions
from .specs import DataSpec, spec_for
from .splits import ArraySplit, FolderSplit, Split, indices_of_classes, relabel, subsample_per_class
from .synthetic import make_synthetic

__all__ = ["ArraySplit", "FolderSplit", "Split", "DataSpec", "RunData", "class_order", "positions",
           "make_synthetic", "spec_for", "on_device", "relabel", "subsample_per_class", "indices_of_classes",
           "load_run_data", "load_splits", "OFFICIAL_SEED", "PREPARED_SOURCES", "prepare_dataset"]


@dataclass
class RunData:
    """One run's data: splits relabelled to class-order positions, and their loaders (batches on the device)."""
    order: list[int]
    spec: DataSpec
    train: Split
    test: Split | None                    # None where the stage never evaluates (load_run_data(test=False))
    train_loader: DeviceArrays | FolderImages
    test_loader: DeviceArrays | FolderImages | None

    def train_indices(self, lo: int, hi: int) -> torch.Tensor:
        return indices_of_classes(self.train.targets, lo, hi)

    def test_indices(self, lo: int, hi: int) -> torch.Tensor:
        return indices_of_classes(self.test.targets, lo, hi)


def prepare_dataset(source: str, root: str, folder: str, download: bool = False) -> list[str]:
    """Read an in-memory source once (every image, both splits) and write it as arrays into `folder`; return the
    files written (the prepare_data rule)."""
    if source not in PREPARED_SOURCES:
        raise ValueError(f"source {source!r} is not prepared as arrays (only {', '.join(PREPARED_SOURCES)})")
    from .prepared import prepare_arrays
    train, test_split = load_splits(source, root, download)
    return [str(p) for p in prepare_arrays({"train": train, "test": test_split}, folder)]


def load_splits(source: str, root: str | None, download: bool = False, *, num_classes: int | None = None,
                train_per_class: int | None = None, test_per_class: int | None = None,
                synthetic_seed: int = 0, subset_seed: int = 1993, test: bool = True,
                prepared: str | None = None) -> tuple[Split, Split | None]:
    """(train, test) for a config's `source`, targets = original class ids; test=False: the training split only
    (test is None). `num_classes` is used by "synthetic" (required) and "imagenet_subset" (default 100). For real
    sources `train_per_class` / `test_per_class`, when given, keep that many images per class (fixed seed); for
    "synthetic" they are the generated sizes (default 500 / 100). The synthetic set needs no torchvision import.
    prepared: the folder where the workflow's prepare_data rule wrote the source's arrays (ucir.data.prepared),
    memory-mapped instead of reading the source (CIFAR-100 and Fashion-MNIST only)."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; allowed: {', '.join(SOURCES)}")
    if prepared is not None:
        if source not in PREPARED_SOURCES:
            raise ValueError(f"prepared={prepared!r}: source {source!r} is not prepared as arrays (only "
                             f"{', '.join(PREPARED_SOURCES)})")
        from .prepared import load_prepared
        train, test_split = load_prepared(prepared, test=test)
        return (subsample_per_class(train, train_per_class),
                subsample_per_class(test_split, test_per_class) if test else None)
    if source == "synthetic":
        if num_classes is None:
            raise ValueError("source 'synthetic' needs num_classes")
        train, test_split = make_synthetic(num_classes, train_per_class or 500, (test_per_class or 100) if test else 0,
                                           seed=synthetic_seed)
        return train, test_split if test else None
    if root is None:
        raise ValueError(f"source {source!r} needs a data root")
    from . import sources                                  # torchvision: only for real data
    if source == "cifar100":
        train, test_split = sources.load_cifar100(root, download, test=test)
    elif source == "fashion_mnist":
        train, test_split = sources.load_fashion_mnist(root, test=test)
    elif source == "imagenet":
        train, test_split = sources.load_imagenet(root, test=test)
    else:
        classes = sources.imagenet_subset_classes(root, num_classes or 100, subset_seed)
        train, test_split = sources.load_imagenet(root, classes, test=test)
    return (subsample_per_class(train, train_per_class),
            subsample_per_class(test_split, test_per_class) if test else None)


def load_run_data(cfg, device: torch.device, workers: int = 8, test: bool = True,
                  prepared: str | None = None) -> RunData:
    """Load the configured dataset, apply the run's class order, put it on the device. cfg: ucir.config.RunConfig.
    test=False: the training split only (RunData.test is None), for the stages that never evaluate. prepared: the
    dataset's prepared arrays (load_splits), mapped instead of reading the source."""
    train, test_split = load_splits(cfg.source, cfg.root, cfg.download, num_classes=cfg.num_classes,
                                    train_per_class=cfg.train_per_class,
                                    test_per_class=cfg.test_per_class if test else None, test=test,
                                    prepared=prepared)
    n = int(train.targets.max()) + 1
    if n != cfg.num_classes:
        from .sources import DatasetError
        raise DatasetError(f"dataset {cfg.dataset!r} has {n} classes but num_classes={cfg.num_classes}")
    order = class_order(cfg.num_classes, cfg.seed)
    inv = positions(order)
    spec = spec_for(cfg.source)
    train = relabel(train, inv)
    test_split = relabel(test_split, inv) if test_split is not None else None
    return RunData(order, spec, train, test_split, on_device(train, spec, device, workers),
                   on_device(test_split, spec, device, workers) if test_split is not None else None)
