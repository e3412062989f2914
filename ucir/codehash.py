"""Which package code each workflow stage runs, as a hash the rules pass in `params`.

Snakemake tracks a rule's own script and text, not the modules that script imports. Each rule therefore gets a
`code` param: a hash of the syntax trees of the package modules it runs (ucir.pipeline.RULES, `code`). Editing such
a module (anything but comments, docstrings and formatting) changes the param, and Snakemake's params trigger reruns
that rule's jobs and everything downstream; rules that do not use the module keep their results.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from .pipeline import RULES

PKG = Path(__file__).resolve().parent
# Code a rule's folders hold that computes none of its outputs, so editing it reruns nothing: what a training job
# reports while it runs (log lines, the per-epoch CSV, TensorBoard; a non-finite loss it detects fails the job,
# which then has no output to keep), and the data check the workflow runs before any job.
NOT_HASHED = frozenset({"train/progress.py", "data/check.py"})


def _drop_docstrings(tree: ast.AST) -> ast.AST:
    """The tree without the docstrings of its module, classes and functions (a docstring is documentation, as a
    comment is; a function left with no statement gets `pass`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _file_digest(path: Path) -> str:
    tree = _drop_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


@lru_cache(maxsize=None)
def code_hash(modules: tuple[str, ...]) -> str:
    """A short hash of these package modules (paths under ucir/; comments, docstrings and formatting do not
    count)."""
    h = hashlib.sha256()
    for entry in modules:
        p = PKG / entry
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if f.relative_to(PKG).as_posix() in NOT_HASHED:
                continue
            h.update(str(f.relative_to(PKG)).encode())
            h.update(_file_digest(f).encode())
    return h.hexdigest()[:16]


ENV = "UCIR_CODE_HASHES"


def submission_hashes() -> dict[str, str]:
    """Every rule's code hash ({rule: hash}), computed once by the Snakemake process the user started and handed
    down through the environment to the Snakemake that each cluster job starts inside itself (the environment
    travels with the job):
    an edit made while a grid runs must not make a job think an earlier phase is out of date and redo it."""
    if ENV in os.environ:
        return json.loads(os.environ[ENV])
    hashes = {r.name: code_hash(r.code) for r in RULES}
    os.environ[ENV] = json.dumps(hashes)
    return hashes
