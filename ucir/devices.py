"""Which device a job runs on, decided before any CUDA work (docs/gpu.md tells why and how to change it).

- `device: cpu` is the CPU. `device: cuda` is a GPU or a clear error. `device: auto` is a GPU when torch can use
  one and the CPU only where there is no NVIDIA GPU at all: when torch cannot use CUDA but the job was given a GPU
  (CUDA_VISIBLE_DEVICES, Slurm's GPU variables) or the machine shows one (GpuProbe: device nodes /dev/nvidia<N>,
  /proc/driver/nvidia/gpus, a loadable driver library, NVML), the job stops with the reason and the fix.
- A GPU whose architecture the torch build has no kernels for stops the job at once, not at the first kernel.
- Under a scheduler (Slurm's GPU variables) the GPU it assigned is used. On a workstation each job takes a slot on
  the least-loaded visible GPU (fewest ucir jobs, then most NVML free memory, read without a CUDA context), so jobs
  spread over every GPU; UCIR_JOBS_PER_GPU slots per GPU (default 4, from the memory a job needs), which the
  workstation profile's `resources: gpu` must match (GPUs x slots). A slot is a lock file held with flock for the
  job's life, chosen under one short machine-wide lock. With no free slot the job waits, then fails listing every
  GPU. The chosen GPU becomes torch's current device, so nothing touches GPU 0 by default.
- The lock files serve every user of the machine: a sticky world-writable folder, files made 0666 whatever the
  umask, another user's file locked read-only, and one this user cannot open replaced by a per-user file.

Nothing here changes what a job computes, only where it runs, so this module is not part of the stage code hashes
(ucir/codehash.py). Environment variables (all optional; a value that is not a number stops the job):
    UCIR_GPU_MIN_FREE_MB   free GPU memory a job needs to start on a GPU (default 4000; needs NVML)
    UCIR_GPU_WAIT          seconds to wait for a free GPU before failing (default 3600)
    UCIR_JOBS_PER_GPU      jobs sharing one GPU (default 4)
    UCIR_GPU_LOCK_DIR      where the lock files live (default <tmp>/ucir-gpu-locks: one folder per machine)
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL")
SCHEDULER_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")   # the scheduler chose the GPU: no locks, no choice
_NO_GPU = {"", "-1", "none", "nodevfiles"}                     # values that give no GPU (Slurm: NoDevFiles)
INSTALL_HINT = ("install the torch build for this driver's CUDA version from PyTorch's wheel index, e.g. "
                "`pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126`, and check it "
                "with `python -c \"import torch; print(torch.version.cuda, torch.cuda.is_available())\"` "
                "(docs/gpu.md)")
DEVICES = ("auto", "cpu", "cuda")
CUDA_REQUESTED = "device: cuda was requested but torch.cuda.is_available() is False"

_chosen: dict[str, int] = {}                                   # this process's GPU and its lock, once chosen
_fallbacks: set[Path] = set()                                  # shared lock files this user could not open (logged)


def gpus_given(env=None) -> dict[str, str]:
    """The variables by which a scheduler or the user gave this process GPUs (name -> value). Inside a Slurm job
    only Slurm's own say so: CUDA_VISIBLE_DEVICES may have been exported from the shell that submitted a CPU job."""
    env = os.environ if env is None else env
    names = SCHEDULER_VARIABLES if "SLURM_JOB_ID" in env else GPU_VARIABLES
    return {k: env[k] for k in names if k in env and env[k].strip().lower() not in _NO_GPU}


@contextlib.contextmanager
def _nvml() -> Iterator[object | None]:
    """The pynvml module, initialised for the block (NVML creates no CUDA context), or None without NVML."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:                                                    # not installed, or no NVML library
        yield None
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_gpu_count() -> int | None:
    """How many GPUs NVML sees, or None without NVML."""
    with _nvml() as nvml:
        try:
            return None if nvml is None else int(nvml.nvmlDeviceGetCount())
        except Exception:
            return None


@dataclass(frozen=True)
class GpuProbe:
    """Where this module looks for an NVIDIA GPU without torch (tests replace the paths and the functions)."""
    dev_dir: Path = Path("/dev")                                         # device nodes nvidia0, nvidia1, ...
    proc_dir: Path = Path("/proc/driver/nvidia/gpus")                    # one folder per GPU the kernel driver has
    cuda_libraries: tuple[str, ...] = ("libcuda.so.1", "libcuda.so")     # the CUDA driver API (driver package)
    nvml_libraries: tuple[str, ...] = ("libnvidia-ml.so.1", "libnvidia-ml.so")
    load: Callable[[str], object] = ctypes.CDLL
    nvml_count: Callable[[], int | None] = _nvml_gpu_count


CUDA_ERROR_STUB_LIBRARY = 34               # what the CUDA toolkit's stub libcuda.so (for linking) answers to every call


def _loaded(probe: GpuProbe, names: tuple[str, ...]) -> tuple[str, object] | None:
    for name in names:
        try:
            return name, probe.load(name)
        except OSError:
            continue
    return None


def _cuda_driver(probe: GpuProbe) -> tuple[str, int | None] | None:
    """(name, version code) of the CUDA driver library that loads, the code None where it answers none
    (cuDriverGetVersion, which needs no CUDA context); None without one, or with only the toolkit's stub."""
    found = _loaded(probe, probe.cuda_libraries)
    if found is None:
        return None
    v = ctypes.c_int()
    try:
        result = found[1].cuDriverGetVersion(ctypes.byref(v))
    except AttributeError:
        return found[0], None
    if result == CUDA_ERROR_STUB_LIBRARY:
        return None
    return found[0], v.value if result == 0 else None


def driver_cuda_version(probe: GpuProbe | None = None) -> tuple[int, int] | None:
    """The newest CUDA version the installed NVIDIA driver supports, or None without a driver library."""
    driver = _cuda_driver(probe or GpuProbe())
    if driver is None or driver[1] is None:
        return None
    return driver[1] // 1000, driver[1] % 1000 // 10


def gpu_evidence(env=None, probe: GpuProbe | None = None) -> list[str]:
    """Every sign of an NVIDIA GPU for this process, read without torch: the GPU variables it was given, device
    nodes, the kernel driver's GPU list, a loadable driver library (not the toolkit's stub), NVML's count."""
    probe = probe or GpuProbe()
    signs = [f"{k}={v} (given to this job)" for k, v in gpus_given(env).items()]
    signs += [f"device node {p}" for p in sorted(probe.dev_dir.glob("nvidia[0-9]*"))]
    if probe.proc_dir.is_dir():
        signs += [f"kernel driver GPU {p.name} ({probe.proc_dir})" for p in sorted(probe.proc_dir.iterdir())]
    for found in (_cuda_driver(probe), _loaded(probe, probe.nvml_libraries)):
        if found is not None:
            signs.append(f"driver library {found[0]} loads")
    count = probe.nvml_count()
    if count:
        signs.append(f"NVML counts {count} GPU(s)")
    return signs


def _version(s: str) -> tuple[int, int]:
    major, _, minor = s.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def cuda_problem(probe: GpuProbe | None = None) -> str | None:
    """Why torch cannot use CUDA in this process, or None when it can."""
    build = torch.version.cuda
    if build is None:
        return f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    said = "; ".join(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())
    driver = driver_cuda_version(probe)
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
DEFAULT_JOBS_PER_GPU = 4            # see the module docstring and docs/gpu.md; the workstation profile agrees


@dataclass
class GpuPolicy:
    min_free_mib: int = 4000
    wait_s: float = 3600.0
    jobs_per_gpu: int = DEFAULT_JOBS_PER_GPU
    lock_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "ucir-gpu-locks")
    poll_s: float = 5.0

    @classmethod
    def from_env(cls, env=None) -> "GpuPolicy":
        env = os.environ if env is None else env
        p = cls()
        p.min_free_mib = _env_number(env, "UCIR_GPU_MIN_FREE_MB", int, p.min_free_mib, 0)
        p.wait_s = _env_number(env, "UCIR_GPU_WAIT", float, p.wait_s, 0)
        p.jobs_per_gpu = _env_number(env, "UCIR_JOBS_PER_GPU", int, p.jobs_per_gpu, 1)
        p.lock_dir = Path(env.get("UCIR_GPU_LOCK_DIR", p.lock_dir))
        return p


def _env_number(env, key: str, kind: type, default, minimum):
    if key not in env:
        return default
    try:
        value = kind(env[key])
    except ValueError:
        raise ValueError(f"{key}={env[key]!r} is not {'an integer' if kind is int else 'a number'}") from None
    if value < minimum:
        raise ValueError(f"{key}={env[key]!r}: must be at least {minimum}")
    return value


def gpu_uuid(index: int) -> str:
    """GPU `index`'s UUID as NVML and CUDA_VISIBLE_DEVICES write it (GPU-...), read without a CUDA context."""
    u = str(torch.cuda.get_device_properties(index).uuid)
    return u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}"


def nvml_free_mib(uuids: list[str]) -> list[tuple[int, int] | None] | None:
    """(free, total) MiB of each GPU by UUID through NVML, which creates no CUDA context; None without NVML."""
    with _nvml() as nvml:
        if nvml is None:
            return None
        out = []
        for u in uuids:
            try:
                m = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByUUID(u))
                out.append((m.free >> 20, m.total >> 20))
            except Exception:                                            # a MIG slice, an unknown UUID
                out.append(None)
        return out


def shared_lock_dir(path: Path) -> None:
    """The lock folder, world-writable and sticky (every user creates files in it, none removes another's)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o7777 != 0o1777:
            os.chmod(path, 0o1777)                                       # mkdir's mode is cut by the umask
    except OSError:                                                      # another user's folder: theirs to fix
        pass


def _open_shared(path: Path) -> int | None:
    """A descriptor of `path` to flock on, or None if this user cannot open it. A new file is made 0666 whatever
    the umask. An existing one opens read-write without O_CREAT (which fs.protected_regular refuses on another
    user's file in a sticky folder), else read-only: flock needs no write access, so a file another user made with
    mode 0644 still locks."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        fd = None
    except PermissionError:                                              # a folder this user cannot write in
        return None
    if fd is None:
        for flags in (os.O_RDWR, os.O_RDONLY):
            try:
                fd = os.open(path, flags)
                break
            except PermissionError:
                continue
            except FileNotFoundError:                                    # removed meanwhile: the next poll makes it
                return None
        else:
            return None                                                  # another user's file this one cannot read
    try:
        os.fchmod(fd, 0o666)                    # the umask cut a new file's mode; an older file of ours is widened
    except OSError:                                                      # another user's file
        pass
    return fd


def _open_lock(policy: GpuPolicy, name: str, log: Callable[[str], None]) -> int:
    """A descriptor to flock on for the lock `name`: the shared file, or where this user cannot open it, a file in
    the per-user folder beside the shared one (said in the log: that lock then does not count the other user)."""
    fd = _open_shared(policy.lock_dir / name)
    if fd is not None:
        return fd
    own = policy.lock_dir.with_name(f"{policy.lock_dir.name}-uid{os.getuid()}")
    own.mkdir(mode=0o700, exist_ok=True)
    fd = _open_shared(own / name)
    if fd is None:
        raise PermissionError(f"cannot open the GPU lock file {own / name} (UCIR_GPU_LOCK_DIR)")
    path = policy.lock_dir / name
    if path in _fallbacks:
        return fd
    _fallbacks.add(path)
    try:
        st = path.stat()
        what = f"mode {st.st_mode & 0o777:o}, owner uid {st.st_uid}"
    except OSError as e:
        what = e.strerror
    log(f"cannot open the shared GPU lock {path} ({what}): using {own / name}, so jobs of the user who made it "
        f"are not counted on that slot; make the file mode 666 (chmod 666) to share it again")
    return fd


def _try_lock(policy: GpuPolicy, name: str, log: Callable[[str], None]) -> int | None:
    """An exclusive lock on `name` (held while the returned descriptor is open), or None if another process
    holds it."""
    fd = _open_lock(policy, name, log)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _slot_name(uuid: str, slot: int) -> str:
    return f"{uuid}.{slot}.lock"


def choose_gpu(policy: GpuPolicy, log: Callable[[str], None] = print, sleep=time.sleep,
               clock=time.monotonic) -> tuple[int, int]:
    """(index, lock descriptor) of the least-loaded visible GPU (fewest held slots, then most free memory, then the
    lowest index) that has a free slot of policy.jobs_per_gpu and at least policy.min_free_mib free memory; waits
    up to policy.wait_s, then raises RuntimeError. One job chooses at a time (a machine-wide lock held for the
    choice only), so jobs that start together see each other's slots and spread over the GPUs."""
    n = torch.cuda.device_count()
    uuids = [gpu_uuid(i) for i in range(n)]
    shared_lock_dir(policy.lock_dir)
    deadline, waiting = clock() + policy.wait_s, False
    while True:
        mem = nvml_free_mib(uuids)
        free = [m[0] if m else None for m in (mem or [None] * n)]
        guard = _open_lock(policy, "choose.lock", log)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)                            # blocks for the milliseconds of a choice
            taken: dict[int, list[int]] = {}                             # GPU -> descriptors of its free slots
            held = [0] * n
            for i in range(n):
                if free[i] is not None and free[i] < policy.min_free_mib:
                    continue
                for slot in range(policy.jobs_per_gpu):
                    fd = _try_lock(policy, _slot_name(uuids[i], slot), log)
                    if fd is None:
                        held[i] += 1
                    else:
                        taken.setdefault(i, []).append(fd)
            best = min(taken, key=lambda i: (held[i], -(free[i] or 0), i), default=None)
            for i, fds in taken.items():                                 # keep one slot of the best GPU
                for fd in fds[1:] if i == best else fds:
                    os.close(fd)
        finally:
            os.close(guard)
        if best is not None:
            fd = taken[best][0]
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} uid {os.getuid()}\n".encode())   # who holds it, for a person
            except OSError:                                              # opened read-only (another user's file)
                pass
            if waiting:
                log(f"GPU {best} became free")
            return best, fd
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
                env=None, probe: GpuProbe | None = None) -> torch.device:
    """The job's device (see the module docstring); a chosen GPU becomes torch's current device. `probe` says
    where to look for a GPU that torch cannot use (tests fake it)."""
    if name not in DEVICES:
        raise ValueError(f"device: {name!r} is not one of {', '.join(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    problem = cuda_problem(probe)
    if problem is not None:
        if name == "cuda":
            raise RuntimeError(f"{CUDA_REQUESTED}: {problem}. To use the GPU, {INSTALL_HINT}")
        signs = gpu_evidence(env, probe)
        if signs:
            raise RuntimeError(f"device: auto, and there is an NVIDIA GPU here that torch cannot use ("
                               f"{'; '.join(signs)}): {problem}. To use it, {INSTALL_HINT}; to run on the CPU on "
                               f"purpose, set device: cpu")
        return torch.device("cpu")                                       # no NVIDIA GPU at all
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
