"""The workflow through a real Slurm: `snakemake --executor slurm --profile workflow/profiles/slurm`.

A single-node Slurm with one fake GPU runs on localhost (tests/slurm/cluster.sh, see tests/slurm/README.md). The
module starts it once and always stops it at the end. Where Slurm cannot be provided (not root, apt-get failed:
cluster.sh exits 3) every test here is skipped, loudly: the reason goes to the terminal, to the warnings summary
and to the skip summary (`-ra`). Any other failure to start is a test error.

The run is tests/configs/slurm.yaml (LUCIR, 4 classes, one incremental phase), and only its `summary.json` is
requested, not `all`: the 7 jobs up to the summary (train_base; select_base_exemplars and evaluate_base after the
base phase; train_phase, select_exemplars and evaluate_phase for phase 1; summarize_run) use every kind of Slurm
request (GPU rules, a CPU rule, per-rule memory and time, group jobs); `all` would add aggregate and the six plot_*
rules, 7 more CPU jobs of ~14 s each that test nothing new.

It runs twice through Slurm: with the profile as shipped, whose `groups` make each phase of a run one allocation
(3 sbatch submissions: train_base, the base phase's selection + evaluation, phase 1 with the summary), and with a
copy of the profile without `groups` (7 submissions, one per job); both are compared bit for bit with a local run.

Timing: the plugin polls squeue after 2 s, then 10 s longer each time nothing finished, so a job takes ~14 s
from submission to completion when it runs for less than ~12 s, and ~36 s otherwise (a loaded machine). The
grouped run starts while the ungrouped one waits on its polling, as the local one does. The whole module takes
3-5 minutes.

Snakemake is always run under a hard timeout that kills its whole process group: without accounting, a plugin
that falls back to sacct waits forever and ignores SIGTERM.

Both runs use a snapshot of the workflow's sources (Snakefile, workflow/ with the profile, ucir/ and the config),
taken when the module starts, as tests/test_workflow.py does. Every Slurm job starts Snakemake anew and recomputes
the rules' `code` params from the package files: an edit to the repository during the run (or between the Slurm
run and the local one) would otherwise make a job rerun upstream jobs of its own rule, or the two runs differ.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
CONFIG = REPO / "tests" / "configs" / "slurm.yaml"
SOURCES = ("Snakefile", "workflow", "ucir")          # what a workflow run reads from the repository
PROFILE = Path("workflow") / "profiles" / "slurm"    # in the snapshot
UNGROUPED = Path("workflow") / "profiles" / "slurm-ungrouped"   # the snapshot's copy of it, without `groups`
STATE_DIR = Path(os.environ.get("UCIR_SLURM_DIR", "/tmp/ucir-slurm"))   # cluster.sh's default
DAEMONS = ("munged", "slurmctld", "slurmd")

RUN = "results/synthetic/lucir/default/p1/seed1993"
BASE_DIR = "results/synthetic/base/cosine-resnet8/seed1993"
BASE = f"{BASE_DIR}/model.pt"
TARGET = f"{RUN}/summary.json"
EXPECTED_JOBS = {"train_base": 1, "select_base_exemplars": 1, "evaluate_base": 1, "train_phase": 1,
                 "select_exemplars": 1, "evaluate_phase": 1, "summarize_run": 1}
# the allocations of the grouped run: train_base alone, then one group job per phase (ucir.pipeline.slurm_allocations)
EXPECTED_GROUPS = {"base-synthetic-cosine-resnet8-seed1993-herding2": {"select_base_exemplars", "evaluate_base"},
                   "phase-synthetic-lucir-default-p1-seed1993-k1": {"train_phase", "select_exemplars",
                                                                    "evaluate_phase", "summarize_run"}}
EXPECTED_RESULTS = {BASE, f"{BASE_DIR}/herding2/memory.pt", f"{BASE_DIR}/herding2/metrics.json",
                    f"{RUN}/summary.json", f"{RUN}/phases.csv",
                    *(f"{RUN}/phase1/{f}" for f in ("model.pt", "memory.pt", "metrics.json"))}
CUDA_ERROR = "cuda was requested but torch.cuda.is_available() is False"

SLURM_ARGS = [
    "--executor", "slurm", "--jobs", "2",   # and --profile <snapshot>/workflow/profiles/slurm
    # No accounting on the test cluster: sacct fails, and the plugin would then wait forever.
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
    # Every job's Slurm log is kept (.snakemake/slurm_logs/rule_X/<wildcards>/<jobid>.log) and, with --verbose,
    # holds the job's environment as Slurm set it; --verbose also prints every sbatch command line.
    "--slurm-keep-successful-logs", "--verbose",
    # No --default-resources/--set-resources: on the command line they replace the profile's sections.
]
SNAKEMAKE_TIMEOUT = 480      # seconds; a normal Slurm run takes 100-200 s

pytestmark = pytest.mark.slurm


class SlurmUnavailableWarning(UserWarning):
    """The Slurm tests could not run on this machine."""


# ---- processes under a hard timeout ---------------------------------------------------------------------------

def _run_killable(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run cmd in its own session, stdout and stderr together; past `timeout`, SIGKILL its whole process group and
    fail the test."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        stdout, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout:.0f} s and was killed; its output ended "
                    f"with:\n{(p.communicate()[0] or '')[-4000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, stdout, "")


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


class Snakemake:
    """One snakemake process, started at once in its own session, its output in a file (which survives a kill)."""

    def __init__(self, cmd: list[str], *, cwd: Path, env: dict[str, str], out: Path, nice: bool = False) -> None:
        self.cmd, self.out = cmd, out
        with open(out, "w") as sink:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=(lambda: os.nice(19)) if nice else None)

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        """Its result; past `timeout` (seconds from now), SIGKILL its process group and fail the test."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            pytest.fail(f"{' '.join(self.cmd[:8])} ... did not finish in time and was killed; its output ended "
                        f"with:\n{self.out.read_text()[-4000:]}")
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.out.read_text(), "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc)


# ---- the cluster ----------------------------------------------------------------------------------------------

def _cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env["UCIR_SLURM_DIR"] = str(STATE_DIR)
    # The profile's real requests (16000 MB for training, 2 CPUs per GPU) must fit on the fake node whatever the
    # machine has; nothing is enforced.
    env.setdefault("UCIR_SLURM_NODE_MEM_MB", "64000")
    env.setdefault("UCIR_SLURM_NODE_CPUS", "8")
    return env


def _proc_table() -> dict[int, tuple[str, str, str]]:
    """pid -> (comm, state letter, command line) of every process."""
    table = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state = stat[stat.rindex(")") + 2:].split(" ", 1)[0]
        table[int(d.name)] = (comm, state, cmdline)
    return table


class Cluster:
    def __init__(self) -> None:
        self.env = _cluster_env()
        self.daemons: dict[str, int] = {}          # name -> pid, as started
        self.stop_result: subprocess.CompletedProcess | None = None

    def script(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return _run_killable(["bash", str(CLUSTER_SH), command], cwd=REPO, env=self.env, timeout=timeout)

    def start(self) -> subprocess.CompletedProcess:
        # Generous: on a fresh machine this apt-installs slurm-wlm and munge first.
        r = self.script("start", timeout=900)
        if r.returncode == 0:
            for name in DAEMONS:
                self.daemons[name] = int((STATE_DIR / "pid" / f"{name}.pid").read_text().strip())
        return r

    def stop(self) -> subprocess.CompletedProcess:
        """Stop the cluster (once; later calls return the first result)."""
        if self.stop_result is None:
            self.stop_result = self.script("stop", timeout=180)
        return self.stop_result

    def leftovers(self) -> list[str]:
        """Live (non-zombie) processes of this cluster: its daemons by pid, any slurmctld/slurmd/slurmstepd (the
        cluster holds Slurm's fixed ports, so no other Slurm runs here) and any munged using its state dir."""
        found = []
        for pid, (comm, state, cmdline) in _proc_table().items():
            if state == "Z":
                continue        # exited, waiting for pid 1 to reap it
            if (self.daemons.get(comm) == pid or comm in ("slurmctld", "slurmd", "slurmstepd")
                    or (comm == "munged" and str(STATE_DIR) in cmdline)):
                found.append(f"{pid} {comm} ({state}): {cmdline}")
        return found


def _shout(config: pytest.Config, message: str) -> None:
    """Straight to the terminal, past output capturing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(message, file=sys.__stderr__)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"!!! {message}", red=True, bold=True)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    c = Cluster()
    stop_needed = True

    def stop_at_end() -> None:
        if stop_needed:
            r = c.stop()
            assert r.returncode == 0, f"cluster.sh stop failed (exit {r.returncode}):\n{r.stdout}"

    request.addfinalizer(stop_at_end)      # registered first: a start that fails halfway is cleaned up too
    r = c.start()
    if r.returncode == 3:
        stop_needed = False                # cluster.sh started nothing (or already cleaned up after itself)
        why = next((line for line in reversed(r.stdout.splitlines()) if "UNAVAILABLE" in line),
                   r.stdout.strip()[-300:])
        message = (f"SLURM TESTS SKIPPED: tests/slurm/cluster.sh start exited 3, so Slurm cannot be provided on "
                   f"this machine ({why}). The workflow was NOT tested through the Slurm executor; run the tests "
                   f"as root on a Debian/Ubuntu machine to test it.")
        _shout(request.config, message)
        warnings.warn(message, SlurmUnavailableWarning, stacklevel=1)
        pytest.skip(message)
    if r.returncode != 0:
        pytest.fail(f"tests/slurm/cluster.sh start failed (exit {r.returncode}):\n{r.stdout[-6000:]}",
                    pytrace=False)
    return c


# ---- snakemake ------------------------------------------------------------------------------------------------

@dataclass
class Submission:
    jobid: str            # snakemake's job id (a number; a UUID for a group job)
    slurm_id: int
    log: Path             # the Slurm job's log
    rule: str             # from the log's folder .snakemake/slurm_logs/rule_<rule>/<wildcards>/; "" for a group
    group: str = ""       # from .snakemake/slurm_logs/group_<group id>_<its rules, sorted, joined by _>/
    rules: frozenset = frozenset()   # a group's rules


_SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.M)
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$", re.M)
_SBATCH = re.compile(r"^sbatch call: (sbatch .*)$", re.M)
_STAT_ROW = re.compile(r"^(\w+)\s+(\d+)$")


def submissions(out: str) -> list[Submission]:
    subs = []
    rules = "|".join(EXPECTED_JOBS)
    for jobid, slurm_id, log in _SUBMITTED.findall(out):
        if m := re.search(r"/slurm_logs/rule_(\w+)/", log):
            subs.append(Submission(jobid, int(slurm_id), Path(log), m.group(1)))
            continue
        m = re.search(rf"/slurm_logs/group_(\S+?)((?:_(?:{rules}))+)/", log)
        assert m, f"unexpected Slurm log path {log}"
        members = frozenset(re.findall(rules, m.group(2)))
        subs.append(Submission(jobid, int(slurm_id), Path(log), "", m.group(1), members))
    return subs


def rule_resources(src: Path) -> dict[str, dict[str, int]]:
    """Every rule's own `resources:` with a number (gpu, mem_mb, runtime), as the rules take them from the table in
    ucir/pipeline.py (cpus_per_gpu follows a job's threads: the profile's set-threads)."""
    from ucir import pipeline
    return {r.name: {k: v for k, v in pipeline.resources_of(r.name).items() if isinstance(v, int)}
            for r in pipeline.RULES}


def job_stats(out: str) -> dict[str, int]:
    """The "Job stats:" table Snakemake prints before running (rule -> count, without the total)."""
    lines = out[out.index("Job stats:"):].splitlines()[3:]
    stats = {}
    for line in lines:
        m = _STAT_ROW.match(line.strip())
        if not m:
            break
        stats[m.group(1)] = int(m.group(2))
    stats.pop("total", None)
    return stats


def sbatch_calls(out: str) -> dict[Path, str]:
    """Slurm log folder -> the sbatch command line that submitted the job logging there."""
    calls = {}
    for call in _SBATCH.findall(out):
        m = re.search(r"--output (\S+)/%j\.log", call)
        assert m, f"no --output in {call}"
        calls[Path(m.group(1))] = call
    return calls


def job_environment(slurm_log: str) -> dict[str, str]:
    """The environment the job ran with, as the jobstep plugin dumps it with --verbose."""
    m = re.search(r"^environment: environ\((\{.*\})\)$", slurm_log, re.M)
    assert m, "no 'environment: environ({...})' line in the Slurm log (the jobstep prints it with --verbose)"
    return ast.literal_eval(m.group(1))


def _env(src: Path) -> dict[str, str]:
    # SLURM_* of an enclosing Slurm job would leak into every sbatch (--export=ALL): drop them. PYTHONPATH reaches
    # the jobs (sbatch --export=ALL), so their scripts import the snapshot's ucir too.
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE" and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def start_snakemake(src: Path, workdir: Path, configfile: Path, *args: str, slurm: bool = False,
                    nice: bool = False, profile: Path = PROFILE) -> Snakemake:
    """`python -m snakemake` on the snapshot `src`, outputs under `workdir`; with `slurm`, through the executor and
    the snapshot's `profile`. Output goes to <workdir>.out next to workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(src / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), *args]
    if slurm:
        cmd += ["--profile", str(src / profile), *SLURM_ARGS]
    cmd.append(TARGET)
    return Snakemake(cmd, cwd=workdir, env=_env(src), out=workdir.parent / f"{workdir.name}.out", nice=nice)


def _tail(r: subprocess.CompletedProcess, n: int = 6000) -> str:
    return r.stdout[-n:]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow's sources and the test config, as they are now."""
    root = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, root / name)
    shutil.copy2(CONFIG, root / CONFIG.name)
    profile = yaml.safe_load((root / PROFILE / "config.yaml").read_text())
    assert profile.pop("groups"), "the Slurm profile has no groups"
    (root / UNGROUPED).mkdir()
    (root / UNGROUPED / "config.yaml").write_text(yaml.safe_dump(profile))
    return root


@pytest.fixture(scope="module")
def local_started(src: Path, tmp_path_factory: pytest.TempPathFactory):
    """The local reference run (no executor), started in the background at the lowest CPU priority: it runs
    while the Slurm run mostly waits on squeue polling, saving its ~40 s without slowing the Slurm jobs."""
    workdir = tmp_path_factory.mktemp("local") / "run"
    run = start_snakemake(src, workdir, src / CONFIG.name, "--cores", "2", nice=True)
    yield workdir, run
    run.kill()


@pytest.fixture(scope="module")
def grouped_started(cluster: Cluster, src: Path, tmp_path_factory: pytest.TempPathFactory):
    """The run with the profile as shipped (groups), started alongside the ungrouped one: both mostly wait on
    squeue polling, and Slurm runs their jobs on the one (fake) GPU in turn."""
    workdir = tmp_path_factory.mktemp("grouped") / "run"
    run = start_snakemake(src, workdir, src / CONFIG.name, slurm=True)
    yield workdir, run
    run.kill()


@pytest.fixture(scope="module")
def slurm_run(cluster: Cluster, src: Path, local_started, grouped_started,
              tmp_path_factory: pytest.TempPathFactory):
    """Every job its own allocation (the profile without `groups`). local_started, grouped_started: only so that
    those runs start now, alongside this one."""
    workdir = tmp_path_factory.mktemp("slurm") / "run"
    r = start_snakemake(src, workdir, src / CONFIG.name, slurm=True, profile=UNGROUPED).wait(SNAKEMAKE_TIMEOUT)
    assert r.returncode == 0, f"the ungrouped Slurm run failed (exit {r.returncode}):\n{_tail(r)}"
    return workdir, r.stdout


@pytest.fixture(scope="module")
def grouped_run(grouped_started):
    workdir, run = grouped_started
    r = run.wait(SNAKEMAKE_TIMEOUT)
    assert r.returncode == 0, f"the grouped Slurm run failed (exit {r.returncode}):\n{_tail(r)}"
    return workdir, r.stdout


@pytest.fixture(scope="module")
def local_run(local_started) -> Path:
    workdir, run = local_started
    r = run.wait(300)
    assert r.returncode == 0, f"the local run failed (exit {r.returncode}):\n{_tail(r)}"
    return workdir


# ---- comparing results ----------------------------------------------------------------------------------------

def _tensors_equal(a, b) -> bool:
    """torch.equal, with NaN equal to NaN (in the same places)."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    return (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0)))


def _differences(a, b, where: str = "") -> list[str]:
    """Where two loaded checkpoints or JSON documents differ: tensors bit for bit, numbers exactly (NaN equal to
    NaN: metrics of an empty class group are NaN), containers recursively."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _tensors_equal(a, b)
        return [] if same else [where or "<root>"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return [f"{where}: {type(a).__name__}[{len(a)}] != {type(b).__name__}[{len(b)}]"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


# ---- tests ----------------------------------------------------------------------------------------------------

def test_every_job_ran_as_a_slurm_job(slurm_run, src):
    workdir, out = slurm_run
    assert f"Using profile {src / UNGROUPED} " in out
    assert job_stats(out) == EXPECTED_JOBS
    subs = submissions(out)
    assert sorted(s.rule for s in subs) == sorted(r for r, n in EXPECTED_JOBS.items() for _ in range(n)), out[-3000:]
    assert len({s.slurm_id for s in subs}) == len(subs) and len({s.jobid for s in subs}) == len(subs)
    # every submitted job finished, and nothing ran outside Slurm
    assert {j: rule for j, rule in _FINISHED.findall(out)} == {s.jobid: s.rule for s in subs}
    assert "localrule" not in out
    for s in subs:
        assert s.log.is_file(), f"{s.rule}: no Slurm log {s.log}"
        log = s.log.read_text()
        assert job_environment(log)["SLURM_JOB_ID"] == str(s.slurm_id), s.log
        assert re.search(rf"^Finished jobid: \d+ \(Rule: {s.rule}\)$", log, re.M), f"{s.rule}: {log[-2000:]}"
    assert {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file()} == EXPECTED_RESULTS


def test_gpu_rules_get_a_gpu_and_cpu_rules_none(slurm_run, src):
    workdir, out = slurm_run
    profile = yaml.safe_load((src / PROFILE / "config.yaml").read_text())
    resources = rule_resources(src)
    calls = sbatch_calls(out)
    subs = submissions(out)
    assert len(calls) == len(subs)
    gpu_rules = {r for r, res in resources.items() if res.get("gpu")}
    # every stage that runs the network asks for a GPU
    assert gpu_rules >= set(EXPECTED_JOBS) - {"summarize_run"}, resources
    for s in subs:
        call = calls[s.log.parent]
        env = job_environment(s.log.read_text())
        # the rule's own request reached sbatch, with the profile's partition and CPUs per GPU
        assert f"--mem {resources[s.rule]['mem_mb']} " in call and f"-t {resources[s.rule]['runtime']} " in call, \
            (s.rule, call)
        assert f"-p {profile['default-resources']['slurm_partition']} " in call, (s.rule, call)
        # SIGTERM (a training job then saves its resumable state) before the time limit, requeue on preemption
        assert " --requeue " in call and " --signal=TERM@" in call, (s.rule, call)
        if s.rule in gpu_rules:
            assert "--gpus=1" in call, (s.rule, call)
            assert f"--cpus-per-gpu={profile['set-threads'][s.rule]}" in call, (s.rule, call)
            # Slurm granted the node's (fake) GPU: GPU 0 of gres.conf
            assert env.get("SLURM_GPUS_ON_NODE") == "1" and env.get("SLURM_JOB_GPUS") == "0", (s.rule, env)
            assert env.get("CUDA_VISIBLE_DEVICES") == "0", (s.rule, env)
        else:
            assert not re.search(r"--(gpus|gres|gpus-per-\w+|cpus-per-gpu)\b", call), (s.rule, call)
            assert "SLURM_GPUS_ON_NODE" not in env and "SLURM_JOB_GPUS" not in env, (s.rule, env)


def test_grouped_run_needs_fewer_allocations(grouped_run, slurm_run, src):
    """The profile's groups: one sbatch per phase of the run instead of one per job, each asking for the most
    memory and GPUs of its jobs and the sum of their runtimes; every job still ran, inside those allocations."""
    from collections import Counter

    from ucir.pipeline import slurm_allocations

    workdir, out = grouped_run
    assert f"Using profile {src / PROFILE} " in out
    assert job_stats(out) == EXPECTED_JOBS
    subs = submissions(out)
    ungrouped = submissions(slurm_run[1])
    assert len(subs) == 3 < len(ungrouped) == sum(EXPECTED_JOBS.values()), [(s.rule, s.group) for s in subs]
    assert len(subs) == slurm_allocations(Counter(EXPECTED_JOBS))       # what `make plan` counts
    assert [s.rule for s in subs if s.rule] == ["train_base"]
    assert {s.group: s.rules for s in subs if s.group} == EXPECTED_GROUPS
    assert sorted(rule for _, rule in _FINISHED.findall(out)) == sorted(EXPECTED_JOBS)
    assert "localrule" not in out
    resources = rule_resources(src)
    calls = sbatch_calls(out)
    for s in subs:
        call = calls[s.log.parent]
        members = s.rules or {s.rule}
        mem = max(resources[r]["mem_mb"] for r in members)
        runtime = sum(resources[r]["runtime"] for r in members)
        assert f"--mem {mem} " in call and f"-t {runtime} " in call and "--gpus=1" in call, (s.group, call)
        log = s.log.read_text()
        assert job_environment(log)["SLURM_JOB_ID"] == str(s.slurm_id), s.log
        for r in members:      # the group's jobs ran inside its allocation
            assert re.search(rf"^Finished jobid: \d+ \(Rule: {r}\)$", log, re.M), f"{r}: {log[-2000:]}"
    assert {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file()} == EXPECTED_RESULTS


@pytest.mark.parametrize("which", ["ungrouped", "grouped"])
def test_same_results_as_a_local_run(which, request, local_run):
    import torch

    slurm_dir, _ = request.getfixturevalue("slurm_run" if which == "ungrouped" else "grouped_run")
    files = {str(p.relative_to(local_run)) for p in (local_run / "results").rglob("*") if p.is_file()}
    assert files == EXPECTED_RESULTS
    for f in sorted(files):
        a, b = local_run / f, slurm_dir / f
        if f.endswith(".pt"):
            diff = _differences(torch.load(a, weights_only=True), torch.load(b, weights_only=True))
        elif f.endswith(".json"):
            # provenance records the machine, device and git status, not results
            x, y = (json.loads(p.read_text()) for p in (a, b))
            x.pop("provenance", None), y.pop("provenance", None)
            diff = _differences(x, y)
        else:
            diff = [] if a.read_bytes() == b.read_bytes() else ["bytes"]
        assert not diff, f"{f} differs between the local and the Slurm run at: {diff[:10]}"


def test_failed_job_fails_the_run(cluster, src, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test makes train_base fail by asking for CUDA on a machine without it; this one has CUDA")
    config = yaml.safe_load((src / CONFIG.name).read_text())
    config["device"] = "cuda"          # train_base raises at its start (ucir.runtime.pick_device)
    configfile = tmp_path / "cuda.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    r = start_snakemake(src, workdir, configfile, slurm=True).wait(SNAKEMAKE_TIMEOUT)
    assert r.returncode != 0, _tail(r)
    subs = submissions(r.stdout)
    assert [s.rule for s in subs] == ["train_base"], _tail(r)   # everything else waits on it
    (s,) = subs
    assert "Error in rule train_base:" in r.stdout, _tail(r)
    assert f"SLURM-job '{s.slurm_id}' failed" in r.stdout, _tail(r)
    assert "Finished jobid" not in r.stdout, _tail(r)
    assert CUDA_ERROR in s.log.read_text()
    assert f"{src / 'ucir'}/" in s.log.read_text()   # the job ran the snapshot's code (its traceback)
    assert CUDA_ERROR in (workdir / "logs/synthetic/base/cosine-resnet8/seed1993/train_base.log").read_text()
    assert not (workdir / BASE).exists()


def test_stop_leaves_no_daemons(cluster):
    """Runs last in this module: stops the cluster itself (the fixture's finalizer then has nothing to do)."""
    assert set(cluster.daemons) == set(DAEMONS)
    live_before = cluster.leftovers()
    assert {line.split()[1] for line in live_before} >= set(DAEMONS), live_before
    r = cluster.stop()
    assert r.returncode == 0, r.stdout
    deadline = time.monotonic() + 15         # cluster.sh waits for its daemons; allow job steps a moment
    while (left := cluster.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "processes of the test cluster still running after stop:\n" + "\n".join(left)
    assert not STATE_DIR.exists()
    conf = Path("/etc/slurm/slurm.conf")
    assert not conf.exists() or "Written by tests/slurm/cluster.sh" not in conf.read_text()
