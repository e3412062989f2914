"""The workflow's caching, driven through the real `snakemake` command line on the tiny synthetic config.

One complete run (module-scoped fixture, 1-2 min on 2 CPU cores) is made in a temporary folder; every test copies
that folder (outputs with their mtimes, and `.snakemake/` metadata) and asks a dry run what a change would rerun.

The run uses a snapshot of the workflow's sources (Snakefile, workflow/, ucir/) taken when the module starts, not
the repository's files themselves:
  * Snakemake puts the Snakefile's folder first on sys.path, so the `ucir` that `common.smk` imports (and whose
    code it hashes into each rule's `code` param, ucir/codehash.py) is always the one next to the Snakefile: a
    package copy on PYTHONPATH alone would not be seen. Testing the code hash for real therefore needs a
    Snakefile next to the edited package; the jobs get the same copy through PYTHONPATH.
  * edits made to the repository while the suite runs cannot make the cached run look stale.

Dry-run parsing: `snakemake -n` prints one block per job ("rule NAME:" / "localrule NAME:", then indented
"key: value" lines with output:, input:, reason:, ...) and a "Job stats:" table (rule, count, total). Both are
parsed, and must agree; "Nothing to be done" means no jobs.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SOURCES = ("Snakefile", "workflow", "ucir")          # what a workflow run reads from the repository
RUN = "results/synthetic/lucir/default/p2/seed1993"  # the tiny config's only run (LUCIR, 2 phases)
BASE = "results/synthetic/base/cosine-resnet8/seed1993/model.pt"
# after any rerun of a run's phases: its summary, the dataset's tables, then figures (one plot_* rule each; which
# of them rerun depends on what each figure reads, but plot_accuracy reads the tables and always does)
DOWNSTREAM = {"summarize_run": 1, "aggregate": 1, "all": 1}

pytestmark = pytest.mark.workflow


# ---- running snakemake ----------------------------------------------------------------------------------------

def _env(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SNAKEMAKE_PROFILE", "UCIR_CODE_HASHES")}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def snakemake(workdir: Path, configfile: Path, *args: str, src: Path | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m snakemake` on the Snakefile in `src` (default: the repository), outputs under `workdir`."""
    snakefile = (src or REPO) / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=_env(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


@dataclass
class Job:
    rule: str
    fields: dict[str, str] = field(default_factory=dict)

    def _list(self, key: str) -> list[str]:
        value = self.fields.get(key, "")
        return [p.strip() for p in value.split(", ")] if value else []

    @property
    def output(self) -> list[str]:
        return self._list("output")

    @property
    def input(self) -> list[str]:
        return self._list("input")

    @property
    def reason(self) -> str:
        return self.fields.get("reason", "")


@dataclass
class DryRun:
    text: str
    jobs: list[Job]
    stats: dict[str, int]                   # rule -> number of jobs ("total" left out)

    def outputs(self, rule: str | None = None) -> set[str]:
        return {o for j in self.jobs if rule in (None, j.rule) for o in j.output}

    def of(self, rule: str) -> list[Job]:
        return [j for j in self.jobs if j.rule == rule]

    @property
    def core(self) -> dict[str, int]:
        """Job stats without the figures."""
        return {r: n for r, n in self.stats.items() if not r.startswith("plot_")}

    @property
    def plots(self) -> dict[str, int]:
        return {r: n for r, n in self.stats.items() if r.startswith("plot_")}

    def assert_reruns(self, core: dict[str, int]) -> None:
        """Exactly these non-figure jobs, and some figures: plot_accuracy among them, each figure once."""
        assert self.core == core, self.stats
        assert "plot_accuracy" in self.plots and set(self.plots.values()) == {1}, self.stats

    @property
    def nothing_to_do(self) -> bool:
        return "Nothing to be done" in self.text


_JOB_HEAD = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_JOB_FIELD = re.compile(r"^ {4}(\w+): ?(.*)$")
_STAT_ROW = re.compile(r"^(\S+)\s+(\d+)$")


def parse_dry_run(text: str) -> DryRun:
    jobs: list[Job] = []
    current: Job | None = None
    for line in text.splitlines():
        if m := _JOB_HEAD.match(line):
            current = Job(m[1])
            jobs.append(current)
        elif current is not None and (m := _JOB_FIELD.match(line)):
            current.fields[m[1]] = m[2]
        else:
            current = None
    stats = job_stats(text)
    run = DryRun(text, jobs, stats)
    if run.nothing_to_do:
        assert not jobs and not stats, text[-3000:]
    else:
        assert stats, f"no 'Job stats:' table in the dry run's output:\n{text[-3000:]}"
        assert dict(collections.Counter(j.rule for j in jobs)) == stats, \
            f"job blocks and job stats disagree:\n{text[-3000:]}"
    return run


def job_stats(text: str) -> dict[str, int]:
    """The "Job stats:" table (a dry run prints it before and after the job list, a real run before: the last)."""
    stats: dict[str, int] = {}
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.strip() == "Job stats:"]
    if heads:
        for line in (line.strip() for line in lines[heads[-1] + 1:]):
            if not stats and (not line or line.split()[0] == "job" or line.startswith("---")):
                continue                    # blank lines, the header and its rule before the first row
            m = _STAT_ROW.match(line)
            if not m:
                break
            if m[1] == "total":
                assert int(m[2]) == sum(stats.values()), f"job stats do not add up:\n{text[-3000:]}"
                break
            stats[m[1]] = int(m[2])
    return stats


def dry_run(workdir: Path, configfile: Path, *args: str, src: Path | None = None,
            timeout: int = 300) -> DryRun:
    proc = snakemake(workdir, configfile, "--dry-run", *args, src=src, timeout=timeout)
    assert proc.returncode == 0, f"snakemake -n failed ({proc.returncode}):\n{proc.stdout[-5000:]}"
    return parse_dry_run(proc.stdout)


def _tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-5000:]


# ---- configs --------------------------------------------------------------------------------------------------

def tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---- fixtures -------------------------------------------------------------------------------------------------

def _copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    """A folder holding src/ (the workflow's sources) and work/ (a complete run of the tiny config in it)."""
    root = tmp_path_factory.mktemp("complete")
    src = _copy_sources(root / "src")
    work = root / "work"
    work.mkdir()
    proc = snakemake(work, TINY, src=src, timeout=900)
    (root / "complete_run.out").write_text(proc.stdout)
    assert proc.returncode == 0, f"the complete run failed:\n{_tail(proc)}"
    return root


@dataclass
class Clone:
    src: Path
    work: Path

    def dry_run(self, cfg: dict | None = None, *args: str) -> DryRun:
        configfile = TINY if cfg is None else write_config(self.work.parent / "config.yaml", cfg)
        return dry_run(self.work, configfile, *args, src=self.src)


def _clone(complete_run: Path, parent: Path) -> Clone:
    dest = parent / "clone"
    shutil.copytree(complete_run, dest, symlinks=True)   # copy2: mtimes kept
    return Clone(dest / "src", dest / "work")


@pytest.fixture
def clone(complete_run, tmp_path) -> Clone:
    """A copy of the complete run (mtimes and .snakemake/ metadata kept) and of the sources it ran."""
    return _clone(complete_run, tmp_path)


def run_dirs(outputs) -> set[str]:
    """The run folders (results/<dataset>/<method>/<variant>/p<P>/seed<S>) that some outputs lie in."""
    pat = re.compile(r"^(results/[^/]+/[^/]+/[^/]+/p\d+/seed\d+)/")
    return {m[1] for o in outputs if (m := pat.match(o)) and "/base/" not in o}


def phase_files(run: str, name: str, phases) -> set[str]:
    return {f"{run}/phase{k}/{name}" for k in phases}


# ---- a complete run, then nothing to do -----------------------------------------------------------------------

def test_complete_run_then_nothing_to_do(clone):
    work = clone.work
    expected = {BASE, f"{RUN}/summary.json", f"{RUN}/phases.csv",
                *phase_files(RUN, "memory.pt", range(3)), *phase_files(RUN, "metrics.json", range(3)),
                *phase_files(RUN, "model.pt", (1, 2)),
                *(f"results/synthetic/tables/{t}.csv" for t in ("phases", "summary", "paper_comparison")),
                "results/synthetic/figures/accuracy.png", "results/synthetic/figures/accuracy.pdf"}
    stats = job_stats((work.parent / "complete_run.out").read_text())
    assert {r: n for r, n in stats.items() if not r.startswith("plot_")} == {
        "train_base": 1, "select_exemplars": 3, "train_phase": 2, "evaluate_phase": 3, **DOWNSTREAM}, stats
    assert "plot_accuracy" in stats, stats
    missing = sorted(p for p in expected if not (work / p).is_file())
    assert not missing, f"the complete run did not write {missing}"
    run = clone.dry_run()
    assert run.nothing_to_do, f"a second invocation wants to run {run.stats}:\n{run.text[-3000:]}"


# ---- changed settings -----------------------------------------------------------------------------------------

INCREMENTAL_CHANGES = {"lambda_base": 2.0, "margin": 0.3}   # under datasets.synthetic.settings in tiny.yaml


@pytest.fixture(scope="module")
def incremental_dry_runs(complete_run, tmp_path_factory) -> dict[str, DryRun]:
    """One dry run per changed incremental-phase setting (shared by the tests below)."""
    clone = _clone(complete_run, tmp_path_factory.mktemp("incremental"))
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
    phase0 = sorted(o for o in run.outputs() if o.startswith(f"{RUN}/phase0/"))
    assert not phase0, f"phase 0 reruns: {phase0}"
    run.assert_reruns({"train_phase": 2, "select_exemplars": 2, "evaluate_phase": 2, **DOWNSTREAM})
    (first,) = [j for j in run.of("train_phase") if j.output == [f"{RUN}/phase1/model.pt"]]
    assert first.reason.startswith("Params have changed"), first.reason


def test_memory_setting_reruns_selection_and_incremental_phases_not_base(clone):
    cfg = tiny()
    cfg["datasets"]["synthetic"]["settings"]["per_class"] = 2
    run = clone.dry_run(cfg)
    run.assert_reruns({"select_exemplars": 3, "train_phase": 2, "evaluate_phase": 3, **DOWNSTREAM})
    assert run.outputs("select_exemplars") == phase_files(RUN, "memory.pt", range(3))
    assert run.outputs("train_phase") == phase_files(RUN, "model.pt", (1, 2))
    (first,) = [j for j in run.of("select_exemplars") if j.output == [f"{RUN}/phase0/memory.pt"]]
    assert first.reason.startswith("Params have changed"), first.reason


# ---- one phase redone -----------------------------------------------------------------------------------------

def _assert_phase2_and_later_only(run: DryRun) -> None:
    run.assert_reruns({"train_phase": 1, "select_exemplars": 1, "evaluate_phase": 1, **DOWNSTREAM})
    for rule, name in (("train_phase", "model.pt"), ("select_exemplars", "memory.pt"),
                       ("evaluate_phase", "metrics.json")):
        assert run.outputs(rule) == {f"{RUN}/phase2/{name}"}, rule
    assert not [o for o in run.outputs() if "/phase0/" in o or "/phase1/" in o or "/base/" in o]


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
    return "results/synthetic/lucir/default_per_class2/p2/seed1993", 2, None


@pytest.mark.parametrize("change", [_add_seed, _add_phases, _add_variant, _add_grid_value],
                         ids=["seed", "phases", "variant", "grid_value"])
def test_adding_to_the_grid_adds_only_the_new_jobs(clone, change):
    cfg = tiny()
    new_run, phases, new_base = change(cfg)
    run = clone.dry_run(cfg)
    expected = {"select_exemplars": phases + 1, "train_phase": phases, "evaluate_phase": phases + 1, **DOWNSTREAM}
    if new_base:
        expected["train_base"] = 1
    run.assert_reruns(expected)
    assert run.outputs("train_base") == ({new_base} if new_base else set())
    assert run_dirs(run.outputs()) == {new_run}
    assert not [o for o in run.outputs() if o.startswith(RUN + "/") or o == BASE]
    if not new_base:  # the new run starts from the existing base model
        (first,) = [j for j in run.of("train_phase") if j.output == [f"{new_run}/phase1/model.pt"]]
        assert BASE in first.input, first.input


# ---- package code: the `code` param ---------------------------------------------------------------------------

COMMENT_ONLY = "# a comment that changes no syntax tree\n\n\n"
REAL_EDIT = '\n\n_CODEHASH_PROBE = "a real change to the syntax tree"\n'


@pytest.mark.parametrize("module,edit,expected,params_rules", [
    pytest.param("evaluate.py", "comment", {}, set(), id="evaluate-comment_only"),
    pytest.param("evaluate.py", "real", {"evaluate_phase": 3, **DOWNSTREAM}, {"evaluate_phase"},
                 id="evaluate-real"),
    pytest.param("losses.py", "real",
                 {"train_base": 1, "train_phase": 2, "select_exemplars": 3, "evaluate_phase": 3, **DOWNSTREAM},
                 {"train_base"}, id="losses-real"),
])
def test_package_code_edit_reruns_the_stages_that_use_it(clone, module, edit, expected, params_rules):
    # the copy is what gets imported: by the jobs (PYTHONPATH) and by the Snakefile next to it (sys.path[0])
    probe = subprocess.run([sys.executable, "-c", "import ucir; print(ucir.__file__)"], cwd=clone.work,
                           env=_env(clone.src), capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).resolve() == (clone.src / "ucir" / "__init__.py").resolve()
    # (that the sources' copy alone changes nothing: test_complete_run_then_nothing_to_do runs from a copy too)

    path = clone.src / "ucir" / module
    text = path.read_text()
    path.write_text((COMMENT_ONLY + text + "\n" + COMMENT_ONLY) if edit == "comment" else (text + REAL_EDIT))
    run = clone.dry_run()
    if not expected:
        assert run.nothing_to_do, f"a comment-only edit of {module} reruns {run.stats}"
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
    stages = "('train', 'select_exemplars', 'evaluate', 'report')"
    hashes = subprocess.run([sys.executable, "-c", "import json; from ucir.codehash import stage_hash; "
                             f"print(json.dumps({{s: stage_hash(s) for s in {stages}}}))"],
                            env=_env(clone.src), capture_output=True, text=True, check=True).stdout.strip()
    path = clone.src / "ucir" / "losses.py"
    path.write_text(path.read_text() + REAL_EDIT)
    assert not clone.dry_run().nothing_to_do                         # the edit is seen by a fresh run ...
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(clone.src / "Snakefile"), "--directory",
           str(clone.work), "--configfile", str(TINY), "--cores", "2", "--dry-run"]
    proc = subprocess.run(cmd, env=dict(_env(clone.src), UCIR_CODE_HASHES=hashes), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, _tail(proc)
    assert parse_dry_run(proc.stdout).nothing_to_do, _tail(proc)     # ... not by a job of the running grid


# ---- the paper grid -------------------------------------------------------------------------------------------

def test_paper_grid_dry_run_shares_base_models(tmp_path):
    from ucir.grid import expand_runs

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    ds_names = list(cfg["datasets"])
    assert ds_names == ["cifar100"], ds_names
    data = tmp_path / "cifar100-root"
    data.mkdir()                                     # only its existence is checked
    cfg["datasets"]["cifar100"]["root"] = str(data)
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
    assert run.stats["evaluate_phase"] == run.stats["select_exemplars"] == sum(p + 1 for _, p in runs.values())
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
    assert proc.returncode == 0 and not lints, "\n".join(lints) or _tail(proc)
