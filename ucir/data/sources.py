"""Reading the real datasets from disk into ArraySplit / FolderSplit (targets = original class ids).

This module finds the files and turns every way they can be missing or broken into a DatasetError that says what is
wrong, what layout is expected and how to get the data (ucir.data.load_splits dispatches by the config's `source`).
The two in-memory formats are read here with numpy (CIFAR-100's pickles, Fashion-MNIST's idx files: a few lines
each, checked against torchvision's own readers in tests/test_sources.py), because importing torchvision costs every
job more than a second; torchvision does the downloading and ImageNet's folder scan.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import warnings
import zlib
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from ..io import save_json, save_text

if TYPE_CHECKING:
    import torch

    from .splits import ArraySplit, FolderSplit


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or corrupt: the message says what, the expected layout, how to get it."""


# ---------------------------------------------------------------------------------------------------- CIFAR-100

CIFAR_FOLDER = "cifar-100-python"                     # torchvision.datasets.CIFAR100.base_folder
CIFAR_FILES = ("train", "test", "meta")
CIFAR_LAYOUT = "{root}/cifar-100-python/{{train,test,meta}} (the extracted cifar-100-python.tar.gz)"
# the md5s of the official archive's files (torchvision.datasets.CIFAR100.train_list, test_list and meta)
CIFAR_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
             "meta": "7973b15100ade9c7d40fb424638fde48"}
MD5_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ucir" / "md5.json"


def _cifar_file_problem(path: str, split_file: bool) -> tuple[dict | None, str | None]:
    """(the unpickled entry, None), or (None, why the CIFAR pickle cannot be used)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the file is broken
        return None, f"cannot be unpickled ({type(e).__name__}: {e}); the file is truncated or corrupt"
    keys = ("data", "fine_labels") if split_file else ("fine_label_names",)
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        return None, f"is not a CIFAR-100 pickle (expected a dict with the entries {', '.join(keys)})"
    if split_file and (np.asarray(entry["data"]).size != 3072 * len(entry["fine_labels"])):
        return None, "has a 'data' array that does not hold 3072 bytes for each of its labels"
    return entry, None


def _md5(path: str) -> str:
    """A file's md5, remembered across jobs (per path, size and modification time) in MD5_CACHE."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    try:
        cache = json.loads(MD5_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        with open(path, "rb") as f:
            cache[key] = hashlib.file_digest(f, "md5").hexdigest()
        try:
            save_json(cache, MD5_CACHE)
        except OSError:                                   # a read-only home: check again next time
            pass
    return cache[key]


def _warn_if_not_official(folder: str) -> None:
    differ = [name for name, md5 in CIFAR_MD5.items() if _md5(os.path.join(folder, name)) != md5]
    if differ:
        warnings.warn(f"CIFAR-100 files {differ} in {folder} differ from the official archive (md5); "
                      "results may not be comparable to the paper's", stacklevel=3)


def _download_cifar100(root: str) -> None:
    """torchvision's download of cifar-100-python.tar.gz (archive md5 checked) into root."""
    from torchvision.datasets import CIFAR100
    try:
        CIFAR100(root, train=True, download=True)
    except (OSError, RuntimeError) as e:  # network failure, bad archive md5
        raise DatasetError(f"could not download CIFAR-100 into {root} ({e}). Expected layout: "
                           f"{CIFAR_LAYOUT.format(root=root)}; fetch cifar-100-python.tar.gz and extract it there "
                           "by hand if this machine has no internet.") from e


def load_cifar100(root: str, download: bool = False, test: bool = True) -> tuple[ArraySplit, ArraySplit | None]:
    """(train, test) of CIFAR-100 from root/cifar-100-python/{train,test,meta}; downloaded first (by torchvision,
    archive md5 checked) when files are missing and `download` is true. A copy that is not byte-identical to the
    official files (a re-pickled one, the small files the tests write) loads with a warning. Images are uint8
    N x 3 x 32 x 32 (the pickles' own layout, no copy), targets the original fine-label ids 0..99."""
    import torch

    from .splits import ArraySplit
    folder = os.path.join(root, CIFAR_FOLDER)
    missing = [n for n in CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing and download:
        _download_cifar100(root)
        missing = [n for n in CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise DatasetError(
            f"CIFAR-100 not found: {', '.join(missing)} missing in {folder}. Expected layout: "
            f"{CIFAR_LAYOUT.format(root=root)}. Set `download: true` in the config to let torchvision fetch it, "
            f"or fetch cifar-100-python.tar.gz yourself and extract it into {root}.")
    splits = []
    for name in ("meta", "train", "test") if test else ("meta", "train"):
        entry, problem = _cifar_file_problem(os.path.join(folder, name), split_file=name != "meta")
        if problem:
            raise DatasetError(f"CIFAR-100 file {os.path.join(folder, name)} {problem}. Delete {folder} and "
                               "extract cifar-100-python.tar.gz again (or set `download: true`).")
        if name != "meta":
            images = torch.from_numpy(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            splits.append(ArraySplit(images, torch.as_tensor(entry["fine_labels"], dtype=torch.int64)))
    _warn_if_not_official(folder)
    return splits[0], splits[1] if test else None


def cifar100_class_names(root: str) -> list[str]:
    """The 100 fine-label names of CIFAR-100 (its `meta` file), by class id."""
    path = os.path.join(root, CIFAR_FOLDER, "meta")
    if not os.path.isfile(path):
        raise DatasetError(f"CIFAR-100 class names: {path} not found. Expected layout: "
                           f"{CIFAR_LAYOUT.format(root=root)}")
    entry, problem = _cifar_file_problem(path, split_file=False)
    if problem:
        raise DatasetError(f"CIFAR-100 file {path} {problem}.")
    return [str(n) for n in entry["fine_label_names"]]


# ------------------------------------------------------------------------------------------------ Fashion-MNIST

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_UBYTE = 0x08                                      # the idx type code of unsigned bytes
# The class names by label id (the Fashion-MNIST project's README; torchvision.datasets.FashionMNIST.classes)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


def _idx_path(folder: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str, ndim: int) -> torch.Tensor:
    """An idx file of unsigned bytes (gzipped or not) as a uint8 tensor (read_idx_array)."""
    import torch
    return torch.from_numpy(read_idx_array(path, ndim))


def read_idx_array(path: str, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) as a uint8 array: magic 0, 0, type, ndim, then ndim
    big-endian int32 sizes, then the data (the format torchvision.datasets.mnist reads)."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
        if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or raw[3] != ndim:
            raise ValueError(f"not an idx file of {ndim}-d unsigned bytes (header {raw[:4].hex()})")
        shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
        data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f"{data.size} bytes of data for shape {shape}")
        return data.reshape(shape).copy()
    except (EOFError, gzip.BadGzipFile, zlib.error, ValueError) as e:
        raise DatasetError(f"Fashion-MNIST file {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                           "reinstall or re-download it.") from e


def fashion_mnist_folder(root: str) -> str:
    """The folder holding the four idx files: `root` itself or torchvision's root/FashionMNIST/raw/."""
    names = [n for pair in MNIST_FILES.values() for n in pair]
    folders = [root, os.path.join(root, "FashionMNIST", "raw")]
    folder = next((f for f in folders if all(_idx_path(f, n) for n in names)), None)
    if folder is None:
        raise DatasetError(
            f"Fashion-MNIST not found in {root}: expected {', '.join(n + '[.gz]' for n in names)} either directly "
            f"in {root} or in {folders[1]}. Get them with `apt-get install dataset-fashion-mnist` (root "
            "/usr/share/datasets/fashion-mnist) or from the Fashion-MNIST project page.")
    return folder


def load_fashion_mnist(root: str, test: bool = True) -> tuple[ArraySplit, ArraySplit | None]:
    """(train, test) of Fashion-MNIST from the four idx files, gzipped or not, either directly in `root` (e.g.
    Debian's /usr/share/datasets/fashion-mnist/) or in torchvision's root/FashionMNIST/raw/. Images are uint8
    N x 1 x 28 x 28, targets 0..9."""
    import torch

    from .splits import ArraySplit
    folder = fashion_mnist_folder(root)
    splits = []
    for image_name, label_name in [MNIST_FILES["train"]] + ([MNIST_FILES["test"]] if test else []):
        image_path, label_path = _idx_path(folder, image_name), _idx_path(folder, label_name)
        images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
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
    """The sorted names of the class folders (torchvision's find_classes rule, without importing torchvision)."""
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not classes:
        raise DatasetError(f"no class folders in {train_dir}; expected {train_dir}/<wnid>/*.JPEG")
    return classes


def imagenet_class_names(root: str) -> list[str]:
    """The wnids of root/train/ in ImageFolder's order (a class id is its index in this list)."""
    return _imagenet_classes(_imagenet_dir(root, "train"))


def load_imagenet(root: str, classes: list[str] | None = None,
                  test: bool = True) -> tuple[FolderSplit, FolderSplit | None]:
    """(train, val) file lists of ImageNet in ImageFolder layout, root/{train,val}/<wnid>/*.JPEG. With `classes`,
    only those folders are used and a class's id is its index in sorted(classes); otherwise all folders of
    train/, id = index in the sorted folder names (ImageFolder's rule). val/ uses the same mapping."""
    import torch
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    from .splits import FolderSplit
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
    return draw_subset(_imagenet_classes(_imagenet_dir(root, "train")), num, seed, f"{root}/train")


def draw_subset(classes: list[str], num: int, seed: int, where: str) -> list[str]:
    """`num` of the sorted class names `classes` (the class folders of `where`), drawn as imagenet_subset_classes
    says."""
    if not 0 < num <= len(classes):
        raise DatasetError(f"cannot draw {num} classes from the {len(classes)} class folders in {where}")
    picked = np.random.RandomState(seed).permutation(len(classes))[:num]
    return [classes[i] for i in picked]


def write_class_list(path: str, classes: list[str]) -> None:
    """Write one class name per line, atomically (ucir.io)."""
    save_text("".join(f"{c}\n" for c in classes), path)
