"""Seeding, numerics (the training precision, fp32 decisions, determinism) and the speed switches that do not change
CPU arithmetic. Which device a job runs on is ucir.devices."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
from pathlib import Path

import numpy as np
import torch

from .config import ENUMS


def derived_seed(seed: int, phase: int, stage: int = 0) -> int:
    """One seed per (run seed, phase, stage), so every phase is reproducible on its own."""
    return (seed * 1_000_003 + phase * 1_009 + stage) % (2 ** 31)


def seed_everything(seed: int, phase: int, stage: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch from (seed, phase, stage); return a CPU generator for data order and
    augmentation."""
    s = derived_seed(seed, phase, stage)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                               # glibc <malloc.h>


def retain_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel. With its defaults, the
    megabyte-sized activations a training step frees are unmapped or trimmed and every next step faults them in
    again, page by page (what that costs a CPU training step: docs/benchmarks.md). Values are untouched; the
    process keeps its peak heap. glibc only (Linux): elsewhere nothing changes and False is returned."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


CUBLAS_WORKSPACE = ":4096:8"                                            # cuBLAS's deterministic workspace


def prepare_environment(deterministic: bool, compile_cache: str | os.PathLike | None = None) -> None:
    """What must be in the environment before CUDA starts: cuBLAS's deterministic workspace when determinism is
    asked for (cuBLAS reads it once, when it starts), and a compile cache shared by every job (TorchInductor's, with
    its Triton kernels) so that `compile: true` compiles each graph once, not in every job. Values already set
    win."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if compile_cache is not None:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(compile_cache).resolve()))


def configure(device: torch.device, deterministic: bool, precision: str = "fp32",
              keep_freed_memory: bool = True) -> None:
    """A job's numerics and speed switches, set once before its first step. Stops (PrecisionError) when the device
    cannot train in `precision` (precision_problem). Matmuls and convolutions outside training are IEEE fp32 on
    every device (training_precision turns TF32 on for the training loop alone, with precision: tf32). cudnn
    autotuning unless determinism is asked for; deterministic=True makes every nondeterministic kernel an error
    (not a warning), on CUDA with cuBLAS's deterministic workspace (prepare_environment; set here too if CUDA has
    not started yet). On CPU, freed memory is kept for reuse (retain_freed_memory); on CUDA the training step's
    memory is the CUDA caching allocator's already, and host memory is left to glibc so that DataLoader workers do
    not each keep their peak heap."""
    require_precision(precision, device)
    set_fp32_precision("ieee")
    if keep_freed_memory and device.type == "cpu":
        retain_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        prepare_environment(True)
    if deterministic or torch.are_deterministic_algorithms_enabled():  # setting it imports TorchDynamo: slow
        torch.use_deterministic_algorithms(deterministic)


# ---- training precision: a result setting (in every training stage's params), never chosen from the device -----
PRECISIONS = ENUMS["precision"]                                         # fp32 (IEEE), tf32, bf16
AMPERE = (8, 0)                     # compute capability of the first GPUs with TF32 and fast bf16 (A100, RTX 30xx)


class PrecisionError(RuntimeError):
    """The device cannot train in the precision the configuration asks for."""


def precision_problem(precision: str, device: torch.device) -> str | None:
    """Why `device` cannot train in `precision`, or None. fp32 (IEEE) runs everywhere; bf16 autocast on the CPU
    and on CUDA GPUs of compute capability >= 8.0; TF32 is a tensor-core format of those GPUs only, which the CPU
    does not have. docs/method-notes.md, Precision."""
    if precision not in PRECISIONS:
        return f"precision={precision!r} is not allowed: one of {', '.join(PRECISIONS)}"
    if precision == "fp32" or (precision == "bf16" and device.type == "cpu"):
        return None
    if device.type == "cuda":
        cap = tuple(torch.cuda.get_device_capability(device))
        if cap >= AMPERE:
            return None
        where = (f"{torch.cuda.get_device_name(device)}, compute capability {cap[0]}.{cap[1]}: "
                 f"{precision} needs {AMPERE[0]}.{AMPERE[1]} or later")
    else:
        where = f"the {device.type} has no TF32 (a tensor-core format of CUDA GPUs of compute capability >= 8.0)"
    return (f"precision: {precision} cannot train on this device ({where}). The precision is part of the results "
            f"(a cached grid never mixes them): run the grid on a device that has it, or set precision: fp32 "
            f"(a new grid of results)")


def _flags():
    """torch's fp32 precision flags (the API of torch >= 2.9; the older allow_tf32 flags are never touched: reading
    them raises once these are set): CUDA matmuls, cuDNN convolutions, all of cuDNN (what TorchInductor's own
    convolution kernels read), oneDNN's matmuls and convolutions (CPU)."""
    b = torch.backends
    return b.cuda.matmul, b.cudnn.conv, b.cudnn, b.mkldnn.matmul, b.mkldnn.conv


def fp32_precision() -> tuple[str, ...]:
    """The values of _flags(), in its order."""
    return tuple(f.fp32_precision for f in _flags())


def _set(values: tuple[str, ...]) -> None:
    for flag, value in zip(_flags(), values):
        flag.fp32_precision = value


def set_fp32_precision(cuda: str) -> None:
    """CUDA matmuls and cuDNN in `cuda` ("ieee" or "tf32"); oneDNN's on the CPU "ieee" always."""
    _set((cuda, cuda, cuda, "ieee", "ieee"))


def bf16_training(precision: str) -> bool:
    """Whether training runs under bf16 autocast: precision: bf16, on every device (precision_problem stops a
    device without it)."""
    return precision == "bf16"


def require_precision(precision: str, device: torch.device) -> None:
    """Stop (PrecisionError) where `device` cannot train in `precision`."""
    problem = precision_problem(precision, device)
    if problem is not None:
        raise PrecisionError(problem)


@contextlib.contextmanager
def _fp32_flags(cuda: str):
    before = fp32_precision()
    set_fp32_precision(cuda)
    try:
        yield
    finally:
        _set(before)


@contextlib.contextmanager
def training_precision(device: torch.device, precision: str):
    """The training loop's numerics: stops where the device lacks `precision`; TF32 matmuls and convolutions for
    precision: tf32, IEEE fp32 otherwise (bf16 autocast is per step: `autocast`); the flags as they were after."""
    require_precision(precision, device)
    with _fp32_flags("tf32" if precision == "tf32" else "ieee"):
        yield


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast for training when `enabled` (the result of bf16_training)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def full_precision():
    """IEEE fp32 arithmetic for everything that makes a decision or a stored statistic (evaluation logits, NME,
    herding and imprinting features, class means): autocast off, whatever the caller had on, and no TF32 in
    CUDA matmuls and convolutions, whatever the run's precision."""
    with _fp32_flags("ieee"), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        yield
