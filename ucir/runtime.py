"""Device choice, seeding and the speed switches that do not change CPU arithmetic."""
from __future__ import annotations

import random

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA when present, else CPU. cuda: fail clearly if there is none. With several visible GPUs (a
    workstation running jobs side by side) the one with the most free memory is taken."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch.cuda.is_available() is False")
    n = torch.cuda.device_count()
    best = max(range(n), key=lambda i: torch.cuda.mem_get_info(i)[0]) if n > 1 else 0
    return torch.device("cuda", best)


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


def configure(device: torch.device, deterministic: bool) -> None:
    """cudnn autotuning unless determinism is asked for (which costs speed on CUDA)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
