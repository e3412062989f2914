"""Issue 6 and issue 24, end to end: kill training jobs (SIGKILL; SIGTERM as Slurm sends before a time limit or
preemption; SIGINT as Ctrl-C sends to the whole foreground, snakemake included) in the middle of a phase. No
completed phase is lost or touched, nothing is left that a rerun would take for a finished output, each rerun resumes
the interrupted phase from its saved state, its log and epoch CSV hold every epoch once (the earlier attempts' lines
and rows come back from the state), no temporary file of a killed writer survives, and the final results are
identical to an uninterrupted run of the same configuration (which also shows determinism across runs on CPU)."""
import csv
import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

from smk import job_pid, run_to_end, start, wait_for

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests/configs/interrupt.yaml"
RUN = "results/synthetic/lucir/default/p2/seed1993"
BASE = "results/synthetic/base/cosine-resnet8/seed1993"       # phase 0: base model, shared selection and evaluation
LOGS = "logs/synthetic/lucir/default/p2/seed1993"
TARGET = f"{RUN}/summary.json"
EPOCHS = 30                                                   # tests/configs/interrupt.yaml: train.epochs

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, wait: bool = True):
    return run_to_end(workdir, CONFIG, TARGET, timeout=600) if wait else start(workdir, CONFIG, TARGET)


def interrupt(workdir: Path, phase: int, sig: int, epoch: int = 3, group: bool = False) -> str:
    """Start the workflow, wait until phase `phase` is in epoch `epoch` + 1, send `sig` to that training job (or, with
    `group`, to snakemake and every process it started, as Ctrl-C in a terminal does)."""
    proc = snakemake(workdir, wait=False)
    wait_for(proc, workdir / f"{LOGS}/phase{phase}/train_phase.log", f"phase {phase} epoch {epoch}/", 400)
    pid = job_pid(workdir, "train_phase")
    assert pid is not None
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(pid, sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out                                   # the job failed, and snakemake says so
    return out


def killed_writes(folder: Path, *names: str) -> list[Path]:
    """What a SIGKILL during an atomic write (ucir.io) leaves: `.{name}.<random>.tmp` beside the file."""
    out = [folder / f".{name}.{code}.tmp" for name in names for code in ("x7_k2q9a", "0a1b2c3d4e5f")]
    for p in out:
        p.write_bytes(b"half a file")
    return out


def temporaries(workdir: Path) -> list[Path]:
    return sorted(p for p in workdir.rglob(".*.tmp") if ".snakemake" not in p.parts)


def stopped(log: str, sig: str) -> bool:
    """The log says the job stopped on `sig` after saving its state."""
    return re.search(rf"phase \d: {sig} (at|after) epoch \d+.*: saving the resumable state, then stopping$", log,
                     re.M) is not None


def epoch_lines(workdir: Path, phase: int) -> list[int]:
    """The epochs of phase `phase` whose line its training log shows, in order."""
    text = (workdir / f"{LOGS}/phase{phase}/train_phase.log").read_text()
    return [int(e) for e in re.findall(rf"^\[[^]]*\] phase {phase} epoch (\d+)/{EPOCHS} ", text, re.M)]


def epoch_rows(workdir: Path, phase: int) -> list[dict]:
    """The rows of the phase's epoch CSV, without the timings (which differ between runs)."""
    with open(workdir / f"{LOGS}/phase{phase}/train_phase.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "seconds")} for r in csv.DictReader(f)]


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

    # SIGKILL in phase 1: no handler runs; the rerun resumes from the last per-epoch state. A kill inside a save
    # would leave its temporary file: planted here beside the state and the model, for the rerun to remove.
    interrupt(broken, 1, signal.SIGKILL)
    p1 = broken / RUN / "phase1"
    assert not (p1 / "model.pt").exists()                              # no output that looks finished
    assert (p1 / "state.pt").exists()
    stale = killed_writes(p1, "state.pt", "model.pt")
    phase0 = digests(broken, 0)

    # SIGTERM in phase 2: the handler saves the state after the batch in flight, then the job exits
    out = interrupt(broken, 2, signal.SIGTERM)
    log1 = (broken / f"{LOGS}/phase1/train_phase.log").read_text()
    assert "resumed at epoch" in log1 and "the log of the interrupted attempt" in log1
    assert epoch_lines(broken, 1) == list(range(1, EPOCHS + 1))       # each epoch once: the killed attempt's too
    log2 = (broken / f"{LOGS}/phase2/train_phase.log").read_text()
    assert stopped(log2, "SIGTERM")
    assert not (broken / RUN / "phase2/model.pt").exists()
    assert not any(p.exists() for p in stale)
    phase1 = digests(broken, 1)
    assert unchanged(broken, 0, phase0)

    # Ctrl-C while phase 2 trains again: SIGINT to snakemake and the job; the job saves its state as for SIGTERM
    stale = killed_writes(broken / RUN / "phase2", "state.pt")
    interrupt(broken, 2, signal.SIGINT, epoch=8, group=True)
    log2 = (broken / f"{LOGS}/phase2/train_phase.log").read_text()
    assert stopped(log2, "SIGTERM") and stopped(log2, "SIGINT")       # the first attempt's lines came back
    assert (broken / RUN / "phase2/state.pt").exists() and not (broken / RUN / "phase2/model.pt").exists()

    code, out = snakemake(broken)
    assert code == 0, out
    log2 = (broken / f"{LOGS}/phase2/train_phase.log").read_text()
    assert log2.count("resumed at epoch") == 2 and stopped(log2, "SIGTERM") and stopped(log2, "SIGINT")
    assert "rule train_base" not in out and "rule train_phase" in out
    assert unchanged(broken, 0, phase0) and unchanged(broken, 1, phase1)   # completed phases byte-identical
    assert not (broken / RUN / "phase2/state.pt").exists()             # removed once the phase completed
    assert not any(p.exists() for p in stale) and temporaries(broken) == []

    # every epoch once in each log and CSV, with the numbers of the uninterrupted run
    for k in (1, 2):
        assert epoch_lines(broken, k) == list(range(1, EPOCHS + 1)), k
        assert epoch_rows(broken, k) == epoch_rows(clean, k), k
    assert metrics(broken) == metrics(clean)                           # identical to the uninterrupted run
