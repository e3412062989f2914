"""Atomic writes (temporary file in the same folder, then rename) and provenance for every output."""
from __future__ import annotations

import json
import os
import platform
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file `.{name}.<random>.tmp` beside `path`, open for writing. Created with mode 0666 as open() does, so
    the umask decides its permissions (0644 under the usual 0022) and the renamed output is readable by whoever the
    folder's owner lets read it; tempfile.mkstemp would make every output 0600 whatever the umask."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:                                            # 2^-48 per try
            continue


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporary files that writers of `path` left behind (a writer killed with SIGKILL, or by a node failure,
    between creating its temporary file and renaming it), old `tempfile.mkstemp` names included."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except FileNotFoundError:
        return []


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what stale_temporaries(path) lists; the names removed. Only the one writer of a path may call it:
    another writer's file in flight would go too (its rename then fails)."""
    gone = stale_temporaries(path)
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _atomic(path: str | os.PathLike, write) -> None:
    """Write `path` through a temporary file renamed over it, so the path never holds half a file. The temporaries
    an earlier, killed writer of the same path left are removed first: every output of the workflow has one writer
    at a time (its job), and the one file jobs share, ucir.data.sources' md5 cache, shrugs off a failed write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
