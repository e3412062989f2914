"""Seeding, numerics (bf16 training, fp32 decisions, determinism) and the speed switches that do not change CPU
arithmetic. Which device a job runs on is ucir.devices."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
from pathlib import Path

import numpy as np
import torch


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


def configure(device: torch.device, deterministic: bool, keep_freed_memory: bool = True) -> None:
    """cudnn autotuning and TF32 unless determinism is asked for. deterministic=True makes every
    nondeterministic kernel an error (not a warning), on CUDA with cuBLAS's deterministic workspace
    (prepare_environment; set here too if CUDA has not started yet). On CPU, freed memory is kept for reuse
    (retain_freed_memory); on CUDA the training step's memory is the CUDA caching allocator's already, and host
    memory is left to glibc so that DataLoader workers do not each keep their peak heap."""
    if keep_freed_memory and device.type == "cpu":
        retain_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    if deterministic:
        prepare_environment(True)
    if deterministic or torch.are_deterministic_algorithms_enabled():  # setting it imports TorchDynamo: slow
        torch.use_deterministic_algorithms(deterministic)


BF16_CAPABILITY = (8, 0)                                                 # Ampere: native bf16 tensor cores


def bf16_training(amp: bool | str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast. amp="auto": on CUDA GPUs of compute capability >= 8.0 only (fp32
    on the CPU and on older GPUs); True: wherever bf16 is fast, the CPU included, fp32 on GPUs older than 8.0;
    False: never."""
    if amp is False or device.type not in ("cuda", "cpu"):
        return False
    if device.type == "cpu":
        return amp is True
    return tuple(torch.cuda.get_device_capability(device)) >= BF16_CAPABILITY


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast for training when `enabled` (the result of bf16_training)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def full_precision():
    """fp32 arithmetic for everything that makes a decision or a stored statistic (evaluation logits, NME,
    herding and imprinting features, class means): autocast off, whatever the caller had on, and no TF32 in
    CUDA matmuls and convolutions."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
