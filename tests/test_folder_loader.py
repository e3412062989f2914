"""Issue 24 (2): folder (ImageNet-layout) batches leave the DataLoader workers as uint8 and are normalised on the
device, to the same floats as torchvision's ToTensor + Normalize in the workers; the workers follow the CPUs the job
was given; a prefetch that would not fit in /dev/shm stops the job at once, saying what to change."""
from __future__ import annotations

import os

import pytest
import torch

from test_gpu_folder import write_tree
from ucir.data import loaders
from ucir.data.loaders import FolderImages, _FolderDataset, decode_workers, shm_problem
from ucir.data.sources import load_imagenet
from ucir.data.specs import spec_for
from ucir.jobs import loader_workers

CPU = torch.device("cpu")
SPEC = spec_for("imagenet")


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    return load_imagenet(str(write_tree(tmp_path_factory.mktemp("imagenet"), 3, 1, size=300)), test=False)[0]


def _float_reference(split) -> _FolderDataset:
    """What FolderImages decoded to before: ToTensor and Normalize in the worker, float32 batches."""
    from torchvision import transforms as T
    norm = T.Normalize(SPEC.mean, SPEC.std)
    return _FolderDataset(split.samples,
                          T.Compose([T.RandomResizedCrop(SPEC.size), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
                          T.Compose([T.Resize(SPEC.test_resize), T.CenterCrop(SPEC.size), T.ToTensor(), norm]))


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance between two float32 tensors in units in the last place (same-sign values)."""
    assert a.dtype == b.dtype == torch.float32 and torch.equal(a.sign(), b.sign())
    return int((a.view(torch.int32).long() - b.view(torch.int32).long()).abs().max())


def _compare(train, device: torch.device, workers: int) -> int:
    images = FolderImages(train, SPEC, device, workers=workers)
    reference = _float_reference(train)
    worst = 0
    for is_train in (True, False):
        got = [x for x, _ in images.batches(torch.arange(len(train)), 5, is_train, torch.Generator().manual_seed(7))]
        items = [item for batch in images._plan.batches for item in batch]
        want = torch.stack([reference[item][0] for item in items])                  # N x 3 x 224 x 224 float32
        got = torch.cat(got).cpu()
        assert got.dtype == torch.float32 and got.shape == want.shape
        worst = max(worst, _ulps(got, want))
    images.close()
    return worst


@pytest.mark.parametrize("workers", [0, 2])
def test_uint8_batches_normalised_on_the_device_are_the_float_batches_of_before(train, workers):
    """On the CPU the same float32 operations in the same order: identical, bit for bit."""
    assert _compare(train, CPU, workers) == 0


@pytest.mark.cuda
def test_uint8_batches_normalised_on_cuda_are_within_one_ulp(train):
    """On CUDA the subtraction and the division are IEEE-rounded as on the CPU (torch builds without fast math);
    one ulp is the most any single rounding could differ by."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    assert _compare(train, torch.device("cuda"), 2) <= 1


def test_batches_leave_the_workers_as_uint8(train):
    images = FolderImages(train, SPEC, CPU, workers=1)
    images._plan.batches = [[(0, 5), (1, -1)]]                      # one training and one test item
    x, y = next(iter(images.loader()))
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 224, 224) and y.dtype == torch.int64
    images.close()


def test_workers_follow_the_cpus_the_job_was_given(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [decode_workers(t) for t in (1, 2, 9, 16, 32)] == [1, 1, 8, 15, 15]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})    # e.g. Slurm gave 4 CPUs
    assert decode_workers(16) == 3
    assert loader_workers(None, 16) == 3 and loader_workers(6, 16) == 6       # `workers:` set in the config wins


def test_the_prefetch_must_fit_in_shared_memory(train, monkeypatch):
    mb = 2 ** 20
    batch = 128 * 3 * 224 * 224                                                # 18.4 MB of uint8
    assert shm_problem(1, 128, SPEC, 64 * mb) is None                          # 2 batches: 36.8 MB
    problem = shm_problem(4, 128, SPEC, 64 * mb)
    assert problem.startswith("folder data: 4 loader workers x 2 batches x 128 images of 3 x 224 x 224 uint8 need "
                              f"{4 * 2 * batch / mb:.0f} MB of shared memory, but /dev/shm has 64 MB free")
    assert "--shm-size=184m" in problem and "set `workers: 1`" in problem
    assert "lower the batch size" in shm_problem(1, 256, SPEC, 64 * mb)      # not even one worker fits
    assert shm_problem(0, 256, SPEC, 1) is None and shm_problem(4, 128, SPEC, None) is None
    monkeypatch.setattr(loaders, "shm_free", lambda: 4 * mb)
    images = FolderImages(train, SPEC, CPU, workers=2)
    with pytest.raises(RuntimeError, match=r"^folder data: 2 loader workers x 2 batches x 8 images"):
        next(images.batches(torch.arange(len(train)), 8, True, torch.Generator().manual_seed(0)))
    assert images._loader is None                                              # no worker was started
