"""Driving the workflow through the real `snakemake` command line, for the workflow tests (test_workflow.py,
test_invalidation.py).

A complete run is made once per test module in a temporary folder; every test copies that folder (outputs with
their mtimes, and `.snakemake/` metadata) and asks a dry run what a change would rerun.

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
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("Snakefile", "workflow", "ucir")          # what a workflow run reads from the repository
# ---- running snakemake ----------------------------------------------------------------------------------------

def env_for(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SNAKEMAKE_PROFILE", "UCIR_CODE_HASHES")}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def snakemake(workdir: Path, configfile: Path | None, *args: str, src: Path | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m snakemake` on the Snakefile in `src` (default: the repository), outputs under `workdir`; without
    a configfile, the Snakefile's default (config.yaml in `workdir`)."""
    snakefile = (src or REPO) / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           *(["--configfile", str(configfile)] if configfile else []), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, env=env_for(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def start(workdir: Path, configfile: Path, *targets: str) -> subprocess.Popen:
    """The repository's workflow started in the background (its own process group, for killpg) on `targets`."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *targets]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def run_to_end(workdir: Path, configfile: Path, *targets: str, timeout: int = 900) -> tuple[int, str]:
    proc = start(workdir, configfile, *targets)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wait_for(proc: subprocess.Popen, log: Path, text: str, seconds: float) -> None:
    """Until `text` appears in the job log `log` (the workflow still running); else kill it and fail."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if log.exists() and text in log.read_text():
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{text!r} never appeared in {log}")


def job_pid(workdir: Path, script: str) -> int | None:
    """The process of the job of `workdir` that runs workflow/scripts/<script>.py, if one runs."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(workdir) in cmd and cmd.replace("\0", " ").rstrip().endswith(f".{script}.py"):
                return int(d.name)
    return None


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


def dry_run(workdir: Path, configfile: Path | None, *args: str, src: Path | None = None,
            timeout: int = 300) -> DryRun:
    proc = snakemake(workdir, configfile, "--dry-run", *args, src=src, timeout=timeout)
    assert proc.returncode == 0, f"snakemake -n failed ({proc.returncode}):\n{proc.stdout[-5000:]}"
    return parse_dry_run(proc.stdout)


def tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-5000:]


# ---- configs --------------------------------------------------------------------------------------------------

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


def workflow_fixtures(configfile: Path, name: str = "complete_run"):
    """Two fixtures for a test module: `name`, one complete run of `configfile` per module, and `clone`, a fresh
    copy of it per test. Assign them to those names in the module."""
    @pytest.fixture(scope="module", name=name)
    def complete(tmp_path_factory) -> Path:
        return complete_run(configfile, tmp_path_factory.mktemp(name))

    @pytest.fixture(name="clone")
    def clone(request, tmp_path) -> Clone:
        return clone_of(request.getfixturevalue(name), tmp_path)

    return complete, clone


def complete_run(configfile: Path, root: Path) -> Path:
    """`root` holding src/ (the workflow's sources) and work/ (a complete run of `configfile` in it)."""
    src = _copy_sources(root / "src")
    work = root / "work"
    work.mkdir()
    proc = snakemake(work, configfile, src=src, timeout=900)
    (root / "complete_run.out").write_text(proc.stdout)
    assert proc.returncode == 0, f"the complete run failed:\n{tail(proc)}"
    (root / "configfile").write_text(str(configfile))
    return root


@dataclass
class Clone:
    src: Path
    work: Path
    configfile: Path

    def dry_run(self, cfg: dict | None = None, *args: str) -> DryRun:
        configfile = self.configfile if cfg is None else write_config(self.work.parent / "config.yaml", cfg)
        return dry_run(self.work, configfile, *args, src=self.src)


def clone_of(complete: Path, parent: Path) -> Clone:
    """A copy of a complete run (mtimes and .snakemake/ metadata kept) and of the sources it ran."""
    dest = parent / "clone"
    shutil.copytree(complete, dest, symlinks=True)   # copy2: mtimes kept
    return Clone(dest / "src", dest / "work", Path((complete / "configfile").read_text()))


def run_dirs(outputs) -> set[str]:
    """The run folders (results/<dataset>/<method>/<variant>/p<P>/seed<S>) that some outputs lie in."""
    pat = re.compile(r"^(results/[^/]+/[^/]+/[^/]+/p\d+/seed\d+)/")
    return {m[1] for o in outputs if (m := pat.match(o)) and "/base/" not in o}


def phase_files(run: str, name: str, phases) -> set[str]:
    return {f"{run}/phase{k}/{name}" for k in phases}
