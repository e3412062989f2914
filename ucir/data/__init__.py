"""Datasets, class orders, protocol and device-resident batches.

The names backed by torch (splits, loaders, the synthetic set) are imported when first used, so that the data check
the workflow runs when it starts (ucir.data.check) does not import torch (seconds, once per workflow).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import IMAGES_PER_CLASS, PREPARED_SOURCES, SOURCES
from .order import OFFICIAL_SEED, class_order, positions
from .specs import DataSpec, spec_for

if TYPE_CHECKING:
    import torch

    from .loaders import DeviceArrays, FolderImages
    from .splits import Split

__all__ = ["ArraySplit", "FolderSplit", "Split", "DataSpec", "RunData", "class_order", "positions",
           "make_synthetic", "spec_for", "on_device", "relabel", "subsample_per_class", "indices_of_classes",
           "load_run_data", "load_splits", "class_names", "OFFICIAL_SEED", "PREPARED_SOURCES",
           "prepare_dataset"]
_LAZY = {"ArraySplit": "splits", "FolderSplit": "splits", "Split": "splits", "indices_of_classes": "splits",
         "relabel": "splits", "subsample_per_class": "splits", "make_synthetic": "synthetic", "on_device": "loaders",
         "DeviceArrays": "loaders", "FolderImages": "loaders"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from .splits import indices_of_classes
        return indices_of_classes(self.train.targets, lo, hi)

    def test_indices(self, lo: int, hi: int) -> torch.Tensor:
        from .splits import indices_of_classes
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
    from .splits import subsample_per_class
    from .synthetic import make_synthetic
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
        sizes = IMAGES_PER_CLASS["synthetic"]                         # the defaults, as ucir.tools.plan counts them
        train, test_split = make_synthetic(num_classes, train_per_class or sizes.smallest,
                                           (test_per_class or sizes.test) if test else 0, seed=synthetic_seed)
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


def class_names(source: str, root: str | None, num_classes: int, subset_seed: int = 1993) -> list[str]:
    """The dataset's class names, by original class id (what load_splits' targets are): CIFAR-100's fine-label
    names (its meta file), Fashion-MNIST's fixed ten, the ImageNet wnids in their class-id order (sorted), and
    "class000", "class001", ... for the synthetic set."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; allowed: {', '.join(SOURCES)}")
    if source == "synthetic":
        return [f"class{i:03d}" for i in range(num_classes)]
    from . import sources
    if source == "fashion_mnist":
        return list(sources.FASHION_MNIST_CLASSES)
    if root is None:
        raise ValueError(f"the class names of source {source!r} need its data root")
    if source == "cifar100":
        return sources.cifar100_class_names(root)
    if source == "imagenet":
        return sources.imagenet_class_names(root)
    return sorted(sources.imagenet_subset_classes(root, num_classes, subset_seed))


def load_run_data(cfg, device: torch.device, workers: int = 8, test: bool = True,
                  prepared: str | None = None) -> RunData:
    """Load the configured dataset, apply the run's class order, put it on the device. cfg: ucir.config.RunConfig.
    test=False: the training split only (RunData.test is None), for the stages that never evaluate. prepared: the
    dataset's prepared arrays (load_splits), mapped instead of reading the source."""
    from .loaders import on_device
    from .splits import relabel
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
