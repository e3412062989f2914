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


def save_array(array, path: str | os.PathLike) -> None:
    """A numpy array as a .npy file (no pickled objects), atomically."""
    import numpy as np
    _atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_text(text: str, path: str | os.PathLike) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def save_json(obj: Any, path: str | os.PathLike) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True).encode()
    _atomic(path, lambda f: f.write(data))


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


_ROOT = Path(__file__).resolve().parent.parent            # the project root: the folder holding the ucir package
NOT_A_CHECKOUT = "not a git checkout"


def _git(*args: str) -> subprocess.CompletedProcess | None:
    """git, run in the project root; None when git cannot run. GIT_DIR and GIT_WORK_TREE are dropped from the
    environment: they would point git at whatever repository they name."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True, timeout=10,
                              cwd=_ROOT, env=env)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> dict[str, Any]:
    """The commit of the git checkout whose top level is the project root, and whether its tracked files differ
    from it. A project root that is not a checkout's top level (an installed package, or a copy inside another
    repository) gives "not a git checkout", never the enclosing repository's commit; no git gives None."""
    head = _git("rev-parse", "--show-toplevel", "HEAD")
    if head is None:
        return {"git_commit": None, "git_dirty": None}
    lines = head.stdout.splitlines()
    try:
        ours = head.returncode == 0 and len(lines) == 2 and os.path.samefile(lines[0], _ROOT)
    except OSError:
        ours = False
    if not ours:
        return {"git_commit": NOT_A_CHECKOUT, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"git_commit": lines[1], "git_dirty": dirty}


def provenance(device) -> dict[str, Any]:
    """What produced an output: package version, git commit of the project's checkout and whether its tracked
    files were modified (`git_state`), library versions, device."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from . import __version__
    try:
        tv = version("torchvision")          # without importing it: that alone takes seconds in a short job
    except PackageNotFoundError:
        tv = None
    dev = torch.device(device)
    return {
        "ucir_version": __version__,
        **git_state(),
        "torch": torch.__version__,
        "torchvision": tv,
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
    }
