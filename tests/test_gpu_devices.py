"""Issue 18 (1, 3, 6): which device a job takes, on CPU with a fake CUDA and a fake NVML. A job given a GPU that
torch cannot use stops and says why; CPU fallback only without a given GPU; a GPU is chosen by NVML's free memory
and a per-GPU lock, never by creating CUDA contexts on other GPUs; bf16 only on capability >= 8.0; determinism is
an error, not a warning, with cuBLAS's workspace set before CUDA starts; one compile cache for every job."""
from __future__ import annotations

import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from ucir import devices
from ucir.devices import CUDA_REQUESTED, GpuPolicy, arch_supported, choose_gpu, gpus_given, pick_device
from ucir.runtime import configure, prepare_environment

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def _forbidden(*args, **kwargs):
    raise AssertionError("torch.cuda.mem_get_info creates a CUDA context on the GPU it asks about")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch as on a box with `n` GPUs; returns the list of torch.cuda.set_device calls."""
    def install(n=2, capability=(9, 0), archs=("sm_80", "sm_90")):
        monkeypatch.setattr(torch.version, "cuda", "13.0")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
            uuid=f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd", name=f"Fake GPU {i}", major=capability[0],
            minor=capability[1], total_memory=80 << 30))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")
        monkeypatch.setattr(torch.cuda, "mem_get_info", _forbidden)
        calls = []
        monkeypatch.setattr(torch.cuda, "set_device", calls.append)
        monkeypatch.setattr(devices, "_chosen", {})
        return calls
    yield install
    devices.release_gpu()


def fake_nvml(monkeypatch, free_mib: list[int]):
    """A pynvml module whose GPU i (UUID as fake_cuda writes it) has free_mib[i] MiB free of 80 GiB."""
    nvml = types.ModuleType("pynvml")
    by_uuid = {f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd": mib for i, mib in enumerate(free_mib)}
    nvml.nvmlInit = nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetHandleByUUID = lambda u: u
    nvml.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(free=by_uuid[h] << 20, total=80 << 30)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return by_uuid


def _policy(tmp_path, **kw):
    return GpuPolicy(**{"min_free_mib": 4000, "wait_s": 0, "jobs_per_gpu": 1, "lock_dir": tmp_path / "locks",
                        "poll_s": 0, **kw})


# ------------------------------------------------------------------------- 1: a GPU torch cannot use
@pytest.fixture
def broken_cuda(monkeypatch):
    """torch built for CUDA 13.0 on a node whose driver supports CUDA 12.4 only: is_available() is False."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: (12, 4))


@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"SLURM_JOB_GPUS": "2"}, {"SLURM_STEP_GPUS": "0,1"},
                                 {"GPU_DEVICE_ORDINAL": "1"}, {"SLURM_JOB_GPUS": "0", "SLURM_JOB_ID": "7"}])
def test_auto_stops_when_the_job_was_given_a_gpu_torch_cannot_use(broken_cuda, env):
    with pytest.raises(RuntimeError) as e:
        pick_device("auto", env=env)
    msg = str(e.value)
    k, v = next(iter(env.items()))
    for words in (f"{k}={v}", "built for CUDA 13.0", "supports CUDA up to 12.4", "driver is too old",
                  "https://download.pytorch.org/whl/cu126", "torch.cuda.is_available()", "device: cpu"):
        assert words in msg, (words, msg)


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"},
                                 {"CUDA_VISIBLE_DEVICES": "NoDevFiles"},
                                 {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0"}])   # exported into a CPU job
def test_auto_falls_back_to_the_cpu_only_where_no_gpu_was_given(broken_cuda, env):
    assert gpus_given(env) == {}
    assert pick_device("auto", env=env) == CPU


def test_cuda_requested_names_the_build_and_the_cause(broken_cuda):
    with pytest.raises(RuntimeError) as e:
        pick_device("cuda", env={})
    assert str(e.value).startswith(CUDA_REQUESTED)           # tests/test_slurm.py looks for these words
    assert "built for CUDA 13.0" in str(e.value) and "too old" in str(e.value)


def test_the_likely_cause_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in devices.cuda_problem()
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: None)
    assert "no NVIDIA driver library" in devices.cuda_problem()
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: (12, 8))
    assert "not visible to this process" in devices.cuda_problem()


@pytest.mark.parametrize("cap,archs,ok", [
    ((8, 6), ["sm_80"], True),                  # same major, higher minor: the cubin runs
    ((7, 0), ["sm_75", "sm_80"], False),        # V100 under a build that starts at sm_75
    ((9, 0), ["sm_90a"], True), ((9, 1), ["sm_90a"], False),
    ((8, 9), ["sm_75", "compute_80"], True),    # PTX is compiled for newer GPUs
    ((12, 0), ["sm_90", "sm_100"], False), ((10, 3), ["sm_100"], True),
])
def test_arch_supported(cap, archs, ok):
    assert arch_supported(cap, archs) is ok


def test_a_gpu_without_kernels_in_the_build_stops_at_once(fake_cuda):
    calls = fake_cuda(n=1, capability=(6, 1), archs=("sm_75", "sm_80"))
    with pytest.raises(RuntimeError, match=r"compute capability 6\.1.*kernels only for sm_75, sm_80"):
        pick_device("auto", env={"SLURM_JOB_GPUS": "0"})
    assert calls == []


# ------------------------------------------------------------------------------------ 3: GPU choice
def test_jobs_spread_over_free_gpus_by_nvml_without_cuda_contexts(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=3)
    fake_nvml(monkeypatch, [20000, 70000, 40000])
    p = _policy(tmp_path)
    got = [choose_gpu(p)[0] for _ in range(3)]                # three jobs starting together
    assert got == [1, 2, 0]                                   # most free memory first, then the next free GPU
    assert sorted(f.name for f in p.lock_dir.iterdir()) == [f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd.0.lock"
                                                             for i in range(3)]
    with pytest.raises(RuntimeError) as e:                   # a fourth: every slot is held
        choose_gpu(p)
    assert "no visible GPU has a free job slot" in str(e.value) and "70000 of 81920 MiB free" in str(e.value)


def test_a_gpu_without_enough_free_memory_is_not_taken(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=2)
    fake_nvml(monkeypatch, [3000, 500])                       # someone else's jobs fill both
    with pytest.raises(RuntimeError) as e:
        choose_gpu(_policy(tmp_path))
    msg = str(e.value)
    assert "4000 MiB of free memory" in msg and "GPU 0" in msg and "3000 of 81920 MiB free" in msg
    assert "UCIR_GPU_MIN_FREE_MB" in msg and list((tmp_path / "locks").iterdir()) == []


def test_several_jobs_per_gpu_when_allowed(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=1)
    fake_nvml(monkeypatch, [60000])
    p = _policy(tmp_path, jobs_per_gpu=2)
    assert [choose_gpu(p)[0], choose_gpu(p)[0]] == [0, 0]
    with pytest.raises(RuntimeError):
        choose_gpu(p)


def test_a_job_waits_for_a_slot_and_says_so(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=1)
    fake_nvml(monkeypatch, [60000])
    p = _policy(tmp_path, wait_s=30)
    _, first = choose_gpu(p)
    lines, now = [], [0.0]

    def sleep(s):                                             # the first job finishes while the second waits
        now[0] += 5
        os.close(first)
    index, fd = choose_gpu(p, lines.append, sleep=sleep, clock=lambda: now[0])
    assert index == 0 and fd is not None
    assert lines[0].startswith("waiting up to 30 s for a GPU") and lines[-1] == "GPU 0 became free"


def test_without_nvml_the_locks_alone_spread_the_jobs(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=2)
    monkeypatch.setitem(sys.modules, "pynvml", None)          # not installed
    p = _policy(tmp_path)
    assert [choose_gpu(p)[0], choose_gpu(p)[0]] == [0, 1]
    with pytest.raises(RuntimeError, match="free memory unknown"):
        choose_gpu(p)


def test_the_chosen_gpu_becomes_the_current_device(fake_cuda, monkeypatch, tmp_path):
    calls = fake_cuda(n=2)
    fake_nvml(monkeypatch, [10000, 50000])
    assert pick_device("auto", policy=_policy(tmp_path), env={}) == torch.device("cuda", 1)
    assert calls == [1]
    assert pick_device("cuda", policy=_policy(tmp_path), env={}) == torch.device("cuda", 1)   # once per process
    devices.release_gpu()
    assert choose_gpu(_policy(tmp_path))[0] == 1                # released: free again


def test_under_slurm_the_assigned_gpu_is_used_without_locks(fake_cuda, monkeypatch, tmp_path):
    calls = fake_cuda(n=1)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    p = _policy(tmp_path)
    assert pick_device("auto", policy=p, env={"SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}) == CUDA
    assert calls == [0] and not p.lock_dir.exists()


def test_policy_from_the_environment(tmp_path):
    p = GpuPolicy.from_env({"UCIR_GPU_MIN_FREE_MB": "12000", "UCIR_GPU_WAIT": "0", "UCIR_JOBS_PER_GPU": "3",
                            "UCIR_GPU_LOCK_DIR": str(tmp_path)})
    assert (p.min_free_mib, p.wait_s, p.jobs_per_gpu, p.lock_dir) == (12000, 0.0, 3, tmp_path)


# ----------------------------------------------------------------------------- 6: numerics switches
def test_determinism_is_an_error_not_a_warning_and_sets_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure(CPU, deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
            torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
    finally:
        configure(CPU, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_jobs_set_the_environment_before_cuda_starts(monkeypatch, tmp_path):
    from ucir.jobs import job
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    seen = {}
    real = devices.pick_device

    def spy(name, log=print, **kw):                           # what the environment holds when the device is chosen
        seen.update(cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                    cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        return real(name, log, **kw)
    monkeypatch.setattr("ucir.jobs.pick_device", spy)
    try:
        with job({}, {"device": "cpu", "deterministic": True, "compile": True}, str(tmp_path / "job.log")) as j:
            assert j.device == CPU
    finally:
        configure(CPU, deterministic=False)
    assert seen == {"cublas": ":4096:8", "cache": str(tmp_path / "results/.cache/torchinductor")}
    log = (tmp_path / "job.log").read_text()
    assert "fp32 (IEEE; no training in this job), deterministic: True" in log


def test_prepare_environment_keeps_values_already_set(monkeypatch, tmp_path):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/shared/cache")
    prepare_environment(True, tmp_path)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/shared/cache"
