"""Atomic writes (temporary file in the same folder, then rename) and provenance for every output."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def _atomic(path: str | os.PathLike, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    import torch
    _atomic(path, lambda f: torch.save(obj, f))


def load_torch(path: str | os.PathLike) -> Any:
    """Checkpoints are plain dicts of tensors and builtins: never unpickle arbitrary objects."""
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)


def save_json(obj: Any, path: str | os.PathLike) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True).encode()
    _atomic(path, lambda f: f.write(data))


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device) -> dict[str, Any]:
    """What produced an output: package version, git commit (and whether the tree was dirty), library versions,
    device."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from . import __version__
    try:
        tv = version("torchvision")          # without importing it: that alone takes seconds in a short job
    except PackageNotFoundError:
        tv = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dev = torch.device(device)
    return {
        "ucir_version": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "torchvision": tv,
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
    }
