"""README.md's "Adding a method", walked with a toy method.

The toy method "toy" trains a cosine head with a new loss, "toy_cs": the squared distance between the old classes'
cosine scores (Eq. 4, unscaled) of the model and of the previous one, weighted by Eq. 7's adaptive lambda. It is
added to a copy of the workflow's sources (tests/smk.py) through exactly the README's steps (STEPS, each an edit of
one file), then
  * the copy plans it (a dry run of a one-phase synthetic configuration), runs that configuration to the run's
    summary, and passes the toy's traced run of tests/test_deps.py (its stages read exactly their params);
  * the toy loss with a linear head is refused before any job (the head-compatibility check);
  * with any one step left out, the expected failure happens, with a message naming what is missing.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from smk import REPO, _copy_sources, dry_run, env_for, snakemake, tail, write_config
from ucir.config import METHODS

pytestmark = pytest.mark.workflow


@dataclass(frozen=True)
class Step:
    name: str
    readme: str              # how README.md's "Adding a method" names the step
    path: str                # the file it edits
    old: str                 # the text it replaces (found exactly once), by
    new: str
    fails_in: str            # without it: "dry run" (planning the toy's run) or "traced run" (tests/test_deps.py)
    error: str               # ... fails with a message matching this


TERM = '''\
        elif cfg.distill == "toy_cs":                                      # tests/test_extension.py
            with torch.inference_mode():
                t_cos = teacher.head.cosine(teacher.features(x))           # N x C_old, unscaled
            cos = net.head.cosine(feats).float()
            out["toy"] = self.lam * (cos[:, :old] - t_cos.float().clone()).pow(2).sum(dim=1).mean()
'''
WEIGHT = '''\
    if cfg.distill == "toy_cs":                                            # tests/test_extension.py
        return adaptive_lambda(cfg.lambda_base, num_old, num_new, cfg.lambda_rule)   # Eq. 7
'''
PRESET = '''\
    "toy": Method(dict(head="cosine", last_relu=False, distill="toy_cs", margin_ranking=False, freeze_old=True,
                       imprint=True)),
'''
METHOD_LIST = "METHOD_PRESETS: dict[str, Method] = {\n"
DISTILL_LIST = "DISTILLS: dict[str, tuple[str, ...]] = {\n"
NONE_WEIGHT = '    if cfg.distill == "none":\n        return 0.0\n'
NO_TERM = '        elif cfg.distill != "none":\n'
USES_LAMBDA = 'return cfg.distill == "feature" or'
STEPS = (
    Step("preset", "`METHOD_PRESETS`", "ucir/config.py", METHOD_LIST, METHOD_LIST + PRESET,
         "dry run", r"'toy' is not allowed .*allowed: one of lucir, icarl"),
    Step("distill", "`DISTILLS` with the heads it works with", "ucir/config.py", DISTILL_LIST,
         DISTILL_LIST + '    "toy_cs": ("cosine",),\n',
         "dry run", r"distill='toy_cs' is not allowed: one of feature, cosine_scores, kd, none"),
    Step("term", "`Objective.terms`", "ucir/train/objective.py", NO_TERM, TERM + NO_TERM,
         "traced run", r"no term for distill='toy_cs' in Objective.terms"),
    Step("weight", "`distill_weight`", "ucir/train/stages.py", NONE_WEIGHT, WEIGHT + NONE_WEIGHT,
         "traced run", r"no weight for distill='toy_cs' in distill_weight"),
    Step("deps", "`ucir/deps.py` for any setting it reads", "ucir/deps.py", USES_LAMBDA,
         'return cfg.distill in ("feature", "toy_cs") or',
         "traced run", r"toy: train_phase after phase 1 reads \['lambda_base', 'lambda_rule'\], not in its params"),
    Step("traced run", "`CASES` of `tests/test_deps.py`", "tests/test_deps.py", "CASES = {\n",
         'CASES = {\n    "toy": ("toy", {}),\n',
         "traced run", r"Extra items in the right set:[\sE]+'toy'"),
)

RUN = "results/synthetic/toy/default/p1/seed1993"
CONFIG = {
    "seeds": [1993],
    "datasets": {"synthetic": {"source": "synthetic", "num_classes": 4, "base_classes": 2, "settings": {
        "train_per_class": 8, "test_per_class": 4, "backbone": "resnet8", "per_class": 2,
        **{s: {"epochs": 1, "milestones": [], "batch_size": 8} for s in ("base_train", "train", "cbf_train")}}}},
    "experiments": {"main": {"datasets": ["synthetic"], "methods": ["toy"], "phases": [1], "plot": "accuracy"}},
}


def toy_sources(root: Path, leave_out: Step | None = None) -> Path:
    """A copy of the workflow's sources (and tests/test_deps.py) with the toy added by every step but `leave_out`."""
    src = _copy_sources(root / "src")
    (src / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "test_deps.py", src / "tests" / "test_deps.py")
    for step in STEPS:
        path = src / step.path
        text = path.read_text()
        assert text.count(step.old) == 1, f"step {step.name!r}: {step.old!r} is not once in {step.path}"
        if step is not leave_out:
            path.write_text(text.replace(step.old, step.new))
    return src


def plan(src: Path, root: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    work = root / "work"
    work.mkdir(exist_ok=True)
    return snakemake(work, write_config(root / "toy.yaml", config), "--dry-run", *args, src=src)


def trace(src: Path) -> subprocess.CompletedProcess:
    """The copy's tests/test_deps.py on the toy's traced run, and the check that every method has one."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(src),
           str(src / "tests" / "test_deps.py"), "-k", "toy or cover_every_method"]
    return subprocess.run(cmd, cwd=src, env=env_for(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def test_the_readme_names_every_step():
    text = (REPO / "README.md").read_text()
    m = re.search(r"\*\*Adding a method\*\*(.*?)\n\n", text, re.S)
    assert m, "README.md has no **Adding a method** paragraph"
    paragraph = " ".join(m[1].split())
    missing = [s.name for s in STEPS if s.readme not in paragraph]
    assert not missing, f"README.md's 'Adding a method' leaves out the step(s) {missing}"


def test_a_toy_method_added_by_those_steps_runs_end_to_end(tmp_path):
    src = toy_sources(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    configfile = write_config(tmp_path / "toy.yaml", CONFIG)
    planned = dry_run(work, configfile, src=src)
    assert {f"{RUN}/phase1/model.pt"} == planned.outputs("train_phase"), planned.text[-3000:]
    proc = snakemake(work, configfile, f"{RUN}/summary.json", src=src, timeout=600)
    assert proc.returncode == 0, tail(proc)
    summary = json.loads((work / RUN / "summary.json").read_text())
    assert (summary["method"], summary["config"]["distill"], summary["config"]["head"]) == ("toy", "toy_cs", "cosine")
    [epochs] = (work / "logs").rglob("train_phase.csv")
    with open(epochs, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["toy"]) > 0, rows                  # the toy's term was trained on
    traced = trace(src)
    assert traced.returncode == 0, traced.stdout[-5000:]
    assert re.search(r"\b4 passed\b", traced.stdout), traced.stdout[-2000:]  # the toy's 3 traced checks, coverage


def test_the_toy_loss_with_a_linear_head_is_refused_before_any_job(tmp_path):
    config = json.loads(json.dumps(CONFIG))
    config["datasets"]["synthetic"]["settings"]["head"] = "linear"
    proc = plan(toy_sources(tmp_path), tmp_path, config)
    assert proc.returncode != 0, tail(proc)
    assert "distill='toy_cs' is not allowed: it needs head: cosine (head is linear)" in proc.stdout, tail(proc)


@pytest.mark.parametrize("step", STEPS, ids=[s.name for s in STEPS])
def test_leaving_out_a_step_fails_naming_what_is_missing(step, tmp_path):
    src = toy_sources(tmp_path, leave_out=step)
    proc = plan(src, tmp_path, CONFIG) if step.fails_in == "dry run" else trace(src)
    assert proc.returncode != 0, f"without the step {step.name!r} the {step.fails_in} passed:\n{tail(proc)}"
    assert re.search(step.error, proc.stdout), f"without {step.name!r}, expected {step.error!r}:\n{tail(proc)}"


# Where a method may be named: its preset, the report's roles (which figures and claims compare it), its figure
# label and colour, and the tools that measure LUCIR's own objective (bench, gpucheck, startup).
NAMING_METHODS = {"ucir/config.py", "ucir/report/__init__.py", "ucir/report/figures/common.py",
                  "ucir/tools/bench.py", "ucir/tools/gpucheck.py", "ucir/tools/kernels.py", "ucir/tools/startup.py"}


def test_no_method_is_special_cased_by_name_elsewhere():
    named = re.compile(r"""["'](%s)["']""" % "|".join(METHODS))
    files = [REPO / "Snakefile", *sorted((REPO / "ucir").rglob("*.py")), *sorted((REPO / "workflow").rglob("*.smk")),
             *sorted((REPO / "workflow").rglob("*.py"))]
    found = [f"{f.relative_to(REPO)}: {m[0]}" for f in files if f.relative_to(REPO).as_posix() not in NAMING_METHODS
             for m in named.finditer(f.read_text())]
    assert not found, f"methods named outside their presets and the report's roles: {found}"
