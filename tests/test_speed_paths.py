"""Issue 5: the speed paths that do not change arithmetic (data resident on the device, batched crop/flip) give
the same results as the per-sample PIL pipeline, for the same seed; CPU jobs keep freed memory for reuse."""
import dataclasses
import platform
import subprocess
import sys

import pytest
import torch

from ucir.config import resolve
from ucir.data import load_run_data
from reference_pil import PILArrays
from ucir.evaluate import evaluate_phase
from ucir.exemplars import select_exemplars
from ucir.train import train_base, train_phase

CPU = torch.device("cpu")
SCHED = dict(epochs=2, milestones=[1], batch_size=16)


def _cfg():
    return resolve("lucir", dict(dataset="syn", source="synthetic", num_classes=6, base_classes=4, phases=1,
                                 seed=1993, train_per_class=24, test_per_class=8, backbone="resnet8", per_class=5,
                                 base_train=SCHED, train=SCHED))


def _run(reference: bool):
    cfg = _cfg()
    data = load_run_data(cfg, CPU)
    if reference:
        data = dataclasses.replace(data, train_loader=PILArrays(data.train, data.spec, CPU),
                                   test_loader=PILArrays(data.test, data.spec, CPU))
    quiet = lambda s: None  # noqa: E731
    base = train_base(cfg, data, CPU, quiet)
    mem = select_exemplars(cfg, 0, base, None, data, CPU, quiet)
    ckpt = train_phase(cfg, 1, base, mem, data, CPU, quiet)
    mem1 = select_exemplars(cfg, 1, ckpt, mem, data, CPU, quiet)
    return ckpt, mem1, evaluate_phase(cfg, 1, ckpt, mem1, data, CPU)


def test_batched_device_path_equals_per_sample_pil_pipeline():
    torch.set_num_threads(1)
    fast_ckpt, fast_mem, fast = _run(reference=False)
    ref_ckpt, ref_mem, ref = _run(reference=True)
    for k, v in fast_ckpt["model"].items():
        assert torch.equal(v, ref_ckpt["model"][k]), k
    for k in fast_mem:
        assert torch.equal(fast_mem[k], ref_mem[k])
    assert fast["cnn"] == ref["cnn"] and fast["nme"] == ref["nme"]
    assert fast["confusion_cnn"] == ref["confusion_cnn"]


_FAULTS = """
import resource, sys, torch
from ucir.runtime import configure
if sys.argv[1] == "job":                                 # what every CPU job does first
    configure(torch.device("cpu"), deterministic=False)
for _ in range(10):                                      # 40 MB: above glibc's largest dynamic mmap threshold
    torch.ones(10_000_000)                               # (and the heap reaches its steady state)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(10_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retained_freed_memory_is_reused_instead_of_faulted_in_again():
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True,
                                       text=True).stdout.split()[-1]) for mode in ("default", "job")}
    assert faults["default"] > 10 * 40e6 / 4096 * 0.9                   # every 40 MB tensor faulted in again
    assert faults["job"] < faults["default"] / 10, faults
