"""A dataset read whole into memory (CIFAR-100's pickles, Fashion-MNIST's idx.gz files), written once as .npy arrays
by the workflow's prepare_data rule, then memory-mapped by every job that reads it: a job maps 180 MB instead of
unpickling or decompressing it (the cut per rule: make startup, docs/benchmarks.md).

    results/{dataset}/data/{train,test}_{images,targets}.npy      images N x C x H x W uint8, targets N int64

The arrays hold the source's splits as ucir.data.sources reads them (original class ids, every image); the per-run
subsampling and class order are applied after mapping, as after reading the source.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..io import save_array
from .splits import ArraySplit

SPLITS = ("train", "test")
FILES = tuple(f"{split}_{kind}.npy" for split in SPLITS for kind in ("images", "targets"))


def prepare_arrays(splits: dict[str, ArraySplit], folder: str | os.PathLike) -> list[Path]:
    """Write each split's images and targets as .npy files (atomically) into `folder`; return their paths."""
    folder = Path(folder)
    if set(splits) != set(SPLITS):
        raise ValueError(f"prepare_arrays needs the splits {SPLITS}, got {tuple(splits)}")
    paths = []
    for split in SPLITS:
        s = splits[split]
        if not isinstance(s, ArraySplit):
            raise TypeError(f"the {split} split is {type(s).__name__}, not an ArraySplit: only a dataset read into "
                            "memory (CIFAR-100, Fashion-MNIST) is prepared")
        for kind, t in (("images", s.images), ("targets", s.targets)):
            path = folder / f"{split}_{kind}.npy"
            save_array(np.ascontiguousarray(t.numpy()), path)
            paths.append(path)
    return paths


def load_prepared(folder: str | os.PathLike, test: bool = True) -> tuple[ArraySplit, ArraySplit | None]:
    """(train, test) memory-mapped from `folder` (copy-on-write: pages are read when used, and nothing is written
    back); test=False: the training split only. A missing file is an error that names it and the rule that
    writes it."""
    out = []
    for split in SPLITS if test else SPLITS[:1]:
        arrays = []
        for kind in ("images", "targets"):
            path = Path(folder) / f"{split}_{kind}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"prepared dataset file {path} is missing (written by the workflow's "
                                        "prepare_data rule)")
            arrays.append(np.load(path, mmap_mode="c", allow_pickle=False))
        images, targets = arrays
        if images.dtype != np.uint8 or images.ndim != 4 or targets.dtype != np.int64 or len(targets) != len(images):
            raise ValueError(f"prepared dataset {folder} ({split}): expected uint8 N x C x H x W images and int64 N "
                             f"targets, got {images.dtype} {images.shape} and {targets.dtype} {targets.shape}")
        out.append(ArraySplit(torch.from_numpy(images), torch.from_numpy(targets)))
    return out[0], out[1] if test else None
