"""Issue 6, end to end: kill training jobs (SIGKILL, then SIGTERM as SLURM sends before preemption) in the middle
of a phase. No completed phase is lost or touched, nothing is left that a rerun would take for a finished output,
each rerun resumes the interrupted phase from its saved state, and the final results are identical to an
uninterrupted run of the same configuration (which also shows determinism across runs on CPU)."""
import hashlib
import os
import signal
from pathlib import Path

import pytest

from smk import job_pid, run_to_end, start, wait_for

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests/configs/interrupt.yaml"
RUN = "results/synthetic/lucir/default/p2/seed1993"
BASE = "results/synthetic/base/cosine-resnet8/seed1993"       # phase 0: base model, shared selection and evaluation
TARGET = f"{RUN}/summary.json"

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, wait: bool = True):
    return run_to_end(workdir, CONFIG, TARGET, timeout=600) if wait else start(workdir, CONFIG, TARGET)


def interrupt(workdir: Path, phase: int, sig: int) -> str:
    """Start the workflow, wait until phase `phase` is in its 4th epoch, send `sig` to that training job."""
    proc = snakemake(workdir, wait=False)
    wait_for(proc, workdir / f"logs/synthetic/lucir/default/p2/seed1993/phase{phase}/train_phase.log",
             f"phase {phase} epoch 3/", 400)
    pid = job_pid(workdir, "train_phase")
    assert pid is not None
    os.kill(pid, sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out                                   # the job failed, and snakemake says so
    return out


def phase_dir(workdir: Path, phase: int) -> Path:
    return workdir / (BASE if phase == 0 else f"{RUN}/phase{phase}")


def digests(workdir: Path, phase: int) -> dict[str, str]:
    d = phase_dir(workdir, phase)
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def unchanged(workdir: Path, phase: int, before: dict[str, str]) -> bool:
    """The files that existed before are byte-identical now."""
    now = digests(workdir, phase)
    return {k: now.get(k) for k in before} == before


def metrics(workdir: Path) -> list[dict]:
    import json
    out = []
    for k in range(3):
        path = phase_dir(workdir, k) / ("herding4/metrics.json" if k == 0 else "metrics.json")
        m = json.loads(path.read_text())
        m.pop("provenance")
        out.append(m)
    return out


def test_killed_jobs_lose_nothing_and_resume_to_identical_results(tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    code, out = snakemake(clean)
    assert code == 0, out

    # SIGKILL in phase 1: no handler runs; the rerun resumes from the last per-epoch state
    interrupt(broken, 1, signal.SIGKILL)
    p1 = broken / RUN / "phase1"
    assert not (p1 / "model.pt").exists()                              # no output that looks finished
    assert (p1 / "state.pt").exists()
    assert not list(p1.glob(".*.tmp"))                                 # no half-written temporary files
    phase0 = digests(broken, 0)

    # SIGTERM in phase 2: the handler saves the state after the batch in flight, then the job exits
    out = interrupt(broken, 2, signal.SIGTERM)
    log1 = (broken / "logs/synthetic/lucir/default/p2/seed1993/phase1/train_phase.log").read_text()
    assert "resumed at epoch" in log1
    log2 = (broken / "logs/synthetic/lucir/default/p2/seed1993/phase2/train_phase.log").read_text()
    assert "SIGTERM at epoch" in log2 and "resumable state saved" in log2
    assert not (broken / RUN / "phase2/model.pt").exists()
    phase1 = digests(broken, 1)
    assert unchanged(broken, 0, phase0)

    code, out = snakemake(broken)
    assert code == 0, out
    log2 = (broken / "logs/synthetic/lucir/default/p2/seed1993/phase2/train_phase.log").read_text()
    assert "resumed at epoch" in log2
    assert "rule train_base" not in out and "rule train_phase" in out
    assert unchanged(broken, 0, phase0) and unchanged(broken, 1, phase1)   # completed phases byte-identical
    assert not (broken / RUN / "phase2/state.pt").exists()             # removed once the phase completed

    assert metrics(broken) == metrics(clean)                           # identical to the uninterrupted run
