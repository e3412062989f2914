"""Issue 24 (1): the data are checked when the workflow starts (ucir/data/check.py, called from common.smk), so a
missing class folder, too few class folders or a truncated file stops it before any job, naming the dataset, the
folder or file and what is wrong; a dry run on a machine without the data still prints the plan and says the data
were not checked."""
from __future__ import annotations

import copy
import gzip
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from smk import dry_run, snakemake, write_config
from test_sources import _idx_bytes, _py2_dump, _write_mnist
from ucir.config import ConfigError
from ucir.data import check, sources
from ucir.data.check import data_problems
from ucir.grid import check_data, expand_runs

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())


@pytest.fixture(autouse=True)
def _own_md5_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MD5_CACHE", tmp_path / "md5-cache.json")


def wnids(n: int) -> list[str]:
    return [f"n{i:08d}" for i in range(1, n + 1)]


def write_tree(root: Path, classes: list[str], train_per_class: int = 2, val_per_class: int = 1) -> Path:
    """ImageNet's layout, root/{train,val}/<wnid>/*.JPEG, of tiny JPEGs."""
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(classes):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (4, 4), (k % 256, i * 60, 0)).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    return root


# --------------------------------------------------------------------------------------------- ImageNet layouts

def test_a_complete_tree_has_no_problems(tmp_path):
    root = write_tree(tmp_path, wnids(6), train_per_class=3, val_per_class=2)
    assert data_problems("imagenet", str(root), 6) == []
    assert data_problems("imagenet_subset", str(root), 4, train_per_class=3, test_per_class=2) == []


def test_a_class_missing_from_val_is_named(tmp_path):
    root = write_tree(tmp_path, wnids(4))
    (root / "val" / "n00000003" / "n00000003_0.JPEG").unlink()
    (root / "val" / "n00000003").rmdir()
    (problem,) = data_problems("imagenet", str(root), 4)
    assert f"class folders missing in {root / 'val'}: n00000003" in problem


def test_a_subset_class_missing_from_val_is_named(tmp_path):
    """imagenet_subset checks the classes the official script draws (ucir.data.sources.imagenet_subset_classes)."""
    root = write_tree(tmp_path, wnids(10))
    drawn = sources.imagenet_subset_classes(str(root), 5)
    left_out = sorted(set(wnids(10)) - set(drawn))
    for wnid in (drawn[0], left_out[0]):
        for f in (root / "val" / wnid).iterdir():
            f.unlink()
        (root / "val" / wnid).rmdir()
    (problem,) = data_problems("imagenet_subset", str(root), 5)
    assert problem.endswith(f"in {root / 'val'}: {drawn[0]} (train/ and val/ need a folder for every class; sort "
                            "val/ into class folders, e.g. with the usual valprep.sh)")


@pytest.mark.parametrize("source,expected", [
    ("imagenet_subset", "has 3 class folders, fewer than num_classes (5)"),
    ("imagenet", "has 3 class folders but num_classes is 5"),
])
def test_too_few_class_folders(tmp_path, source, expected):
    root = write_tree(tmp_path, wnids(3))
    (problem,) = data_problems(source, str(root), 5)
    assert f"{root / 'train'} {expected}" in problem


def test_too_few_images_per_class_for_the_configuration(tmp_path):
    root = write_tree(tmp_path, wnids(3), train_per_class=2, val_per_class=1)
    for f in (root / "train" / "n00000002").iterdir():
        f.unlink()                                                        # an empty class folder
    problems = data_problems("imagenet", str(root), 3, train_per_class=2, test_per_class=3)
    assert problems == [
        f"class folders in {root / 'train'} with fewer than 2 image(s): n00000002 (0)",
        f"class folders in {root / 'val'} with fewer than 3 image(s): n00000001 (1), n00000002 (1), n00000003 (1)"]


def test_an_unreadable_image_is_named(tmp_path):
    root = write_tree(tmp_path, wnids(2))
    bad = root / "train" / "n00000002" / "n00000002_0.JPEG"
    bad.write_bytes(b"<html>not found</html>")                           # what a failed download leaves
    (problem,) = data_problems("imagenet", str(root), 2)
    assert problem.startswith(f"unreadable images in {root / 'train'}: {bad} (UnidentifiedImageError")


def test_missing_split_folder(tmp_path):
    root = write_tree(tmp_path, wnids(2))
    for wnid in wnids(2):
        for f in (root / "val" / wnid).iterdir():
            f.unlink()
        (root / "val" / wnid).rmdir()
    (root / "val").rmdir()
    assert data_problems("imagenet", str(root), 2) == [
        f"folder {root / 'val'} not found (expected {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG)"]


def test_images_are_found_as_torchvision_finds_them(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    assert check.IMAGE_EXTENSIONS == IMG_EXTENSIONS
    folder = tmp_path / "c"
    (folder / "deeper").mkdir(parents=True)
    for name in ("a.JPEG", "b.png", "notes.txt", "deeper/c.jpg", "deeper/d.Tiff"):
        (folder / name).write_bytes(b"x")
    found = sorted(check.images_in(str(folder)))
    assert found == sorted(p for p, _ in make_dataset(str(tmp_path), {"c": 0}, extensions=IMG_EXTENSIONS))
    assert len(found) == 4


# ---------------------------------------------------------------------------------------------------- CIFAR-100

def write_cifar(root: Path, per_class: tuple[int, int] = (2, 1)) -> Path:
    """cifar-100-python/{train,test,meta} as the official archive pickles them, every class `per_class` times."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, k in zip(("train", "test"), per_class):
        fine = [c for c in range(100) for _ in range(k)]
        _py2_dump({b"data": np.zeros((len(fine), 3072), np.uint8), b"fine_labels": fine}, folder / name)
    _py2_dump({b"fine_label_names": [b"class_%d" % i for i in range(100)]}, folder / "meta")
    return folder


def test_cifar100_copy_is_checked_in_full(tmp_path):
    write_cifar(tmp_path)
    assert data_problems("cifar100", str(tmp_path), 100, train_per_class=2) == []
    (problem,) = data_problems("cifar100", str(tmp_path), 100, train_per_class=3)
    assert problem.startswith(f"CIFAR-100 file {tmp_path}/cifar-100-python/train: classes with fewer than 3 "
                              "images: 0 (2), 1 (2)")


@pytest.mark.parametrize("keep", [0, 100, -1])
def test_a_truncated_cifar100_file_is_named(tmp_path, keep):
    folder = write_cifar(tmp_path)
    path = folder / "train"
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) - 1])
    (problem,) = data_problems("cifar100", str(tmp_path), 100)
    assert problem.startswith(f"CIFAR-100 file {path} is truncated or empty")


def test_a_cifar100_file_cut_at_a_stop_byte_is_still_refused(tmp_path):
    """A cut that happens to end on the byte 0x2e passes the cheap test; unpickling the copy finds it."""
    folder = write_cifar(tmp_path)
    path = folder / "test"
    data = path.read_bytes()
    path.write_bytes(data[:200] + b".")
    (problem,) = data_problems("cifar100", str(tmp_path), 100)
    assert problem.startswith(f"CIFAR-100 file {path} cannot be unpickled")


def test_the_official_cifar100_files_are_known_by_their_md5(tmp_path, monkeypatch):
    """Files with the official md5 (remembered across runs) are not unpickled: they hold 500 / 100 images of each
    class. Here the official md5s are made those of files with one image per class."""
    folder = write_cifar(tmp_path, per_class=(1, 1))
    monkeypatch.setattr(check, "CIFAR_MD5", {n: sources._md5(str(folder / n)) for n in ("train", "test")})
    unpickled, unpickle = [], sources._cifar_file_problem
    monkeypatch.setattr(sources, "_cifar_file_problem",
                        lambda path, split_file: unpickled.append(path) or unpickle(path, split_file))
    assert data_problems("cifar100", str(tmp_path), 100, train_per_class=500, test_per_class=100) == []
    assert unpickled == [str(folder / "meta")]
    (problem,) = data_problems("cifar100", str(tmp_path), 100, train_per_class=501)
    assert "train: classes with fewer than 501 images: 0 (500)" in problem


def test_missing_cifar100_files_may_be_downloaded(tmp_path):
    assert data_problems("cifar100", str(tmp_path), 100, download=True) == []
    (problem,) = data_problems("cifar100", str(tmp_path), 100)
    assert "files missing in" in problem and "train, test, meta" in problem and "download: true" in problem


# ------------------------------------------------------------------------------------------------ Fashion-MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_headers(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz, n_train=20, n_test=10)
    assert data_problems("fashion_mnist", str(tmp_path), 10, train_per_class=2, test_per_class=1) == []
    (problem,) = data_problems("fashion_mnist", str(tmp_path), 10, train_per_class=3)
    assert "train-labels-idx1-ubyte" in problem and "classes with fewer than 3 images: 0 (2)" in problem
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-50])                              # cut short
    (problem,) = data_problems("fashion_mnist", str(tmp_path), 10)
    assert problem.startswith(f"Fashion-MNIST file {path} ") and "10 x 28 x 28 (7856 bytes)" in problem


def test_fashion_mnist_wrong_magic(tmp_path):
    _write_mnist(tmp_path, gz=True, n_train=20, n_test=10)
    labels = np.arange(10, dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(labels)[:3] + b"\x03" + _idx_bytes(labels)[4:])   # says 3-d
    (problem,) = data_problems("fashion_mnist", str(tmp_path), 10)
    assert "t10k-labels-idx1-ubyte.gz is not an idx file of 1-d unsigned bytes (header 00000803)" in problem


def test_fashion_mnist_class_count(tmp_path):
    _write_mnist(tmp_path, gz=True, n_train=20, n_test=10, classes=5)
    problems = data_problems("fashion_mnist", str(tmp_path), 10)
    assert len(problems) == 2 and all("holds 5 classes but num_classes is 10" in p for p in problems)


# ----------------------------------------------------------------------------------------- the workflow's check

def folder_config(root: Path, num_classes: int = 4, **settings) -> dict:
    cfg = copy.deepcopy(TINY)
    settings = {**cfg["datasets"]["synthetic"]["settings"], "train_per_class": None, "test_per_class": None,
                **settings}
    cfg["datasets"] = {"folder": {**cfg["datasets"]["synthetic"], "source": "imagenet", "root": str(root),
                                  "num_classes": num_classes, "settings": settings}}
    cfg["experiments"]["main"]["datasets"] = ["folder"]
    cfg["experiments"]["main"]["phases"] = [1]
    return cfg


def test_check_data_dry_run_without_data(tmp_path):
    cfg = folder_config(tmp_path / "absent")
    runs = expand_runs(cfg)
    (note,) = check_data(cfg, runs, dry_run=True)
    assert note.startswith("datasets.folder: data not checked: folder") and "does not exist" in note
    with pytest.raises(ConfigError, match=r"datasets\.folder\.root: folder '.*absent' does not exist"):
        check_data(cfg, runs, dry_run=False)


def test_check_data_asks_for_the_images_per_class_of_the_runs(tmp_path):
    root = write_tree(tmp_path, wnids(4), train_per_class=3, val_per_class=2)
    cfg = folder_config(root, train_per_class=3, test_per_class=2)
    assert check_data(cfg, expand_runs(cfg)) == []
    cfg = folder_config(root, train_per_class=4, test_per_class=2)
    with pytest.raises(ConfigError, match=r"datasets\.folder \(imagenet in .*\): class folders in .* with fewer "
                                          r"than 4 image\(s\)"):
        check_data(cfg, expand_runs(cfg))


@pytest.mark.workflow
@pytest.mark.parametrize("dry", [True, False], ids=["dry_run", "real_run"])
def test_a_missing_val_class_stops_the_workflow_before_any_job(tmp_path, dry):
    root = write_tree(tmp_path / "imagenet", wnids(4))
    (root / "val" / "n00000002" / "n00000002_0.JPEG").unlink()
    (root / "val" / "n00000002").rmdir()
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, write_config(tmp_path / "config.yaml", folder_config(root)), *(["-n"] if dry else []))
    assert proc.returncode != 0
    assert (f"invalid configuration: the data cannot be used: datasets.folder (imagenet in {root}): class folders "
            f"missing in {root}/val: n00000002") in proc.stdout, proc.stdout[-3000:]
    assert not (work / "logs").exists() and not (work / "results").exists()


@pytest.mark.workflow
def test_a_dry_run_without_the_data_prints_the_plan(tmp_path):
    cfg = write_config(tmp_path / "config.yaml", folder_config(tmp_path / "not_here"))
    work = tmp_path / "work"
    work.mkdir()
    run = dry_run(work, cfg)
    assert "datasets.folder: data not checked: folder" in run.text
    assert run.stats["train_base"] == 1 and run.stats["train_phase"] == 1
    proc = snakemake(work, cfg)                                            # a real run needs the data
    assert proc.returncode != 0 and "datasets.folder.root: folder" in proc.stdout, proc.stdout[-3000:]
    assert not (work / "logs").exists()
