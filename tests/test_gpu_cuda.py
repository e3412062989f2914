"""Issue 18 on a real GPU (pytest -m cuda; `make gpu-check` runs them; skipped without CUDA): a training step
never waits for the GPU, `deterministic: true` gives bit-identical weights with every kernel deterministic, each
precision the GPU has in training (issue 23: TF32 only there, bf16 autocast) with IEEE fp32 evaluation, folder
batches pinned and on the GPU, and a job's CUDA context only on its GPU.

UCIR_TEST_DEVICE=cpu runs the same code on the CPU (what can be checked there) to try the file without a GPU."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ucir.config import resolve
from ucir.data import load_run_data
from ucir.features import extract
from ucir.models import build_model
from ucir.runtime import fp32_precision, precision_problem
from ucir.train.loop import Objective, fit
from ucir.train.stages import grow_head

REPO = Path(__file__).resolve().parents[1]
ON_CPU = os.environ.get("UCIR_TEST_DEVICE") == "cpu"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (ON_CPU or torch.cuda.is_available()), reason="needs a CUDA GPU")]
DEVICE = torch.device("cpu") if ON_CPU else torch.device("cuda", 0)
SCHED = dict(epochs=2, milestones=[1], batch_size=16)


def _cfg(**kw):
    return resolve("lucir", dict(dataset="syn", source="synthetic", num_classes=6, base_classes=2, phases=2,
                                 train_per_class=24, test_per_class=8, backbone="resnet20", per_class=4,
                                 base_train=SCHED, train=SCHED, device=DEVICE.type, **kw))


def _incremental(cfg, data):
    """Phase 1 of LUCIR (CE + less-forget + margin ranking against a 2-class teacher) on the device."""
    torch.manual_seed(0)
    teacher = build_model(cfg.backbone, "cosine", 2, 3, False).to(DEVICE).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    net = build_model(cfg.backbone, "cosine", 2, 3, False).to(DEVICE)
    grow_head(net, teacher, cfg, data, 2, 4, DEVICE)
    idx = torch.cat([data.train_indices(2, 4), data.train_indices(0, 2)[:8]])
    return net, Objective(cfg, 2, 5.0, teacher), idx


@contextlib.contextmanager
def _sync_errors(on: bool):
    if DEVICE.type == "cuda" and on:
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def test_a_training_step_never_waits_for_the_gpu(monkeypatch):
    """CUDA's sync debug mode turns every host synchronisation into an error, from the first step's forward to
    the scheduler step after the epoch (the epoch's log line is allowed its one wait)."""
    cfg = _cfg()
    data = load_run_data(cfg, DEVICE)
    net, objective, idx = _incremental(cfg, data)
    terms, guard, steps = objective.terms, [], []

    def first_forward_opens(*a, **k):
        if not guard:
            guard.append(_sync_errors(True))
            guard[0].__enter__()
        steps.append(1)
        return terms(*a, **k)
    objective.terms = first_forward_opens
    real_step = torch.optim.lr_scheduler.MultiStepLR.step

    def epoch_end_closes(self, *a, **k):
        if guard:
            guard.pop().__exit__(None, None, None)
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.lr_scheduler.MultiStepLR, "step", epoch_end_closes)
    try:
        fit(net, objective, data.train_loader, idx, cfg.train, device=DEVICE, g=torch.Generator().manual_seed(0),
            log=lambda s: None, desc="phase 1")
    finally:
        while guard:
            guard.pop().__exit__(None, None, None)
    assert len(steps) == 2 * 4


_DETERMINISTIC = """
import json, sys, torch
from ucir.runtime import configure, prepare_environment
prepare_environment(True)                                 # before CUDA starts, as every job does
sys.path.insert(0, {tests!r})
import test_gpu_cuda as T
configure(T.DEVICE, True)
out = []
for _ in range(2):
    cfg = T._cfg()
    data = T.load_run_data(cfg, T.DEVICE)
    net, objective, idx = T._incremental(cfg, data)
    T.fit(net, objective, data.train_loader, idx, cfg.train, device=T.DEVICE, g=torch.Generator().manual_seed(0),
          log=lambda s: None, desc="phase 1", precision=cfg.precision)
    out.append({{k: v.detach().cpu() for k, v in net.state_dict().items()}})
print(json.dumps({{"same": all(torch.equal(out[0][k], out[1][k]) for k in out[0]),
                  "warn_only": torch.is_deterministic_algorithms_warn_only_enabled()}}))
"""


def test_deterministic_training_is_bit_identical_and_strict():
    """In a fresh process (cuBLAS reads its workspace setting once): two runs of an incremental phase with
    deterministic: true give identical weights, and no kernel in it lacks a deterministic implementation (that
    would be an error now, not a warning)."""
    r = subprocess.run([sys.executable, "-c", _DETERMINISTIC.format(tests=str(REPO / "tests"))], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"same": True, "warn_only": False}


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_each_precision_in_training_and_ieee_fp32_decisions_on_this_device(precision):
    if precision_problem(precision, DEVICE):
        pytest.skip(precision_problem(precision, DEVICE))
    cfg = _cfg(precision=precision)
    data = load_run_data(cfg, DEVICE)
    net, objective, idx = _incremental(cfg, data)
    seen = {"train": set(), "eval": set()}
    mode = ["train"]
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):      # output dtype, CUDA matmul and cuDNN conv flags at the time
            m.register_forward_hook(lambda mod, i, o: seen[mode[0]].add((o.dtype, fp32_precision()[:2])))
    fit(net, objective, data.train_loader, idx, cfg.train, device=DEVICE, g=torch.Generator().manual_seed(0),
        log=lambda s: None, desc="phase 1", precision=cfg.precision)
    mode[0] = "eval"
    feats, logits = extract(net, data.test_loader, data.test_indices(0, 4), 16, DEVICE, logits=True)
    flags = ("tf32", "tf32") if precision == "tf32" else ("ieee", "ieee")
    assert seen["train"] == {(torch.bfloat16 if precision == "bf16" else torch.float32, flags)}
    assert seen["eval"] == {(torch.float32, ("ieee", "ieee"))} and feats.dtype == logits.dtype == torch.float32


def test_folder_batches_arrive_pinned_on_the_gpu(tmp_path):
    from test_gpu_folder import write_tree

    from ucir.data.loaders import FolderImages
    from ucir.data.sources import load_imagenet
    from ucir.data.specs import spec_for
    train, _ = load_imagenet(str(write_tree(tmp_path, 4, 1)))
    images = FolderImages(train, spec_for("imagenet"), DEVICE, workers=2)
    batches = list(images.batches(torch.arange(len(train)), 8, True, torch.Generator().manual_seed(0)))
    assert all(x.device == DEVICE and y.device == DEVICE for x, y in batches)
    assert images.loader().pin_memory is (DEVICE.type == "cuda")


_CONTEXTS = """
import json, os, torch
from ucir.devices import pick_device
d = pick_device("auto")
torch.zeros(1, device=d)
out = {"device": str(d), "current": torch.cuda.current_device()}
try:
    import pynvml
    pynvml.nvmlInit()
    from ucir.devices import gpu_uuid
    mine = gpu_uuid(d.index)
    out["gpus_with_this_process"] = [
        pynvml.nvmlDeviceGetUUID(h) for h in (pynvml.nvmlDeviceGetHandleByIndex(i)
                                             for i in range(pynvml.nvmlDeviceGetCount()))
        if any(p.pid == os.getpid() for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h))]
    out["mine"] = mine
except Exception as e:
    out["nvml"] = repr(e)
print(json.dumps(out))
"""


@pytest.mark.skipif(ON_CPU, reason="CUDA contexts")
def test_a_job_creates_a_cuda_context_on_its_gpu_only(tmp_path):
    env = dict(os.environ, UCIR_GPU_LOCK_DIR=str(tmp_path), UCIR_GPU_MIN_FREE_MB="0", UCIR_GPU_WAIT="0")
    env.pop("SLURM_JOB_GPUS", None)
    env.pop("SLURM_STEP_GPUS", None)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_CONTEXTS)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["device"] == f"cuda:{out['current']}"
    if "mine" in out and out["gpus_with_this_process"]:          # NVML sees processes (not in every container)
        assert out["gpus_with_this_process"] == [out["mine"]], out
