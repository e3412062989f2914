"""Which device a job runs on, decided before any CUDA work.

- `device: cpu` is the CPU. `device: cuda` is a GPU or a clear error. `device: auto` is a GPU when torch can use
  one, the CPU only where the job was given no GPU: a job that was given one (CUDA_VISIBLE_DEVICES, Slurm's GPU
  variables) which torch cannot use stops, naming torch's CUDA build and the likely cause, instead of training on
  the CPU until its time limit.
- A GPU whose architecture the torch build has no kernels for stops the job at once, not at the first kernel.
- Under a scheduler (Slurm's GPU variables) the GPU it assigned is used. On a workstation each job takes a free
  visible GPU: free memory is read through NVML (the `gpu` extra, package nvidia-ml-py), which creates no CUDA
  context, and a per-GPU lock file (fcntl.flock, released when the process ends) keeps jobs that start together
  from all taking the same GPU. When no GPU has a free slot with enough memory the job waits, then fails with a
  message listing every GPU. The chosen GPU becomes torch's current device, so nothing touches GPU 0 by default.

Nothing here changes what a job computes, only where it runs, so this module is not part of the stage code hashes
(ucir/codehash.py). Environment variables (all optional):
    UCIR_GPU_MIN_FREE_MB   free GPU memory a job needs to start on a GPU (default 4000; needs NVML)
    UCIR_GPU_WAIT          seconds to wait for a free GPU before failing (default 3600)
    UCIR_JOBS_PER_GPU      jobs sharing one GPU (default 1)
    UCIR_GPU_LOCK_DIR      where the lock files live (default <tmp>/ucir-gpu-locks: one folder per machine)
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL")
SCHEDULER_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")   # the scheduler chose the GPU: no locks, no choice
_NO_GPU = {"", "-1", "none", "nodevfiles"}                     # values that give no GPU (Slurm: NoDevFiles)
INSTALL_HINT = ("install the torch build for this driver's CUDA version from PyTorch's wheel index, e.g. "
                "`pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126`, and check it "
                "with `python -c \"import torch; print(torch.version.cuda, torch.cuda.is_available())\"` "
                "(README: GPUs)")
CUDA_REQUESTED = "device: cuda was requested but torch.cuda.is_available() is False"

_chosen: dict[str, int] = {}                                   # this process's GPU and its lock, once chosen


def gpus_given(env=None) -> dict[str, str]:
    """The variables by which a scheduler or the user gave this process GPUs (name -> value). Inside a Slurm job
    only Slurm's own say so: CUDA_VISIBLE_DEVICES may have been exported from the shell that submitted a CPU job."""
    env = os.environ if env is None else env
    names = SCHEDULER_VARIABLES if "SLURM_JOB_ID" in env else GPU_VARIABLES
    return {k: env[k] for k in names if k in env and env[k].strip().lower() not in _NO_GPU}


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed NVIDIA driver supports (cuDriverGetVersion, which needs no CUDA
    context), or None without a driver library."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return v.value // 1000, v.value % 1000 // 10


def _version(s: str) -> tuple[int, int]:
    major, _, minor = s.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def cuda_problem() -> str | None:
    """Why torch cannot use CUDA in this process, or None when it can."""
    build = torch.version.cuda
    if build is None:
        return f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    said = "; ".join(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())
    driver = driver_cuda_version()
    if driver is None:
        cause = "no NVIDIA driver library (libcuda.so.1) can be loaded here: no driver, or none inside the container"
    elif driver < _version(build):
        cause = (f"the NVIDIA driver supports CUDA up to {driver[0]}.{driver[1]}, older than the CUDA {build} this "
                 f"torch build needs: the driver is too old for this build")
    else:
        cause = (f"the driver supports CUDA {driver[0]}.{driver[1]}, so the GPU is probably not visible to this "
                 f"process (device files, container runtime, CUDA_VISIBLE_DEVICES)")
    return f"torch {torch.__version__} is built for CUDA {build}; {cause}" + (f" (torch: {said})" if said else "")


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build with kernels for `arch_list` (torch.cuda.get_arch_list(): 'sm_80', 'sm_90a', 'compute_90',
    ...) runs on a GPU of compute capability `capability`: a cubin runs on the same major version at an equal or
    higher minor one, PTX (compute_XY) is compiled for any GPU at or above XY."""
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        digits = "".join(c for c in num if c.isdigit())
        if len(digits) < 2:
            continue
        major, minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and major == capability[0] and minor <= capability[1] and num == digits:
            return True
        if kind == "sm" and num != digits and (major, minor) == tuple(capability):     # sm_90a: exactly 9.0
            return True
        if kind == "compute" and (major, minor) <= tuple(capability):
            return True
    return False


def arch_problem(index: int) -> str | None:
    archs = torch.cuda.get_arch_list()
    cap = torch.cuda.get_device_capability(index)
    if not archs or arch_supported(cap, archs):
        return None
    return (f"GPU {index} ({torch.cuda.get_device_name(index)}) has compute capability {cap[0]}.{cap[1]}, and "
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) has kernels only for {', '.join(archs)}")


# ---- choosing one GPU of several ------------------------------------------------------------------------------
@dataclass
class GpuPolicy:
    min_free_mib: int = 4000
    wait_s: float = 3600.0
    jobs_per_gpu: int = 1
    lock_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "ucir-gpu-locks")
    poll_s: float = 5.0

    @classmethod
    def from_env(cls, env=None) -> "GpuPolicy":
        env = os.environ if env is None else env
        p = cls()
        p.min_free_mib = int(env.get("UCIR_GPU_MIN_FREE_MB", p.min_free_mib))
        p.wait_s = float(env.get("UCIR_GPU_WAIT", p.wait_s))
        p.jobs_per_gpu = max(1, int(env.get("UCIR_JOBS_PER_GPU", p.jobs_per_gpu)))
        p.lock_dir = Path(env.get("UCIR_GPU_LOCK_DIR", p.lock_dir))
        return p


def gpu_uuid(index: int) -> str:
    """GPU `index`'s UUID as NVML and CUDA_VISIBLE_DEVICES write it (GPU-...), read without a CUDA context."""
    u = str(torch.cuda.get_device_properties(index).uuid)
    return u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}"


def nvml_free_mib(uuids: list[str]) -> list[tuple[int, int] | None] | None:
    """(free, total) MiB of each GPU by UUID through NVML, which creates no CUDA context; None without NVML."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:                                                    # not installed, or no NVML library
        return None
    try:
        out = []
        for u in uuids:
            try:
                m = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByUUID(u))
                out.append((m.free >> 20, m.total >> 20))
            except Exception:                                            # a MIG slice, an unknown UUID
                out.append(None)
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _try_lock(path: Path) -> int | None:
    """An exclusive lock on `path` (held while the returned descriptor is open), or None if another process holds
    it. Lock files are shared by every user of the machine."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def choose_gpu(policy: GpuPolicy, log: Callable[[str], None] = print, sleep=time.sleep,
               clock=time.monotonic) -> tuple[int, int | None]:
    """(index, lock descriptor) of a visible GPU with a free job slot and at least policy.min_free_mib free
    memory, the one with the most free memory first; waits up to policy.wait_s, then raises RuntimeError."""
    n = torch.cuda.device_count()
    uuids = [gpu_uuid(i) for i in range(n)]
    policy.lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(policy.lock_dir, 0o1777)                               # every user's jobs share the slots
    except OSError:
        pass
    deadline, waiting = clock() + policy.wait_s, False
    while True:
        mem = nvml_free_mib(uuids)
        free = [m[0] if m else None for m in (mem or [None] * n)]
        order = sorted(range(n), key=lambda i: -(free[i] if free[i] is not None else -1))
        for i in order:
            if free[i] is not None and free[i] < policy.min_free_mib:
                continue
            for slot in range(policy.jobs_per_gpu):
                fd = _try_lock(policy.lock_dir / f"{uuids[i]}.{slot}.lock")
                if fd is not None:
                    if waiting:
                        log(f"GPU {i} became free")
                    return i, fd
        report = ", ".join(f"GPU {i} ({uuids[i]}): "
                           + (f"{mem[i][0]} of {mem[i][1]} MiB free" if mem and mem[i] else "free memory unknown")
                           for i in range(n))
        why = (f"no visible GPU has a free job slot ({policy.jobs_per_gpu} per GPU, lock files in "
               f"{policy.lock_dir}) and {policy.min_free_mib} MiB of free memory: {report}")
        if clock() >= deadline:
            raise RuntimeError(f"{why}. Waited {policy.wait_s:.0f} s (UCIR_GPU_WAIT); free a GPU, lower "
                               f"UCIR_GPU_MIN_FREE_MB, or allow more jobs per GPU (UCIR_JOBS_PER_GPU)")
        if not waiting:
            log(f"waiting up to {policy.wait_s:.0f} s for a GPU: {why}")
            waiting = True
        sleep(min(policy.poll_s, max(0.0, deadline - clock())))


def pick_device(name: str = "auto", log: Callable[[str], None] = print, policy: GpuPolicy | None = None,
                env=None) -> torch.device:
    """The job's device (see the module docstring); a chosen GPU becomes torch's current device."""
    if name == "cpu":
        return torch.device("cpu")
    problem = cuda_problem()
    if problem is not None:
        given = gpus_given(env)
        if name == "cuda":
            raise RuntimeError(f"{CUDA_REQUESTED}: {problem}. To use the GPU, {INSTALL_HINT}")
        if given:
            what = ", ".join(f"{k}={v}" for k, v in given.items())
            raise RuntimeError(f"device: auto, and this job was given a GPU ({what}) that torch cannot use: "
                               f"{problem}. To use it, {INSTALL_HINT}; to run on the CPU on purpose, set device: cpu")
        return torch.device("cpu")
    env = os.environ if env is None else env
    if "index" in _chosen:
        index = _chosen["index"]                                         # one GPU per process
    elif any(k in gpus_given(env) for k in SCHEDULER_VARIABLES):
        index = 0                                                        # the GPU the scheduler assigned
    else:
        index, _chosen["lock"] = choose_gpu(policy or GpuPolicy.from_env(env), log)
    bad = arch_problem(index)
    if bad is not None:
        raise RuntimeError(f"{bad}: it cannot run on this GPU. {INSTALL_HINT[0].upper()}{INSTALL_HINT[1:]}")
    torch.cuda.set_device(index)
    _chosen["index"] = index
    return torch.device("cuda", index)


def release_gpu() -> None:
    """Give this process's GPU slot back (it is also released when the process ends)."""
    fd = _chosen.pop("lock", None)
    _chosen.pop("index", None)
    if fd is not None:
        os.close(fd)


def describe(device: torch.device) -> str:
    """One line for the job's log: the device, and for a GPU its name, capability and memory."""
    if device.type != "cuda":
        return str(device)
    p = torch.cuda.get_device_properties(device)
    return (f"{device} ({p.name}, compute capability {p.major}.{p.minor}, {p.total_memory >> 20} MiB; torch CUDA "
            f"{torch.version.cuda})")
