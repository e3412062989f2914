"""The prepare_data rule's arrays (ucir.data.prepared): equal to the source as read, mapped by the stage jobs
(workflow/scripts/stage_job.py), planned for the in-memory sources only; inference jobs do no cuDNN autotuning."""
from __future__ import annotations

import copy
import gzip
import importlib
import pickle
import struct
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ucir import deps, pipeline
from ucir.config import PREPARED_SOURCES, SOURCES, resolve
from ucir.data import load_run_data, load_splits, prepare_dataset, sources
from ucir.data.prepared import FILES, load_prepared
from ucir.tools import plan
from ucir.tools.startup import PAPER, fake_cifar100

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cifar(tmp_path):
    root = tmp_path / "cifar100"
    fake_cifar100(root, train=300, test=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # the stand-in is not the official file
        prepare_dataset("cifar100", str(root), str(tmp_path / "prepared"))
    return root, tmp_path / "prepared"


def _same(a, b):
    assert a.images.dtype == b.images.dtype == torch.uint8 and torch.equal(a.images, b.images)
    assert a.targets.dtype == b.targets.dtype == torch.int64 and torch.equal(a.targets, b.targets)


def test_prepared_cifar100_equals_the_unpickled_splits(cifar):
    root, folder = cifar
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = sources.load_cifar100(str(root))
        sub_read = load_splits("cifar100", str(root), train_per_class=2, test_per_class=1)
    for mapped, original in zip(load_prepared(folder), read):
        _same(mapped, original)
    # the per-run subsampling applies to the mapped arrays as to the source
    for mapped, original in zip(load_splits("cifar100", None, train_per_class=2, test_per_class=1,
                                            prepared=str(folder)), sub_read):
        _same(mapped, original)
    train, test = load_prepared(folder, test=False)
    assert test is None and len(train) == 300


def _idx(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: magic 0, 0, 0x08, ndim, then big-endian sizes."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def test_prepared_fashion_mnist_equals_the_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                            ("labels-idx1", (np.arange(n) % 10).astype(np.uint8))):
            with gzip.open(tmp_path / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(_idx(array))
    prepare_dataset("fashion_mnist", str(tmp_path), str(tmp_path / "prepared"))
    for mapped, original in zip(load_prepared(tmp_path / "prepared"), sources.load_fashion_mnist(str(tmp_path))):
        _same(mapped, original)


def test_other_sources_are_not_prepared(tmp_path):
    with pytest.raises(ValueError, match="source 'synthetic' is not prepared"):
        load_splits("synthetic", None, num_classes=4, prepared=str(tmp_path))
    with pytest.raises(ValueError, match="source 'imagenet' is not prepared"):
        prepare_dataset("imagenet", str(tmp_path), str(tmp_path / "prepared"))
    with pytest.raises(FileNotFoundError, match="train_images.npy is missing"):
        load_prepared(tmp_path)


class Named(dict):
    """Snakemake's named lists (input, params): keys() and attribute access."""
    __getattr__ = dict.__getitem__


def _stage_job_module():
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    try:
        return importlib.import_module("stage_job")
    finally:
        sys.path.remove(str(REPO / "workflow" / "scripts"))


def _snakemake(rule, stage, cfg, root, prepared, log):
    """What Snakemake hands a stage rule's script, for dataset `c`."""
    inputs = Named(model="unused.pt", **({"data": str(prepared)} if prepared else {}))
    return SimpleNamespace(rule=rule, params=Named(run=deps.stage_settings(stage, cfg, 0)), input=inputs,
                           config={"device": "cpu", "datasets": {"c": {"source": "cifar100", "root": str(root)}}},
                           wildcards=Named(dataset="c"), log=[str(log)], threads=1)


def test_a_stage_job_maps_the_prepared_arrays_instead_of_unpickling(cifar, tmp_path, monkeypatch):
    root, folder = cifar
    cfg = resolve("lucir", dict(PAPER, root=str(root)))
    stage_job = _stage_job_module().stage_job

    def no_unpickling(*a, **k):
        raise AssertionError("the source was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    with stage_job(_snakemake("evaluate_base", "evaluate_phase", cfg, root, folder, tmp_path / "j.log")) as j:
        assert j.prepared == str(folder)
        data = load_run_data(j.cfg, j.device, workers=1, prepared=j.prepared)
        maps = Path("/proc/self/maps").read_text()
        assert str(folder / "train_images.npy") in maps and str(folder / "test_images.npy") in maps
    assert len(data.train) == 300 and len(data.test) == 200


@pytest.mark.parametrize("rule, stage, autotune", [("evaluate_phase", "evaluate_phase", False),
                                                   ("select_exemplars", "select_exemplars", False),
                                                   ("train_phase", "train_phase", True)])
def test_inference_jobs_do_not_autotune_cudnn(rule, stage, autotune, tmp_path, monkeypatch):
    """Selection and evaluation run each shape a few times: cuDNN's autotuning would cost more than it saves. A
    training job keeps what ucir.runtime.configure set (on the CPU it sets nothing, so the flag stays)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    cfg = resolve("lucir", dict(PAPER, root=str(tmp_path)))
    stage_job = _stage_job_module().stage_job
    with stage_job(_snakemake(rule, stage, cfg, tmp_path, None, tmp_path / "j.log")) as j:
        assert j.prepared is None
        assert torch.backends.cudnn.benchmark is autotune
    assert pipeline.rule(rule).inference_only is not autotune


def test_the_rule_is_planned_for_in_memory_sources_only():
    for source in SOURCES:
        assert ("prepare_data" in pipeline.rules_per("dataset", source)) == (source in PREPARED_SOURCES), source
    config = {"seeds": [1], "datasets": {
        "c": dict(source="cifar100", root="data", num_classes=100, base_classes=50),
        "f": dict(source="fashion_mnist", root="data", num_classes=10, base_classes=4),
        "s": dict(source="synthetic", num_classes=10, base_classes=4)},
        "experiments": {"e": dict(datasets=["c", "f", "s"], methods=["lucir"], phases=[2], plot="none")}}
    assert plan.plan_config(copy.deepcopy(config))["total"].jobs["prepare_data"] == 2
