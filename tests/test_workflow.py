"""The workflow's caching, driven through the real `snakemake` command line on the tiny synthetic config (one
LUCIR run): one complete run (module-scoped fixture, 1-2 min on 2 CPU cores), then dry runs of changes (tests/smk.py).
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smk import (REPO, DryRun, clone_of, dry_run, env_for, job_stats, parse_dry_run, phase_files, run_dirs,
                 snakemake, tail, workflow_fixtures, write_config)

TINY = REPO / "tests" / "configs" / "tiny.yaml"
RUN = "results/synthetic/lucir/default/p2/seed1993"  # the tiny config's only run (LUCIR, 2 phases)
BASE = "results/synthetic/base/cosine-resnet8/seed1993/model.pt"
PHASE0 = "results/synthetic/base/cosine-resnet8/seed1993/herding4"   # the run's phase 0: shared selection, evaluation
# after any rerun of a run's phases: its summary, the dataset's tables, then figures (one plot_* rule each; which
# of them rerun depends on what each figure reads, but plot_accuracy draws the run and always does)
DOWNSTREAM = {"summarize_run": 1, "aggregate": 1, "all": 1}

pytestmark = pytest.mark.workflow


def tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


complete_run, clone = workflow_fixtures(TINY)


# ---- a complete run, then nothing to do -----------------------------------------------------------------------

def test_complete_run_then_nothing_to_do(clone):
    work = clone.work
    expected = {BASE, f"{RUN}/summary.json", f"{RUN}/phases.csv", f"{PHASE0}/memory.pt", f"{PHASE0}/metrics.json",
                *phase_files(RUN, "memory.pt", (1, 2)), *phase_files(RUN, "metrics.json", (1, 2)),
                *phase_files(RUN, "model.pt", (1, 2)),
                *(f"results/synthetic/tables/{t}.csv"
                  for t in ("phases", "accuracy_matrix", "claims", "summary", "paper_comparison")),
                "results/synthetic/figures/accuracy.png", "results/synthetic/figures/accuracy.pdf"}
    stats = job_stats((work.parent / "complete_run.out").read_text())
    assert {r: n for r, n in stats.items() if not r.startswith("plot_")} == {
        "train_base": 1, "select_base_exemplars": 1, "select_exemplars": 2, "train_phase": 2, "evaluate_base": 1,
        "evaluate_phase": 2, **DOWNSTREAM}, stats
    assert "plot_accuracy" in stats, stats
    missing = sorted(p for p in expected if not (work / p).is_file())
    assert not missing, f"the complete run did not write {missing}"
    run = clone.dry_run()
    assert run.nothing_to_do, f"a second invocation wants to run {run.stats}:\n{run.text[-3000:]}"


def test_every_training_job_writes_its_epochs_beside_its_log(complete_run):
    logs = sorted((complete_run / "work" / "logs").rglob("train_*.log"))
    assert [p.name for p in logs] == ["train_base.log", "train_phase.log", "train_phase.log"], logs
    for log in logs:
        with open(log.with_suffix(".csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["epoch"] for r in rows] == ["1"], log                  # tiny.yaml: one epoch per stage
        assert {"lr", "loss", "ce", "train_acc", "img_per_s", "seconds"} <= set(rows[0]), rows[0]
        assert re.search(r" epoch 1/1 lr .* eta 0:00:00$", log.read_text(), re.M), log


def test_outputs_get_the_permissions_the_umask_allows(complete_run):
    """Every output (models, memories, metrics, summaries, tables, figures, logs) is created as open() creates files:
    0644 under the usual umask 0022, so colleagues sharing the project folder can read them (atomic writes used to
    make them 0600 whatever the umask). The run inherited this process's umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    work = complete_run / "work"
    files = [p for d in ("results", "logs") for p in (work / d).rglob("*") if p.is_file()]
    assert {".pt", ".json", ".csv", ".png", ".pdf", ".log"} <= {p.suffix for p in files}, files
    wrong = {str(p.relative_to(work)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o666 & ~umask}
    assert not wrong, f"not {oct(0o666 & ~umask)} under umask {oct(umask)}: {wrong}"


# ---- changed settings -----------------------------------------------------------------------------------------

INCREMENTAL_CHANGES = {"lambda_base": 2.0, "margin": 0.3}   # under datasets.synthetic.settings in tiny.yaml


@pytest.fixture(scope="module")
def incremental_dry_runs(complete_run, tmp_path_factory) -> dict[str, DryRun]:
    """One dry run per changed incremental-phase setting (shared by the tests below)."""
    clone = clone_of(complete_run, tmp_path_factory.mktemp("incremental"))
    out = {}
    for key, value in INCREMENTAL_CHANGES.items():
        cfg = tiny()
        assert cfg["datasets"]["synthetic"]["settings"][key] != value
        cfg["datasets"]["synthetic"]["settings"][key] = value
        out[key] = clone.dry_run(cfg)
    return out


@pytest.mark.parametrize("key", INCREMENTAL_CHANGES)
def test_incremental_setting_reruns_incremental_phases_not_base(incremental_dry_runs, key):
    run = incremental_dry_runs[key]
    assert "train_base" not in run.stats, run.stats
    assert run.outputs("train_phase") == phase_files(RUN, "model.pt", (1, 2))
    assert phase_files(RUN, "memory.pt", (1, 2)) <= run.outputs("select_exemplars")
    assert phase_files(RUN, "metrics.json", (1, 2)) <= run.outputs("evaluate_phase")
    assert set(run.core) == {"train_phase", "select_exemplars", "evaluate_phase", *DOWNSTREAM}, run.stats
    assert {r: run.core[r] for r in DOWNSTREAM} == DOWNSTREAM, run.stats
    assert "plot_accuracy" in run.plots, run.stats


@pytest.mark.parametrize("key", INCREMENTAL_CHANGES)
def test_incremental_setting_keeps_phase0(incremental_dry_runs, key):
    run = incremental_dry_runs[key]
    phase0 = sorted(o for o in run.outputs() if o.startswith("results/synthetic/base/"))
    assert not phase0, f"phase 0 reruns: {phase0}"
    run.assert_reruns({"train_phase": 2, "select_exemplars": 2, "evaluate_phase": 2, **DOWNSTREAM})
    (first,) = [j for j in run.of("train_phase") if j.output == [f"{RUN}/phase1/model.pt"]]
    assert first.reason.startswith("Params have changed"), first.reason


def test_memory_setting_reruns_selection_and_incremental_phases_not_base(clone):
    cfg = tiny()
    cfg["datasets"]["synthetic"]["settings"]["per_class"] = 2
    run = clone.dry_run(cfg)
    run.assert_reruns({"select_base_exemplars": 1, "select_exemplars": 2, "train_phase": 2, "evaluate_base": 1,
                       "evaluate_phase": 2, **DOWNSTREAM})
    # phase 0 keeps 2 per class now: another shared selection (the one keeping 4 stays for the runs that use it)
    assert run.outputs("select_base_exemplars") == {"results/synthetic/base/cosine-resnet8/seed1993/herding2/memory.pt"}
    assert run.outputs("select_exemplars") == phase_files(RUN, "memory.pt", (1, 2))
    assert run.outputs("train_phase") == phase_files(RUN, "model.pt", (1, 2))
    (first,) = run.of("select_base_exemplars")
    assert first.reason.startswith("Missing output files"), first.reason


# ---- one phase redone -----------------------------------------------------------------------------------------

def _assert_phase2_and_later_only(run: DryRun) -> None:
    run.assert_reruns({"train_phase": 1, "select_exemplars": 1, "evaluate_phase": 1, **DOWNSTREAM})
    for rule, name in (("train_phase", "model.pt"), ("select_exemplars", "memory.pt"),
                       ("evaluate_phase", "metrics.json")):
        assert run.outputs(rule) == {f"{RUN}/phase2/{name}"}, rule
    assert not [o for o in run.outputs() if "/phase1/" in o or "/base/" in o]


def test_deleting_a_phase_reruns_that_phase_and_later_only(clone):
    (clone.work / RUN / "phase2" / "model.pt").unlink()
    _assert_phase2_and_later_only(clone.dry_run())


def test_forcing_a_phase_reruns_that_phase_and_later_only(clone):
    # what a user types today to redo one phase: --forcerun on its model (phase 1 and the base stay cached)
    _assert_phase2_and_later_only(clone.dry_run(None, "--forcerun", f"{RUN}/phase2/model.pt"))


# ---- growing the grid -----------------------------------------------------------------------------------------

def _add_seed(cfg):
    cfg["seeds"] = [1993, 1994]
    return "results/synthetic/lucir/default/p2/seed1994", 2, "results/synthetic/base/cosine-resnet8/seed1994/model.pt"


def _add_phases(cfg):
    cfg["experiments"]["main"]["phases"] = [2, 1]
    return "results/synthetic/lucir/default/p1/seed1993", 1, None


def _add_variant(cfg):
    cfg["variants"] = {"cn_lc": {"margin_ranking": False}}
    cfg["experiments"]["main"]["variants"] = ["default", "cn_lc"]
    return "results/synthetic/lucir/cn_lc/p2/seed1993", 2, None


def _add_grid_value(cfg):
    per_class = cfg["datasets"]["synthetic"]["settings"]["per_class"]
    cfg["experiments"]["main"]["grid"] = {"per_class": [per_class, 2]}
    return "results/synthetic/lucir/default_per_class2/p2/seed1993", 2, "phase0"


@pytest.mark.parametrize("change", [_add_seed, _add_phases, _add_variant, _add_grid_value],
                         ids=["seed", "phases", "variant", "grid_value"])
def test_adding_to_the_grid_adds_only_the_new_jobs(clone, change):
    cfg = tiny()
    new_run, phases, new_base = change(cfg)
    run = clone.dry_run(cfg)
    expected = {"select_exemplars": phases, "train_phase": phases, "evaluate_phase": phases, **DOWNSTREAM}
    if new_base:      # a new seed or memory size: its own phase-0 selection and evaluation (and base, for a seed)
        expected.update(select_base_exemplars=1, evaluate_base=1)
    if new_base and new_base != "phase0":
        expected["train_base"] = 1
    run.assert_reruns(expected)
    assert run.outputs("train_base") == ({new_base} if new_base and new_base != "phase0" else set())
    assert run_dirs(run.outputs()) == {new_run}
    assert not [o for o in run.outputs() if o.startswith(RUN + "/") or o == BASE]
    if not new_base or new_base == "phase0":  # the new run starts from the existing base model
        (first,) = [j for j in run.of("train_phase") if j.output == [f"{new_run}/phase1/model.pt"]]
        assert BASE in first.input, first.input


# ---- package code: the `code` param ---------------------------------------------------------------------------

COMMENT_ONLY = "# a comment that changes no syntax tree\n\n\n"
DOCSTRING = "a docstring edited: documentation, as a comment is"
REAL_EDIT = '\n\n_CODEHASH_PROBE = "a real change to the syntax tree"\n'


def edited(text: str, edit: str) -> str:
    if edit == "comment":
        return COMMENT_ONLY + text + "\n" + COMMENT_ONLY
    if edit == "docstring":       # the module docstring's first line, and the first function docstring's
        assert text.startswith('"""') and '\n    """' in text, "no docstrings to edit"
        return f'"""{DOCSTRING}. ' + text[3:].replace('\n    """', f'\n    """{DOCSTRING}. ', 1)
    return text + REAL_EDIT


@pytest.mark.parametrize("module,edit,expected,params_rules", [
    pytest.param("evaluate.py", "comment", {}, set(), id="evaluate-comment_only"),
    pytest.param("losses.py", "docstring", {}, set(), id="losses-docstring_only"),
    pytest.param("evaluate.py", "real", {"evaluate_base": 1, "evaluate_phase": 2, **DOWNSTREAM},
                 {"evaluate_base", "evaluate_phase"}, id="evaluate-real"),
    pytest.param("train/progress.py", "real", {}, set(), id="progress-real_edit_reruns_nothing"),
    pytest.param("losses.py", "real",
                 {"train_base": 1, "train_phase": 2, "select_base_exemplars": 1, "select_exemplars": 2,
                  "evaluate_base": 1, "evaluate_phase": 2, **DOWNSTREAM},
                 {"train_base"}, id="losses-real"),
])
def test_package_code_edit_reruns_the_stages_that_use_it(clone, module, edit, expected, params_rules):
    # the copy is what gets imported: by the jobs (PYTHONPATH) and by the Snakefile next to it (sys.path[0])
    probe = subprocess.run([sys.executable, "-c", "import ucir; print(ucir.__file__)"], cwd=clone.work,
                           env=env_for(clone.src), capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).resolve() == (clone.src / "ucir" / "__init__.py").resolve()
    # (that the sources' copy alone changes nothing: test_complete_run_then_nothing_to_do runs from a copy too)

    path = clone.src / "ucir" / module
    text = path.read_text()
    path.write_text(edited(text, edit))
    run = clone.dry_run()
    if not expected:
        assert run.nothing_to_do, f"this edit of {module} reruns {run.stats}"
        return
    run.assert_reruns(expected)
    # the params trigger is what fires: the code hash changed for exactly these rules' jobs
    triggered = {j.rule for j in run.jobs if j.reason.startswith("Params have changed")}
    assert triggered == params_rules, {j.rule: j.reason[:80] for j in run.jobs}
    for rule in params_rules:
        assert all(j.reason.startswith("Params have changed") for j in run.of(rule)), rule


def test_jobs_started_by_a_cluster_keep_the_code_hashes_of_the_submitting_run(clone):
    # A cluster job runs Snakemake again inside itself; it must use the hashes computed when the grid was
    # submitted (handed down in UCIR_CODE_HASHES), so an edit made mid-run cannot make it redo earlier phases.
    hashes = subprocess.run([sys.executable, "-c", "import json; from ucir.codehash import submission_hashes; "
                             "print(json.dumps(submission_hashes()))"],
                            env=env_for(clone.src), capture_output=True, text=True, check=True).stdout.strip()
    path = clone.src / "ucir" / "losses.py"
    path.write_text(path.read_text() + REAL_EDIT)
    assert not clone.dry_run().nothing_to_do                         # the edit is seen by a fresh run ...
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(clone.src / "Snakefile"), "--directory",
           str(clone.work), "--configfile", str(TINY), "--cores", "2", "--dry-run"]
    proc = subprocess.run(cmd, env=dict(env_for(clone.src), UCIR_CODE_HASHES=hashes), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, tail(proc)
    assert parse_dry_run(proc.stdout).nothing_to_do, tail(proc)     # ... not by a job of the running grid


# ---- a study's tables made again from its kept records (ucir.tools.records) -------------------------------------

def test_tables_made_again_from_the_kept_records_in_an_empty_folder_are_the_same_and_nothing_trains(complete_run,
                                                                                                   tmp_path):
    from ucir.pipeline import REPORT_RULES, figure_outputs, table_outputs
    from ucir.tools import records
    from ucir.tools.plan import check, load_config

    work, src, kept, fresh = complete_run / "work", complete_run / "src", tmp_path / "records", tmp_path / "fresh"
    records.save(check(load_config([str(TINY)])), kept, results=work / "results", logs=work / "logs")
    fresh.mkdir()
    proc = subprocess.run([sys.executable, "-m", "ucir.tools.records", "report", "--configfile", str(TINY),
                           "--records", str(kept), "--", "--snakefile", str(src / "Snakefile")],
                          cwd=fresh, env=env_for(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert proc.returncode == 0, tail(proc)
    stats = job_stats(proc.stdout)
    assert "aggregate" in stats and set(stats) <= set(REPORT_RULES), stats
    assert not list(fresh.rglob("*.pt")), "a report from records trained or selected something"
    for table in table_outputs("synthetic"):
        assert (fresh / table).read_bytes() == (work / table).read_bytes(), table
    assert all((fresh / f).is_file() for f in figure_outputs("synthetic"))


# ---- the paper grid -------------------------------------------------------------------------------------------

def test_paper_grid_dry_run_shares_base_models(tmp_path):
    from ucir.grid import expand_runs

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    ds_names = list(cfg["datasets"])
    assert ds_names == ["cifar100"], ds_names
    cfg["datasets"]["cifar100"]["root"] = str(tmp_path / "absent")   # a dry run plans without the data (issue 24)
    work = tmp_path / "work"
    work.mkdir()
    run = dry_run(work, write_config(tmp_path / "paper.yaml", cfg), timeout=600)

    for rule in ("train_base", "select_exemplars", "train_phase", "evaluate_phase", "summarize_run"):
        assert rule in run.stats, run.stats
    seeds = cfg["seeds"]
    bases = run.outputs("train_base")
    assert len(bases) == run.stats["train_base"] == 2 * len(seeds) == 6, sorted(bases)
    for head in ("cosine", "linear"):
        mine = sorted(b for b in bases if f"/base/{head}-" in b)
        assert len(mine) == len(seeds), (head, mine)
        assert {re.search(r"/seed(\d+)/", b)[1] for b in mine} == {str(s) for s in seeds}

    # the runs, from the evaluation outputs: every phase of every run is trained, selected and evaluated
    evals = [re.match(r"^(results/cifar100/([^/]+)/[^/]+/p(\d+)/seed\d+)/phase(\d+)/metrics\.json$", o)
             for o in run.outputs("evaluate_phase")]
    assert all(evals)
    runs = {m[1]: (m[2], int(m[3])) for m in evals}
    assert run.stats["train_phase"] == sum(p for _, p in runs.values())
    assert run.stats["evaluate_phase"] == run.stats["select_exemplars"] == sum(p for _, p in runs.values())
    # phase 0: one selection and one evaluation per (base model, exemplars per class), shared by the runs;
    # 3 seeds x (cosine: R_per 5, 10, 20, 50 and R_total 2000 -> 40; linear: the same, and none for LwF / joint)
    assert run.stats["select_base_exemplars"] == run.stats["evaluate_base"] == 3 * (5 + 6) == 33, run.stats
    assert len({re.sub(r"/[^/]+$", "", o) for o in run.outputs("evaluate_base")}) == 33
    assert run.outputs("train_phase") == {f"{r}/phase{k}/model.pt" for r, (_, p) in runs.items()
                                          for k in range(1, p + 1)}
    assert run.stats["summarize_run"] == len(runs) == len(expand_runs(cfg))
    assert {m for m, _ in runs.values()} == {"lucir", "icarl", "lwf", "finetune", "joint"}

    # base sharing: every phase 1 starts from the one base model of its head type and seed
    for job in run.of("train_phase"):
        out = job.output[0]
        if not out.endswith("/phase1/model.pt"):
            continue
        method, seed = re.match(r"^results/cifar100/([^/]+)/[^/]+/p\d+/seed(\d+)/", out).groups()
        head = "cosine" if method == "lucir" else "linear"
        assert f"results/cifar100/base/{head}-resnet32/seed{seed}/model.pt" in job.input, (out, job.input)


# ---- lint -----------------------------------------------------------------------------------------------------

def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, REPO / "configs" / "demo.yaml", "--lint")
    lints = [line.strip() for line in proc.stdout.splitlines() if line.startswith("Lints for") or "    * " in line]
    assert proc.returncode == 0 and not lints, "\n".join(lints) or tail(proc)
