"""Datasets, class orders, protocol and device-resident batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .loaders import DeviceArrays, FolderImages, on_device
from .order import OFFICIAL_SEED, class_order, positions
from .specs import DataSpec, spec_for
from .splits import ArraySplit, FolderSplit, Split, indices_of_classes, relabel, subsample_per_class
from .synthetic import make_synthetic

__all__ = ["ArraySplit", "FolderSplit", "Split", "DataSpec", "RunData", "class_order", "positions",
           "make_synthetic", "spec_for", "on_device", "relabel", "subsample_per_class", "indices_of_classes",
           "load_run_data", "OFFICIAL_SEED"]


@dataclass
class RunData:
    """One run's data: splits relabelled to class-order positions, and their device-resident batch makers."""
    order: list[int]
    spec: DataSpec
    train: Split
    test: Split
    train_dev: DeviceArrays | FolderImages
    test_dev: DeviceArrays | FolderImages

    def train_indices(self, lo: int, hi: int) -> torch.Tensor:
        return indices_of_classes(self.train.targets, lo, hi)

    def test_indices(self, lo: int, hi: int) -> torch.Tensor:
        return indices_of_classes(self.test.targets, lo, hi)


def load_run_data(cfg, device: torch.device, workers: int = 8) -> RunData:
    """Load the configured dataset, apply the run's class order, put it on the device. cfg: ucir.config.RunConfig."""
    if cfg.source == "synthetic":       # no torchvision import for the synthetic set (keeps small jobs quick)
        train, test = make_synthetic(cfg.num_classes, cfg.train_per_class or 500, cfg.test_per_class or 100)
    else:
        from .sources import load_splits
        train, test = load_splits(cfg.source, cfg.root, cfg.download, num_classes=cfg.num_classes,
                                  train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class)
    n = int(train.targets.max()) + 1
    if n != cfg.num_classes:
        from .sources import DatasetError
        raise DatasetError(f"dataset {cfg.dataset!r} has {n} classes but num_classes={cfg.num_classes}")
    order = class_order(cfg.num_classes, cfg.seed)
    inv = positions(order)
    train, test = relabel(train, inv), relabel(test, inv)
    spec = spec_for(cfg.source)
    return RunData(order, spec, train, test, on_device(train, spec, device, workers),
                   on_device(test, spec, device, workers))
