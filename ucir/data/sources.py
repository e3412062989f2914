"""Reading the real datasets from disk into ArraySplit / FolderSplit (targets = original class ids).

All file reading is torchvision's own (CIFAR100, the MNIST idx readers, ImageFolder's scan); this module finds
the files and turns every way they can be missing or broken into a DatasetError that says what is wrong, what
layout is expected and how to get the data (ucir.data.load_splits dispatches by the config's `source`).
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tempfile
import warnings
import zlib

import numpy as np
import torch
from torchvision.datasets import CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import check_integrity

from ..io import save_text
from .splits import ArraySplit, FolderSplit

class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or corrupt: the message says what, the expected layout, how to get it."""


# ---------------------------------------------------------------------------------------------------- CIFAR-100

CIFAR_FOLDER = CIFAR100.base_folder  # "cifar-100-python"
CIFAR_FILES = ("train", "test", "meta")
CIFAR_LAYOUT = "{root}/cifar-100-python/{{train,test,meta}} (the extracted cifar-100-python.tar.gz)"


class _CIFAR100Files(CIFAR100):
    """torchvision's CIFAR100 with its md5 checks switched off (torchvision's own `check_integrity(path, None)`
    means "the file exists"). Everything else, reading, download and archive md5 included, is torchvision's.

    Stock CIFAR100 compares train/test/meta against the md5s of the official archive and refuses anything else
    with "Dataset not found or corrupted", without saying which file; that also rejects any faithful copy that is
    not byte-identical (a re-pickled copy, the small files the tests write). Here a missing file is reported by
    name before loading, a broken one by name when it fails to unpickle, and a copy that differs from the official
    bytes loads with a warning (see `_warn_if_not_official`)."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def _cifar_file_problem(path: str, split_file: bool) -> str | None:
    """Why one CIFAR pickle cannot be used, or None. Only called after torchvision failed, to name the file."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the file is broken
        return f"cannot be unpickled ({type(e).__name__}: {e}); the file is truncated or corrupt"
    keys = ("data", "fine_labels") if split_file else ("fine_label_names",)
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        return f"is not a CIFAR-100 pickle (expected a dict with the entries {', '.join(keys)})"
    if split_file and (np.asarray(entry["data"]).size != 3072 * len(entry["fine_labels"])):
        return "has a 'data' array that does not hold 3072 bytes for each of its labels"
    return None


def _warn_if_not_official(folder: str) -> None:
    official = CIFAR100.train_list + CIFAR100.test_list + [[CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
    differ = [name for name, md5 in official if not check_integrity(os.path.join(folder, name), md5)]
    if differ:
        warnings.warn(f"CIFAR-100 files {differ} in {folder} differ from the official archive (md5); "
                      "results may not be comparable to the paper's", stacklevel=3)


def load_cifar100(root: str, download: bool = False, test: bool = True) -> tuple[ArraySplit, ArraySplit | None]:
    """(train, test) of CIFAR-100 from root/cifar-100-python/{train,test,meta}; downloaded first (by torchvision,
    archive md5 checked) when files are missing and `download` is true. Images are uint8 N x 3 x 32 x 32, targets
    the original fine-label ids 0..99."""
    folder = os.path.join(root, CIFAR_FOLDER)
    missing = [n for n in CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing and not download:
        raise DatasetError(
            f"CIFAR-100 not found: {', '.join(missing)} missing in {folder}. Expected layout: "
            f"{CIFAR_LAYOUT.format(root=root)}. Set `download: true` in the config to let torchvision fetch it, "
            f"or fetch cifar-100-python.tar.gz yourself and extract it into {root}.")
    splits = []
    for train in (True, False) if test else (True,):
        try:
            ds = _CIFAR100Files(root, train=train, download=download and train)
        except (OSError, RuntimeError) as e:  # network failure, bad archive md5, files still missing
            raise DatasetError(f"could not download or find CIFAR-100 in {root} ({e}). Expected layout: "
                               f"{CIFAR_LAYOUT.format(root=root)}; fetch cifar-100-python.tar.gz and extract "
                               "it there by hand if this machine has no internet.") from e
        except Exception as e:  # unpickling or format errors: find the file to blame
            for name in ("train" if train else "test", "meta"):
                problem = _cifar_file_problem(os.path.join(folder, name), split_file=name != "meta")
                if problem:
                    raise DatasetError(f"CIFAR-100 file {os.path.join(folder, name)} {problem}. Delete "
                                       f"{folder} and extract cifar-100-python.tar.gz again "
                                       "(or set `download: true`).") from e
            raise
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        splits.append(ArraySplit(images, torch.as_tensor(ds.targets, dtype=torch.int64)))
    _warn_if_not_official(folder)
    return splits[0], splits[1] if test else None


# ------------------------------------------------------------------------------------------------ Fashion-MNIST

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_path(folder: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _read_idx(path: str, reader) -> torch.Tensor:
    """torchvision's idx reader on `path`; a .gz file is first gunzipped into a temporary file (root stays
    untouched, it may be read-only)."""
    try:
        if not path.endswith(".gz"):
            return reader(path)
        with tempfile.TemporaryDirectory() as tmp:
            plain = os.path.join(tmp, os.path.basename(path)[:-3])
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(plain)
    except (EOFError, gzip.BadGzipFile, zlib.error, AssertionError, ValueError, RuntimeError, TypeError,
            IndexError, KeyError) as e:
        raise DatasetError(f"Fashion-MNIST file {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                           "reinstall or re-download it.") from e


def load_fashion_mnist(root: str, test: bool = True) -> tuple[ArraySplit, ArraySplit | None]:
    """(train, test) of Fashion-MNIST from the four idx files, gzipped or not, either directly in `root` (e.g.
    Debian's /usr/share/datasets/fashion-mnist/) or in torchvision's root/FashionMNIST/raw/. Images are uint8
    N x 1 x 28 x 28, targets 0..9."""
    names = [n for pair in MNIST_FILES.values() for n in pair]
    folders = [root, os.path.join(root, "FashionMNIST", "raw")]
    folder = next((f for f in folders if all(_idx_path(f, n) for n in names)), None)
    if folder is None:
        raise DatasetError(
            f"Fashion-MNIST not found in {root}: expected {', '.join(n + '[.gz]' for n in names)} either directly "
            f"in {root} or in {folders[1]}. Get them with `apt-get install dataset-fashion-mnist` (root "
            "/usr/share/datasets/fashion-mnist) or from the Fashion-MNIST project page.")
    splits = []
    for image_name, label_name in [MNIST_FILES["train"]] + ([MNIST_FILES["test"]] if test else []):
        image_path, label_path = _idx_path(folder, image_name), _idx_path(folder, label_name)
        images, labels = _read_idx(image_path, read_image_file), _read_idx(label_path, read_label_file)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DatasetError(f"Fashion-MNIST files {image_path} ({tuple(images.shape)}) and {label_path} "
                               f"({len(labels)} labels) do not fit together (expected N x 28 x 28 and N).")
        splits.append(ArraySplit(images.unsqueeze(1).contiguous(), labels.to(torch.int64)))
    return splits[0], splits[1] if test else None


# ----------------------------------------------------------------------------------------------------- ImageNet

IMAGENET_LAYOUT = "{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG"


def _imagenet_dir(root: str, split: str) -> str:
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        hint = (" The validation images must be sorted into one folder per class (e.g. with the usual valprep.sh "
                "script), not left flat." if split == "val" else "")
        raise DatasetError(f"ImageNet folder {path} not found. Expected layout: "
                           f"{IMAGENET_LAYOUT.format(root=root)} (ILSVRC2012, ImageFolder style).{hint}")
    return path


def _imagenet_classes(train_dir: str) -> list[str]:
    try:
        return find_classes(train_dir)[0]
    except FileNotFoundError as e:
        raise DatasetError(f"no class folders in {train_dir}; expected {train_dir}/<wnid>/*.JPEG") from e


def load_imagenet(root: str, classes: list[str] | None = None,
                  test: bool = True) -> tuple[FolderSplit, FolderSplit | None]:
    """(train, val) file lists of ImageNet in ImageFolder layout, root/{train,val}/<wnid>/*.JPEG. With `classes`,
    only those folders are used and a class's id is its index in sorted(classes); otherwise all folders of
    train/, id = index in the sorted folder names (ImageFolder's rule). val/ uses the same mapping."""
    train_dir, val_dir = _imagenet_dir(root, "train"), _imagenet_dir(root, "val") if test else None
    available = _imagenet_classes(train_dir)
    if classes is None:
        chosen = available
        extra = sorted({e.name for e in os.scandir(val_dir) if e.is_dir()} - set(chosen)) if test else []
        if extra:
            raise DatasetError(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(extra[:10])}")
    else:
        chosen = sorted(classes)
        if len(set(chosen)) != len(chosen):
            raise ValueError("the class list names a class more than once")
        unknown = sorted(set(chosen) - set(available))
        if unknown:
            raise DatasetError(f"classes not found in {train_dir}: {', '.join(unknown[:10])}")
    class_to_idx = {c: i for i, c in enumerate(chosen)}
    splits = []
    for directory in (train_dir, val_dir) if test else (train_dir,):
        absent = [c for c in chosen if not os.path.isdir(os.path.join(directory, c))]
        if absent:
            raise DatasetError(f"class folders missing in {directory}: {', '.join(absent[:10])}"
                               f"{' ...' if len(absent) > 10 else ''}. Both train/ and val/ need a folder for "
                               "every class (sort val/ into class folders, e.g. with the usual valprep.sh).")
        try:
            samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:  # a class folder without images
            raise DatasetError(f"in {directory}: {e}") from e
        splits.append(FolderSplit(samples, torch.tensor([t for _, t in samples], dtype=torch.int64)))
    return splits[0], splits[1] if test else None


def imagenet_subset_classes(root: str, num: int = 100, seed: int = 1993) -> list[str]:
    """The ImageNet-Subset of LUCIR: `num` wnids drawn from root/train/ as the official script does.

    The official imagenet-class-incremental/gen_imagenet_subset.py takes ImageFolder(train).classes (the sorted
    wnids), seeds numpy's global legacy RNG with 1993 and calls np.random.choice(classes, 100, replace=False).
    For replace=False without weights, legacy choice is permutation(len(classes))[:num], i.e. a Fisher-Yates
    shuffle of arange(len(classes)) by MT19937(seed) whose first `num` entries index the sorted list. That is
    reimplemented here with a private RandomState (same stream, global RNG untouched). The wnids are returned in
    that drawing order (the order the script printed and copied them in); the official training then reads the
    copied subset with ImageFolder, so the class ids are positions in the *sorted* subset, which is what
    load_imagenet(root, classes) gives.

    This is not the PODNet / "ImageNet-100" list (a fixed file of 100 wnids, imagenet100 split of other codebases):
    the two subsets differ and their numbers are not comparable.
    """
    classes = _imagenet_classes(_imagenet_dir(root, "train"))
    if not 0 < num <= len(classes):
        raise DatasetError(f"cannot draw {num} classes from the {len(classes)} class folders in {root}/train")
    picked = np.random.RandomState(seed).permutation(len(classes))[:num]
    return [classes[i] for i in picked]


def write_class_list(path: str, classes: list[str]) -> None:
    """Write one class name per line, atomically (ucir.io)."""
    save_text("".join(f"{c}\n" for c in classes), path)
