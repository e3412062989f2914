"""Issues 18 (1, 3, 6) and 23 (1, 2): which device a job takes, on CPU with a fake CUDA, a fake NVML and fake
device nodes and driver libraries. A GPU that torch cannot use stops the job and says why, whether the job was given
it or the machine merely has it; the CPU only where there is no GPU at all; a GPU is chosen by its load (ucir's
slots), then NVML's free memory, never by creating CUDA contexts on other GPUs, and several jobs share one; the lock
files work for every user of the machine; bf16 only on capability >= 8.0; determinism is an error, not a warning,
with cuBLAS's workspace set before CUDA starts; one compile cache for every job."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import types
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from ucir import devices
from ucir.devices import (CUDA_REQUESTED, DEFAULT_JOBS_PER_GPU, GpuPolicy, GpuProbe, arch_supported, choose_gpu,
                          gpu_evidence, gpus_given, pick_device)

from ucir.runtime import configure, prepare_environment

REPO = Path(__file__).resolve().parents[1]

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
    monkeypatch.setattr(devices, "driver_cuda_version", lambda probe=None: (12, 4))


def _no_library(name):
    raise OSError(f"{name}: cannot open shared object file")


@pytest.fixture
def machine(tmp_path):
    """A GpuProbe over fake /dev and /proc folders, a loader and an NVML count: nothing of a GPU unless a test
    adds it (a file dev/nvidia0, a folder proc/<PCI address>, a library name in `libraries`, `nvml[0]`)."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    libraries, nvml = {}, [None]

    def load(name):
        if name not in libraries:
            _no_library(name)
        return libraries[name]
    probe = GpuProbe(dev_dir=tmp_path / "dev", proc_dir=tmp_path / "proc", load=load, nvml_count=lambda: nvml[0])
    return SimpleNamespace(probe=probe, dev=tmp_path / "dev", proc=tmp_path / "proc", libraries=libraries,
                           nvml=nvml)


@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"SLURM_JOB_GPUS": "2"}, {"SLURM_STEP_GPUS": "0,1"},
                                 {"GPU_DEVICE_ORDINAL": "1"}, {"SLURM_JOB_GPUS": "0", "SLURM_JOB_ID": "7"}])
def test_auto_stops_when_the_job_was_given_a_gpu_torch_cannot_use(broken_cuda, machine, env):
    with pytest.raises(RuntimeError) as e:
        pick_device("auto", env=env, probe=machine.probe)
    msg = str(e.value)
    k, v = next(iter(env.items()))
    for words in (f"{k}={v}", "built for CUDA 13.0", "supports CUDA up to 12.4", "driver is too old",
                  "https://download.pytorch.org/whl/cu126", "torch.cuda.is_available()", "device: cpu"):
        assert words in msg, (words, msg)


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"},
                                 {"CUDA_VISIBLE_DEVICES": "NoDevFiles"},
                                 {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0"}])   # exported into a CPU job
def test_auto_falls_back_to_the_cpu_only_where_there_is_no_gpu_at_all(broken_cuda, machine, env):
    (machine.dev / "nvidiactl").touch()                       # control nodes without a GPU node are not a GPU
    (machine.dev / "nvidia-uvm").touch()
    assert gpus_given(env) == {} and gpu_evidence(env, machine.probe) == []
    assert pick_device("auto", env=env, probe=machine.probe) == CPU


def _sign(machine, kind: str) -> str:
    """Give the fake machine one sign of a GPU; returns the words the error must show."""
    if kind == "device node":
        (machine.dev / "nvidia0").touch()
        return f"device node {machine.dev / 'nvidia0'}"
    if kind == "kernel driver":
        (machine.proc / "0000:01:00.0").mkdir()
        return "kernel driver GPU 0000:01:00.0"
    if kind in ("libcuda.so.1", "libnvidia-ml.so.1"):
        machine.libraries[kind] = SimpleNamespace(cuDriverGetVersion=lambda ptr: 0)
        return f"driver library {kind} loads"
    machine.nvml[0] = 2
    return "NVML counts 2 GPU(s)"


SIGNS = ["device node", "kernel driver", "libcuda.so.1", "libnvidia-ml.so.1", "NVML"]


@pytest.mark.parametrize("env", [{}, {"CUDA_VISIBLE_DEVICES": "-1"}, {"SLURM_JOB_ID": "7"}])
@pytest.mark.parametrize("kind", SIGNS)
def test_auto_stops_on_a_machine_with_a_gpu_torch_cannot_use_without_scheduler_variables(broken_cuda, machine, kind,
                                                                                          env):
    words = _sign(machine, kind)
    with pytest.raises(RuntimeError) as e:
        pick_device("auto", env=env, probe=machine.probe)
    msg = str(e.value)
    for w in (words, "torch cannot use", "built for CUDA 13.0", "driver is too old",
              "https://download.pytorch.org/whl/cu126", "set device: cpu"):
        assert w in msg, (w, msg)
    assert pick_device("cpu", env=env, probe=machine.probe) == CPU          # the CPU on purpose


def test_a_cpu_only_torch_on_a_gpu_machine_stops_too(monkeypatch, machine):
    monkeypatch.setattr(torch.version, "cuda", None)
    _sign(machine, "device node")
    with pytest.raises(RuntimeError, match=r"CPU-only build.*set device: cpu"):
        pick_device("auto", env={}, probe=machine.probe)


def test_an_unknown_device_is_an_error():
    with pytest.raises(ValueError, match=r"device: 'gpu' is not one of auto, cpu, cuda"):
        pick_device("gpu")


FAKE_DRIVER = r"""
int cuDriverGetVersion(int *v) { *v = VERSION; return RESULT; }
int nvmlInit_v2(void) { return 0; }
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build a fake driver library")
@pytest.mark.parametrize("result,found", [(0, True), (34, False)])           # 34: CUDA_ERROR_STUB_LIBRARY
def test_a_driver_library_is_found_by_the_dynamic_loader_and_the_toolkit_stub_is_not(tmp_path, result, found):
    src = tmp_path / "fake.c"
    src.write_text(FAKE_DRIVER.replace("VERSION", "12040").replace("RESULT", str(result)))
    lib = tmp_path / "libcuda.so.1"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    probe = GpuProbe(dev_dir=tmp_path, proc_dir=tmp_path / "none", cuda_libraries=("libcuda.so.1", str(lib)),
                     nvml_libraries=(), nvml_count=lambda: None)
    assert gpu_evidence({}, probe) == ([f"driver library {lib} loads"] if found else [])
    assert devices.driver_cuda_version(probe) == ((12, 4) if found else None)


def test_cuda_requested_names_the_build_and_the_cause(broken_cuda, machine):
    with pytest.raises(RuntimeError) as e:
        pick_device("cuda", env={}, probe=machine.probe)
    assert str(e.value).startswith(CUDA_REQUESTED)           # tests/test_slurm.py looks for these words
    assert "built for CUDA 13.0" in str(e.value) and "too old" in str(e.value)


def test_the_likely_cause_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in devices.cuda_problem()
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda probe=None: None)
    assert "no NVIDIA driver library" in devices.cuda_problem()
    monkeypatch.setattr(devices, "driver_cuda_version", lambda probe=None: (12, 8))
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
                                                             for i in range(3)] + ["choose.lock"]
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
    assert "UCIR_GPU_MIN_FREE_MB" in msg and [f.name for f in (tmp_path / "locks").iterdir()] == ["choose.lock"]


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
    assert GpuPolicy.from_env({}).jobs_per_gpu == DEFAULT_JOBS_PER_GPU == 4


@pytest.mark.parametrize("key,value,words", [("UCIR_JOBS_PER_GPU", "0", "must be at least 1"),
                                             ("UCIR_JOBS_PER_GPU", "four", "is not an integer"),
                                             ("UCIR_GPU_WAIT", "1h", "is not a number"),
                                             ("UCIR_GPU_MIN_FREE_MB", "-5", "must be at least 0")])
def test_a_bad_policy_value_names_the_variable_and_the_value(key, value, words):
    with pytest.raises(ValueError, match=rf"{key}='{value}'.*{words}"):
        GpuPolicy.from_env({key: value})


# -------------------------------------------------------- 23.2: every GPU full, for every user of the machine
def test_four_gpus_of_four_slots_take_16_jobs_as_4_4_4_4_and_the_17th_waits(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=4)
    fake_nvml(monkeypatch, [60000, 70000, 50000, 65000])
    p = _policy(tmp_path, jobs_per_gpu=4)
    jobs = [choose_gpu(p) for _ in range(16)]
    got = [i for i, _ in jobs]
    assert got[:4] == [1, 3, 0, 2]                            # one on each GPU first (most free memory first)
    assert Counter(got) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert all(got[k:k + 4] == [1, 3, 0, 2] for k in range(0, 16, 4))
    with pytest.raises(RuntimeError, match=r"no visible GPU has a free job slot \(4 per GPU"):
        choose_gpu(p)                                         # the 17th, with no time to wait
    lines, now = [], [0.0]

    def sleep(s):                                             # while the 17th waits, a job on GPU 2 ends
        now[0] += 5
        os.close(jobs[3][1])
    index, _ = choose_gpu(_policy(tmp_path, jobs_per_gpu=4, wait_s=30), lines.append, sleep=sleep,
                          clock=lambda: now[0])
    assert index == 2 and lines[0].startswith("waiting up to 30 s for a GPU") and lines[-1] == "GPU 2 became free"


def test_lock_files_are_shared_with_every_user_whatever_the_umask(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(n=1)
    fake_nvml(monkeypatch, [60000])
    p = _policy(tmp_path)
    old = os.umask(0o077)
    try:
        choose_gpu(p)
    finally:
        os.umask(old)
    assert p.lock_dir.stat().st_mode & 0o7777 == 0o1777       # world-writable and sticky
    modes = {f.name: f.stat().st_mode & 0o777 for f in p.lock_dir.iterdir()}
    assert modes == {"choose.lock": 0o666, "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd.0.lock": 0o666}


@pytest.fixture
def shared_tmp():
    """A folder every user can reach and write in, as /tmp (pytest's tmp_path is private to its user)."""
    d = Path(tempfile.mkdtemp(prefix="ucir-locks-test-"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d)


def _made_by_another_user(lock_dir: Path, mode: int) -> None:
    """The lock files of a job of another user, as an older version made them: `mode`, its owner. Run as root,
    this process is the other user (the job under test runs as nobody); run as a user, the mode is what stops
    that user from writing or reading them."""
    lock_dir.mkdir(mode=0o1777)
    os.chmod(lock_dir, 0o1777)
    for name in ("choose.lock", "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd.0.lock"):
        (lock_dir / name).touch()
        os.chmod(lock_dir / name, mode)


def _as_other_user(fn):
    """Run fn() in a child process, as the user nobody when this one is root (root's writes bypass file modes).
    The child keeps what fn() holds (its GPU slot) until the returned `release` is called; returns (fn()'s result
    as text, release)."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                              # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.write(w, repr(fn()).encode())
        except BaseException as e:                            # noqa: BLE001 - reported to the parent
            os.write(w, f"error {type(e).__name__}: {e}".encode())
            code = 1
        finally:
            os.close(w)
            os.read(go_r, 1)
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)

    def release():
        os.write(go_w, b"x")
        os.close(go_w)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode(), release


@pytest.mark.parametrize("mode", [0o644, 0o444, 0o666])
def test_a_lock_made_by_another_user_does_not_block_and_still_counts(fake_cuda, monkeypatch, shared_tmp, mode):
    fake_cuda(n=1)
    fake_nvml(monkeypatch, [60000])
    p = _policy(shared_tmp)
    _made_by_another_user(p.lock_dir, mode if os.getuid() == 0 else 0o444)
    lines = []
    said, release = _as_other_user(lambda: choose_gpu(p, lines.append)[0])
    slot = p.lock_dir / "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd.0.lock"
    try:
        assert said == "0"                                    # the job got the slot (read-only unless mode 666)
        if os.getuid() == 0:                                  # a 0666 file opens read-write: the holder is written
            assert ("uid 65534" in slot.read_text()) is (mode == 0o666)
        with pytest.raises(RuntimeError, match="no visible GPU has a free job slot"):
            choose_gpu(p)                                     # and holds it: the slot is shared, not duplicated
    finally:
        release()
    assert choose_gpu(p)[0] == 0                              # released when that job ended
    assert not list(shared_tmp.glob("locks-uid*"))            # no per-user fallback was needed


def test_a_lock_another_user_cannot_even_read_falls_back_to_a_per_user_lock(fake_cuda, monkeypatch, shared_tmp):
    fake_cuda(n=1)
    fake_nvml(monkeypatch, [60000])
    p = _policy(shared_tmp)
    _made_by_another_user(p.lock_dir, 0o600 if os.getuid() == 0 else 0o000)
    lines = []

    def job():
        index, _ = choose_gpu(p, lines.append)
        return index, lines
    said, release = _as_other_user(job)
    release()
    uid = 65534 if os.getuid() == 0 else os.getuid()
    assert said.startswith("(0, ["), said                     # it ran, on GPU 0
    assert "cannot open the shared GPU lock" in said and f"locks-uid{uid}" in said and "chmod 666" in said
    assert (shared_tmp / f"locks-uid{uid}" / "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd.0.lock").exists()


def test_the_workstation_profile_runs_as_many_gpu_jobs_as_one_gpu_has_slots():
    """The profile's `resources: gpu` is GPUs x UCIR_JOBS_PER_GPU: for the one-GPU workstation it is written for,
    the default number of slots, and its comment says how to change both together."""
    text = (REPO / "workflow/profiles/workstation/config.yaml").read_text()
    assert yaml.safe_load(text)["resources"]["gpu"] == 1 * DEFAULT_JOBS_PER_GPU
    assert f"UCIR_JOBS_PER_GPU, default {DEFAULT_JOBS_PER_GPU}" in text and "GPUs x N" in text


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
