"""ucir.data.sources on small files written here in the real on-disk layouts, checked against torchvision."""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from ucir.data import load_splits, sources
from ucir.data.sources import (DatasetError, imagenet_subset_classes, load_cifar100, load_fashion_mnist,
                               load_imagenet, write_class_list)
from ucir.data.splits import ArraySplit, FolderSplit
from ucir.data.synthetic import make_synthetic


@pytest.fixture(autouse=True)
def _own_md5_cache(tmp_path, monkeypatch):
    """Each test remembers md5s in its own cache file, not the user's."""
    monkeypatch.setattr(sources, "MD5_CACHE", tmp_path / "md5-cache.json")


# ------------------------------------------------------------------------------------------------------ CIFAR-100

class _Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), as in the official cifar-100-python archive
    (written by Python 2): they load as str with encoding='latin1' (torchvision) and as bytes with
    encoding='bytes' (the b'data' keys of the official LUCIR code). Python 3's own pickler would write bytes keys,
    which torchvision cannot read."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_dump(obj, path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _write_cifar(root, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    made = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, n)]
        _py2_dump({b"batch_label": name.encode() + b"ing batch 1 of 1", b"filenames": [b"img_%d.png" % i for i in
                   range(n)], b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data},
                  folder / name)
        made[name] = (data, fine)
    _py2_dump({b"fine_label_names": [b"class_%d" % i for i in range(100)],
               b"coarse_label_names": [b"super_%d" % i for i in range(20)]}, folder / "meta")
    return made


def test_cifar_pickles_have_the_real_format(tmp_path):
    made = _write_cifar(tmp_path)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")  # how the official LUCIR code reads it
    assert set(as_bytes) == {b"batch_label", b"filenames", b"fine_labels", b"coarse_labels", b"data"}
    assert np.array_equal(as_bytes[b"data"], made["train"][0])


def test_cifar100_round_trip(tmp_path):
    made = _write_cifar(tmp_path)
    with pytest.warns(UserWarning, match="differ from the official archive"):
        train, test = load_cifar100(str(tmp_path))
    for split, (data, fine) in ((train, made["train"]), (test, made["test"])):
        assert isinstance(split, ArraySplit)
        assert split.images.dtype == torch.uint8 and split.images.shape == (len(fine), 3, 32, 32)
        assert split.images.is_contiguous()
        assert split.targets.dtype == torch.int64 and split.targets.tolist() == fine
        # a row is 1024 red, 1024 green, 1024 blue bytes, each plane row-major 32 x 32
        for i, c, h, w in ((0, 0, 0, 1), (1, 2, 5, 17), (len(fine) - 1, 1, 31, 0)):
            assert split.images[i, c, h, w] == data[i, c * 1024 + h * 32 + w]


def test_cifar100_pixel_lands_in_place(tmp_path):
    made = _write_cifar(tmp_path, n_train=3)
    data, fine = made["train"]
    data[:] = 0
    data[1, 2 * 1024 + 5 * 32 + 17] = 200  # image 1, blue, row 5, column 17
    _py2_dump({b"batch_label": b"", b"filenames": [b""] * 3, b"fine_labels": fine, b"coarse_labels": fine,
               b"data": data}, tmp_path / "cifar-100-python" / "train")
    with pytest.warns(UserWarning):
        train, _ = load_cifar100(str(tmp_path))
    assert train.images[1, 2, 5, 17] == 200 and int(train.images.sum()) == 200


def test_cifar100_present_files_need_no_network(tmp_path):
    _write_cifar(tmp_path)
    with pytest.warns(UserWarning):
        train, _ = load_cifar100(str(tmp_path), download=True)  # all files there: torchvision downloads nothing
    assert len(train) == 6


def test_cifar100_reads_as_torchvision_does(tmp_path):
    from torchvision.datasets import CIFAR100

    class Unchecked(CIFAR100):                         # torchvision's reader without its md5 checks
        train_list, test_list = [["train", None]], [["test", None]]
        meta = {**CIFAR100.meta, "md5": None}
    _write_cifar(tmp_path, n_train=9, n_test=5, seed=3)
    with pytest.warns(UserWarning):
        ours = load_cifar100(str(tmp_path))
    for split, train in zip(ours, (True, False)):
        ref = Unchecked(str(tmp_path), train=train)
        assert torch.equal(split.images, torch.from_numpy(ref.data).permute(0, 3, 1, 2))     # NHWC -> NCHW
        assert split.targets.tolist() == ref.targets


def test_md5_of_a_file_is_computed_once_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    calls = []
    real = sources.hashlib.file_digest
    monkeypatch.setattr(sources.hashlib, "file_digest", lambda f, a: calls.append(1) or real(f, a))
    assert sources._md5(str(path)) == sources._md5(str(path)) == hashlib.md5(b"one").hexdigest()
    assert len(calls) == 1                                # the second job reads the cache
    path.write_bytes(b"two!")                             # another size and time: hashed again
    assert sources._md5(str(path)) == hashlib.md5(b"two!").hexdigest() and len(calls) == 2


def test_cifar100_missing(tmp_path):
    with pytest.raises(DatasetError, match="cifar-100-python") as e:
        load_cifar100(str(tmp_path))
    assert "download: true" in str(e.value) and "cifar-100-python.tar.gz" in str(e.value)
    _write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetError, match="meta missing"):
        load_cifar100(str(tmp_path))


def test_cifar100_truncated_pickle_is_named(tmp_path):
    _write_cifar(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ".*truncated or corrupt"):
        load_cifar100(str(tmp_path))


def test_cifar100_python3_pickle_is_rejected_by_name(tmp_path):
    _write_cifar(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    with open(path, "wb") as f:  # bytes keys, as Python 3 writes them: not the archive's format
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0]}, f)
    with pytest.raises(DatasetError, match=re.escape(str(path)) + " is not a CIFAR-100 pickle"):
        load_cifar100(str(tmp_path))


# -------------------------------------------------------------------------------------------------- Fashion-MNIST

def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049  # 0x08 = uint8, then the number of dimensions
    return struct.pack(">i" + "i" * array.ndim, magic, *array.shape) + array.tobytes()


def _write_mnist(folder, gz: bool = True, n_train: int = 7, n_test: int = 3, classes: int = 10) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as f:
                    f.write(_idx_bytes(array))
            else:
                (folder / name).write_bytes(_idx_bytes(array))
        made[prefix] = (images, labels)
    return made


def _check_mnist(loaded, made) -> None:
    for split, prefix in zip(loaded, ("train", "t10k")):
        images, labels = made[prefix]
        assert split.images.dtype == torch.uint8 and split.images.shape == (len(labels), 1, 28, 28)
        assert np.array_equal(split.images[:, 0].numpy(), images)
        assert split.images[2, 0, 3, 20] == images[2, 3, 20]  # row 3, column 20
        assert split.targets.dtype == torch.int64 and split.targets.tolist() == labels.tolist()


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_flat_folder(tmp_path, gz):
    made = _write_mnist(tmp_path / "fm", gz=gz)
    before = sorted(os.listdir(tmp_path / "fm"))
    _check_mnist(load_fashion_mnist(str(tmp_path / "fm")), made)
    assert sorted(os.listdir(tmp_path / "fm")) == before  # nothing gunzipped into the data folder


def test_idx_files_read_as_torchvision_does(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file
    made = _write_mnist(tmp_path, gz=False)
    for name, ndim, reader in (("train-images-idx3-ubyte", 3, read_image_file),
                               ("train-labels-idx1-ubyte", 1, read_label_file)):
        ours = sources.read_idx(str(tmp_path / name), ndim)
        assert ours.dtype == torch.uint8 and torch.equal(ours.long(), reader(str(tmp_path / name)).long())
    assert made


def test_fashion_mnist_torchvision_layout(tmp_path):
    made = _write_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    _check_mnist(load_fashion_mnist(str(tmp_path)), made)


def test_fashion_mnist_missing(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte") as e:
        load_fashion_mnist(str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_truncated_is_named(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ".*truncated or corrupt"):
        load_fashion_mnist(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_debian_package():
    train, test = load_fashion_mnist("/usr/share/datasets/fashion-mnist")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.targets).tolist() == [6000] * 10


# ------------------------------------------------------------------------------------------------------- ImageNet

WNIDS = ["n04000000", "n01000000", "n03000000", "n02000000"]


def _write_imagenet(root, wnids=WNIDS, train_per_class: int = 2, val_per_class: int = 1) -> None:
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (4, 4), (k * 40, i * 60, 0)).save(root / split / wnid / f"{wnid}_{i}.JPEG")


def _class_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def test_imagenet_all_classes(tmp_path):
    _write_imagenet(tmp_path)
    train, val = load_imagenet(str(tmp_path))
    ids = {w: i for i, w in enumerate(sorted(WNIDS))}
    assert isinstance(train, FolderSplit) and len(train) == 8 and len(val) == 4
    for split in (train, val):
        assert all(t == ids[_class_of(p)] for p, t in split.samples)
        assert split.targets.tolist() == [t for _, t in split.samples]
    assert Image.open(train.samples[0][0]).size == (4, 4)


def test_imagenet_chosen_classes(tmp_path):
    _write_imagenet(tmp_path)
    train, val = load_imagenet(str(tmp_path), ["n03000000", "n01000000"])
    ids = {"n01000000": 0, "n03000000": 1}
    assert len(train) == 4 and len(val) == 2
    for split in (train, val):
        assert {_class_of(p) for p, _ in split.samples} == set(ids)
        assert all(t == ids[_class_of(p)] for p, t in split.samples)
    with pytest.raises(DatasetError, match="n09"):
        load_imagenet(str(tmp_path), ["n01000000", "n09999999"])


def test_imagenet_missing_val(tmp_path):
    _write_imagenet(tmp_path)
    for path in (tmp_path / "val").rglob("*.JPEG"):
        path.unlink()
    for folder in (tmp_path / "val").iterdir():
        folder.rmdir()
    (tmp_path / "val").rmdir()
    with pytest.raises(DatasetError, match="val") as e:
        load_imagenet(str(tmp_path))
    assert "valprep" in str(e.value) and "train/<wnid>" in str(e.value)


def test_imagenet_class_missing_from_val(tmp_path):
    _write_imagenet(tmp_path)
    (tmp_path / "val" / "n03000000" / "n03000000_0.JPEG").unlink()
    (tmp_path / "val" / "n03000000").rmdir()
    with pytest.raises(DatasetError, match="n03000000"):
        load_imagenet(str(tmp_path))


def _official_subset(classes: list[str], num: int, seed: int) -> list[str]:
    """gen_imagenet_subset.py's own calls, on the global RNG (restored afterwards)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return [str(c) for c in np.random.choice(classes, num, replace=False)]
    finally:
        np.random.set_state(state)


def test_imagenet_subset_classes(tmp_path):
    names = [f"n{(i * 7919) % 100003:08d}" for i in range(40)]  # created out of sorted order
    for name in names:
        (tmp_path / "train" / name).mkdir(parents=True)
    state = np.random.get_state()[1].copy()
    chosen = imagenet_subset_classes(str(tmp_path), num=10, seed=1993)
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is left alone
    assert chosen == _official_subset(sorted(names), 10, 1993)
    assert chosen == imagenet_subset_classes(str(tmp_path), num=10, seed=1993)
    assert len(set(chosen)) == 10 and set(chosen) <= set(names)
    assert chosen != imagenet_subset_classes(str(tmp_path), num=10, seed=1994)
    assert imagenet_subset_classes(str(tmp_path), num=10, seed=7) == _official_subset(sorted(names), 10, 7)
    with pytest.raises(DatasetError):
        imagenet_subset_classes(str(tmp_path), num=41)


def test_write_class_list(tmp_path):
    path = tmp_path / "out" / "classes.txt"
    write_class_list(str(path), ["n02", "n01"])
    write_class_list(str(path), ["n03", "n01"])
    assert path.read_text() == "n03\nn01\n"
    assert os.listdir(tmp_path / "out") == ["classes.txt"]


# ------------------------------------------------------------------------------------------------------- dispatch

def test_load_splits_synthetic():
    train, test = load_splits("synthetic", None, num_classes=3, train_per_class=4, test_per_class=2,
                              synthetic_seed=5)
    ref_train, ref_test = make_synthetic(3, 4, 2, seed=5)
    assert torch.equal(train.images, ref_train.images) and torch.equal(test.targets, ref_test.targets)
    assert len(train) == 12 and len(test) == 6


def test_load_splits_real_with_subsampling(tmp_path):
    _write_mnist(tmp_path, n_train=50, n_test=30)
    train, test = load_splits("fashion_mnist", str(tmp_path), train_per_class=2, test_per_class=1)
    assert torch.bincount(train.targets).tolist() == [2] * 10
    assert torch.bincount(test.targets).tolist() == [1] * 10
    full, _ = load_fashion_mnist(str(tmp_path))
    keep = [i for i in range(len(full)) if any(torch.equal(full.images[i], x) for x in train.images)]
    assert torch.equal(full.targets[keep], train.targets)  # images keep their own labels


def test_load_splits_imagenet_subset(tmp_path):
    _write_imagenet(tmp_path)
    train, val = load_splits("imagenet_subset", str(tmp_path), num_classes=2, subset_seed=3)
    chosen = sorted(_official_subset(sorted(WNIDS), 2, 3))
    assert {_class_of(p): t for p, t in train.samples} == {w: i for i, w in enumerate(chosen)}
    assert len(val) == 2


def test_load_splits_unknown_source():
    with pytest.raises(ValueError, match="cifar100.*fashion_mnist.*imagenet.*synthetic"):
        load_splits("mnist", "/nowhere")
