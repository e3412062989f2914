"""Cheap checks of a dataset's files, made once when the workflow starts (issue 24), so that a missing class folder
or a truncated file stops the workflow before any job instead of failing the first job that reads it, hours later.

`data_problems` is a pure function of a dataset's settings returning what is wrong (an empty list when the data can
be read). It reads headers, not data:
  * ImageNet layouts: the class folders of train/ (for imagenet_subset, the classes the official script draws), and
    for each chosen class, in train/ and val/, the first images a run needs (listed lazily, so a folder of 1,300
    images is not listed in full) and the header of the first one (PIL.Image.open decodes nothing).
  * Fashion-MNIST: each idx file's header (magic number and sizes) against its length (the gzip trailer's length of
    the uncompressed data for .gz), and the label files in full (70 kB).
  * CIFAR-100: each pickle must end with pickle's STOP opcode (a truncated file does not); the official files are
    then recognised by their md5 (remembered across runs, as the jobs already do), any other copy is unpickled and
    checked in full.
"""
from __future__ import annotations

import gzip
import itertools
import os
import struct
import zlib
from collections.abc import Iterator

import numpy as np

from ..config import FOLDER_SOURCES
from . import sources
from .order import OFFICIAL_SEED
from .sources import CIFAR_FILES, CIFAR_FOLDER, CIFAR_MD5, MNIST_FILES, DatasetError

# torchvision.datasets.folder.IMG_EXTENSIONS (what make_dataset accepts; tests/test_data_check.py compares them),
# held here so that checking the data does not import torchvision (a second).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# the official archive's images per class (CIFAR-100: 100 classes of 500 training and 100 test images)
CIFAR_PER_CLASS = {"train": 500, "test": 100}
SHOWN = 10                                            # names listed in one message, then "and N more"


def data_problems(source: str, root: str | None, num_classes: int, train_per_class: int | None = None,
                  test_per_class: int | None = None, download: bool = False) -> list[str]:
    """What is wrong with the files of a dataset for runs of `num_classes` classes that keep `train_per_class` /
    `test_per_class` images per class (None: all, i.e. at least one). Each problem names the folder or file and
    what is wrong. [] for synthetic data, and for CIFAR-100 files that are missing but may be downloaded."""
    if source == "synthetic":
        return []
    if not root or not os.path.isdir(root):
        return [f"folder {root!r} does not exist"]
    need = {"train": max(1, train_per_class or 1), "test": max(1, test_per_class or 1)}
    if source == "cifar100":
        return _cifar100(root, num_classes, need, download)
    if source == "fashion_mnist":
        return _fashion_mnist(root, num_classes, need)
    if source in FOLDER_SOURCES:
        return _imagenet(source, root, num_classes, need)
    raise ValueError(f"unknown data source {source!r}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _per_class_problems(what: str, labels: np.ndarray, num_classes: int, need: int, exact: bool) -> list[str]:
    """Classes and images per class of a split given as its labels (original ids)."""
    counts = np.bincount(labels, minlength=num_classes)
    n = int(labels.max()) + 1 if len(labels) else 0
    if n < num_classes or (exact and n != num_classes):
        return [f"{what} holds {n} classes but num_classes is {num_classes}"]
    short = [f"{c} ({counts[c]})" for c in range(num_classes) if counts[c] < need]
    return [f"{what}: classes with fewer than {need} images: {_listed(short)}"] if short else []


# ----------------------------------------------------------------------------------------------- ImageNet layouts

def images_in(folder: str) -> Iterator[str]:
    """The image files under `folder` as torchvision's make_dataset finds them (any depth, links followed, the
    extensions of IMAGE_EXTENSIONS in any case), lazily: a folder's files before its subfolders."""
    subfolders = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_dir():
                subfolders.append(e.path)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                yield e.path
    for sub in sorted(subfolders):
        yield from images_in(sub)


def unreadable(path: str) -> str | None:
    """Why an image file cannot be opened (its header read, nothing decoded), or None."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.size                                                    # noqa: B018 - parsed with the header
    except (OSError, SyntaxError, ValueError) as e:                     # UnidentifiedImageError is an OSError
        return f"{type(e).__name__}: {e}"
    return None


def _class_folders_problems(split_dir: str, classes: list[str], need: int) -> list[str]:
    absent, short, broken = [], [], []
    for c in classes:
        folder = os.path.join(split_dir, c)
        if not os.path.isdir(folder):
            absent.append(c)
            continue
        first = list(itertools.islice(images_in(folder), need))
        if len(first) < need:
            short.append(f"{c} ({len(first)})")
        if first and (why := unreadable(first[0])):
            broken.append(f"{first[0]} ({why})")
    out = []
    if absent:
        out.append(f"class folders missing in {split_dir}: {_listed(absent)} (train/ and val/ need a folder for "
                   "every class; sort val/ into class folders, e.g. with the usual valprep.sh)")
    if short:
        out.append(f"class folders in {split_dir} with fewer than {need} image(s): {_listed(short)}")
    if broken:
        out.append(f"unreadable images in {split_dir}: {_listed(broken)}")
    return out


def _imagenet(source: str, root: str, num_classes: int, need: dict[str, int]) -> list[str]:
    dirs = {split: os.path.join(root, split) for split in ("train", "val")}
    absent = [d for d in dirs.values() if not os.path.isdir(d)]
    if absent:
        return [f"folder {d} not found (expected {sources.IMAGENET_LAYOUT.format(root=root)})" for d in absent]
    try:
        available = sources._imagenet_classes(dirs["train"])
    except DatasetError as e:
        return [str(e)]
    out = []
    if source == "imagenet":                   # every folder of train/ is a class (ucir.data.load_splits)
        chosen = available
        if len(available) != num_classes:
            out.append(f"{dirs['train']} has {len(available)} class folders but num_classes is {num_classes} "
                       "(source imagenet uses every class folder; imagenet_subset draws num_classes of them)")
        extra = sorted({e.name for e in os.scandir(dirs["val"]) if e.is_dir()} - set(available))
        if extra:
            out.append(f"{dirs['val']} has class folders that {dirs['train']} lacks: {_listed(extra)}")
    else:
        if len(available) < num_classes:
            return [f"{dirs['train']} has {len(available)} class folders, fewer than num_classes ({num_classes})"]
        chosen = sources.draw_subset(available, num_classes, OFFICIAL_SEED, dirs["train"])
    return (out + _class_folders_problems(dirs["train"], chosen, need["train"])
            + _class_folders_problems(dirs["val"], chosen, need["test"]))


# --------------------------------------------------------------------------------------------------- Fashion-MNIST

def idx_header_problem(path: str, ndim: int) -> tuple[tuple[int, ...] | None, str | None]:
    """(the shape an idx file's header gives, None), or (None, what is wrong): the magic number, and the file's
    length against the header's sizes (for .gz, the length of the uncompressed data its trailer records)."""
    head = 4 + 4 * ndim
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read(head)
    except (OSError, EOFError, zlib.error) as e:                        # BadGzipFile is an OSError
        return None, f"cannot be read ({type(e).__name__}: {e})"
    if len(raw) < head or raw[:3] != bytes([0, 0, sources.IDX_UBYTE]) or raw[3] != ndim:
        return None, f"is not an idx file of {ndim}-d unsigned bytes (header {raw[:4].hex()})"
    shape = struct.unpack(f">{ndim}i", raw[4:head])
    expected = head + int(np.prod(shape))
    if path.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            length = struct.unpack("<I", f.read(4))[0]                 # ISIZE: uncompressed length mod 2**32
        expected %= 2 ** 32
    else:
        length = os.path.getsize(path)
    if length != expected:
        return None, (f"is truncated or corrupt: its header gives {' x '.join(map(str, shape))} ({expected} bytes) "
                      f"but it holds {length} bytes")
    return shape, None


def _fashion_mnist(root: str, num_classes: int, need: dict[str, int]) -> list[str]:
    try:
        folder = sources.fashion_mnist_folder(root)
    except DatasetError as e:
        return [str(e)]
    out = []
    for split, names in MNIST_FILES.items():
        paths = [sources._idx_path(folder, n) for n in names]
        (images, bad_images), (labels, bad_labels) = idx_header_problem(paths[0], 3), idx_header_problem(paths[1], 1)
        out += [f"Fashion-MNIST file {p} {why}" for p, why in zip(paths, (bad_images, bad_labels)) if why]
        if bad_images or bad_labels:
            continue
        if images[1:] != (28, 28) or images[0] != labels[0]:
            out.append(f"Fashion-MNIST files {paths[0]} ({' x '.join(map(str, images))}) and {paths[1]} "
                       f"({labels[0]} labels) do not fit together (expected N x 28 x 28 and N)")
            continue
        try:
            ids = sources.read_idx_array(paths[1], 1)
        except DatasetError as e:
            out.append(str(e))
            continue
        out += _per_class_problems(f"Fashion-MNIST file {paths[1]}", ids, num_classes, need[split], exact=True)
    return out


# ------------------------------------------------------------------------------------------------------- CIFAR-100

def _cifar100(root: str, num_classes: int, need: dict[str, int], download: bool) -> list[str]:
    folder = os.path.join(root, CIFAR_FOLDER)
    missing = [n for n in CIFAR_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        return [] if download else [
            f"CIFAR-100 files missing in {folder}: {', '.join(missing)} (expected "
            f"{sources.CIFAR_LAYOUT.format(root=root)}; or set download: true)"]
    out = []
    for name in CIFAR_FILES:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 1))
            last = f.read(1)
        if last != b".":                                   # pickle's STOP opcode ends every pickle
            out.append(f"CIFAR-100 file {path} is truncated or empty ({size} bytes, not ending with pickle's STOP "
                       f"opcode); delete {folder} and extract cifar-100-python.tar.gz again")
            continue
        if name == "meta":                                 # 1.5 kB: unpickled and checked in full
            why = sources._cifar_file_problem(path, split_file=False)[1]
            out += [f"CIFAR-100 file {path} {why}"] if why else []
            continue
        if sources._md5(path) == CIFAR_MD5[name]:          # the official file: 100 classes, counts known
            labels = np.repeat(np.arange(100), CIFAR_PER_CLASS[name])
        else:
            entry, why = sources._cifar_file_problem(path, split_file=True)
            if why:
                out.append(f"CIFAR-100 file {path} {why}")
                continue
            labels = np.asarray(entry["fine_labels"], dtype=np.int64)
        out += _per_class_problems(f"CIFAR-100 file {path}", labels, num_classes, need[name], exact=True)
    return out
