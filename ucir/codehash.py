"""Which package code each workflow stage runs, as a hash the rules pass in `params`.

Snakemake tracks a rule's own script and text, not the modules that script imports. Each rule therefore gets a
`code` param: a hash of the syntax trees of the package modules its stage uses. Editing such a module (anything but
comments and formatting) changes the param, and Snakemake's params trigger reruns that stage and everything
downstream; stages that do not use the module keep their results.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parent

_MODEL = ["config.py", "runtime.py", "io.py", "checkpoint.py", "features.py", "models", "data"]
STAGE_MODULES: dict[str, list[str]] = {
    "train": _MODEL + ["losses.py", "train"],
    "select_exemplars": _MODEL + ["exemplars.py"],
    "evaluate": _MODEL + ["evaluate.py", "metrics.py"],
    "report": ["report", "metrics.py", "io.py"],
}
# What a stage reports while it runs (log lines, the per-epoch CSV, TensorBoard), not what it computes: editing it
# reruns nothing. A non-finite loss it detects fails the job, which then has no output to keep.
REPORTING_ONLY = frozenset({"train/progress.py"})


@lru_cache(maxsize=None)
def _file_digest(path: Path) -> str:
    tree = ast.parse(path.read_text(), filename=str(path))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def stage_hash(stage: str) -> str:
    """A short hash of the code `stage` runs (comments and formatting do not count)."""
    h = hashlib.sha256()
    for entry in STAGE_MODULES[stage]:
        p = PKG / entry
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if f.relative_to(PKG).as_posix() in REPORTING_ONLY:
                continue
            h.update(str(f.relative_to(PKG)).encode())
            h.update(_file_digest(f).encode())
    return h.hexdigest()[:16]


ENV = "UCIR_CODE_HASHES"


def submission_hashes() -> dict[str, str]:
    """Every stage's hash, computed once by the Snakemake process the user started and handed down through the
    environment to the Snakemake that each cluster job starts inside itself (the environment travels with the job):
    an edit made while a grid runs must not make a job think an earlier phase is out of date and redo it."""
    if ENV in os.environ:
        return json.loads(os.environ[ENV])
    hashes = {stage: stage_hash(stage) for stage in STAGE_MODULES}
    os.environ[ENV] = json.dumps(hashes)
    return hashes
