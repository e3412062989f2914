"""Provenance names the commit of the checkout that holds the ucir package, or says "not a git checkout", never an
enclosing repository's (issue 13). Each case copies the package (and a marker file at the project root) somewhere
else and asks the copy, in a fresh interpreter, what it records."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ucir.io import NOT_A_CHECKOUT

PACKAGE = Path(__file__).resolve().parents[1] / "ucir"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return dict(env, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
                GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, env=_env(repo.parent), capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def _repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q")
    (path / "README").write_text("a repository\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "first")
    return path


def _copy_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PACKAGE, root / "ucir", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text("# marker: the project root\n")
    return root


def _recorded(root: Path) -> dict:
    """git_state() as the copy in `root` records it (run from elsewhere, so only the package's place counts)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import ucir.io as io; "
            "print(json.dumps([io.__file__, io.git_state()]))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=root.parent, env=_env(root.parent),
                         capture_output=True, text=True, check=True)
    where, state = json.loads(out.stdout)
    assert Path(where).resolve() == (root / "ucir" / "io.py").resolve()       # the copy, not this checkout
    return state


def test_a_copy_in_a_repository_of_its_own_records_that_commit(tmp_path):
    root = _copy_project(tmp_path / "project")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "the project")
    head = _git(root, "rev-parse", "HEAD")
    assert _recorded(root) == {"git_commit": head, "git_dirty": False}
    (root / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    assert _recorded(root) == {"git_commit": head, "git_dirty": False}
    (root / "pyproject.toml").write_text("# a tracked file, modified\n")
    assert _recorded(root) == {"git_commit": head, "git_dirty": True}


def test_a_copy_inside_another_repository_is_not_a_checkout(tmp_path):
    outer = _repo(tmp_path / "outer")
    root = _copy_project(outer / "vendored" / "project")
    _git(outer, "add", "-A")
    _git(outer, "commit", "-q", "-m", "vendor the project")      # tracked and clean in the enclosing repository
    assert _recorded(root) == {"git_commit": NOT_A_CHECKOUT, "git_dirty": None}


def test_a_copy_outside_any_repository_is_not_a_checkout(tmp_path):
    root = _copy_project(tmp_path / "plain")
    if subprocess.run(["git", "rev-parse"], cwd=root, env=_env(tmp_path), capture_output=True).returncode == 0:
        pytest.skip("the temporary folder lies inside a git repository")
    assert _recorded(root) == {"git_commit": NOT_A_CHECKOUT, "git_dirty": None}
