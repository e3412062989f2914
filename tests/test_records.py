"""ucir.tools.records: a study's per-run records kept in the repository (save) and its tables made again from them
on a machine without its results (report)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ucir.config import ConfigError
from ucir.pipeline import REPORT_RULES
from ucir.report import FIGURES
from ucir.tools import records
from ucir.tools.plan import check, load_config

TINY = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


@pytest.fixture
def runs():
    """The tiny configuration at two class orders: two LUCIR runs of 2 phases."""
    return check(load_config([str(TINY)], ["seeds=[1993, 1994]"]))


def finish(root: Path, run, acc: float = 50.0, commit: str = "abc") -> None:
    """Write a finished run's files as the workflow does: results/ (summary, phase metrics) and logs/ (epochs)."""
    for rel in records.run_records(run):
        path = root / "results" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"accuracy": acc} if rel.endswith("summary.json") else {"accuracy": acc,
                                                                       "provenance": {"git_commit": commit}}
        path.write_text(json.dumps(data))
    for rel in records.run_logs(run):
        path = root / "logs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stage,epoch,loss,train_acc,img_per_s,seconds\n"
                        f"phase 1,1,0.5,{acc},{acc * 7},1.{len(commit)}\n")     # the time varies with the commit


def save(runs, root: Path, replace: bool = False) -> str:
    return records.save(runs, root / "docs" / "runs", replace, root / "results", root / "logs")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_keeps_what_the_tables_and_curves_read_of_finished_runs_only(runs, tmp_path):
    finish(tmp_path, runs[0])
    message = save(runs, tmp_path)
    kept = files(tmp_path / "docs" / "runs")
    run = runs[0].path
    assert set(kept) == {f"results/{run}/summary.json", f"results/{run}/phase1/metrics.json",
                         f"results/{run}/phase2/metrics.json",
                         "logs/synthetic/base/cosine-resnet8/seed1993/train_base.csv",
                         f"logs/{run}/phase1/train_phase.csv", f"logs/{run}/phase2/train_phase.csv",
                         f"logs/{run}/phase1/finetune_balanced.csv", f"logs/{run}/phase2/finetune_balanced.csv",
                         f"results/{run}/{records.MACHINE}"}
    assert kept[f"results/{run}/summary.json"] == (tmp_path / "results" / run / "summary.json").read_bytes()
    assert "1 finished runs" in message and "8 files written" in message and "1 runs not finished" in message


def test_saving_again_a_rerun_that_differs_only_in_how_it_was_made_keeps_the_first_record(runs, tmp_path):
    finish(tmp_path, runs[0], commit="abc")
    save(runs, tmp_path)
    before = files(tmp_path / "docs" / "runs")
    finish(tmp_path, runs[0], commit="another")        # other commit in the provenance, other seconds per epoch
    message = save(runs, tmp_path)
    assert files(tmp_path / "docs" / "runs") == before
    assert "0 files written, 8 kept" in message


def test_a_record_says_which_machine_first_kept_it(runs, tmp_path, monkeypatch):
    """machine.json beside a run's records: the CPU and torch of the sitting that made it; a rerun elsewhere that says
    the same leaves it as it was, a replaced record takes the new machine's."""
    sidecar = tmp_path / "docs" / "runs" / "results" / runs[0].path / records.MACHINE
    finish(tmp_path, runs[0])
    save(runs, tmp_path)
    here = json.loads(sidecar.read_text())
    assert set(here) == {"cpu", "cpu_flags", "torch_cpu_capability", "torch", "python"}
    assert here["cpu"] and here["torch"] == __import__("torch").__version__
    monkeypatch.setattr(records, "machine", lambda: {"cpu": "another CPU"})
    finish(tmp_path, runs[0], commit="another")
    save(runs, tmp_path)
    assert json.loads(sidecar.read_text()) == here
    finish(tmp_path, runs[0], acc=60.0)
    save(runs, tmp_path, replace=True)
    assert json.loads(sidecar.read_text()) == {"cpu": "another CPU"}


def test_a_rerun_that_found_something_else_is_refused_naming_the_file_and_nothing_is_written(runs, tmp_path):
    finish(tmp_path, runs[0], acc=50.0)
    save(runs, tmp_path)
    before = files(tmp_path / "docs" / "runs")
    finish(tmp_path, runs[0], acc=51.0)
    finish(tmp_path, runs[1], acc=51.0)                 # a new run, which would be written: it is not either
    with pytest.raises(ConfigError, match=rf"(?s)docs/runs/results/{runs[0].path}/summary.json.*--replace"):
        save(runs, tmp_path)
    assert files(tmp_path / "docs" / "runs") == before
    save(runs, tmp_path, replace=True)
    assert json.loads((tmp_path / "docs/runs/results" / runs[0].path / "summary.json").read_text()) == {
        "accuracy": 51.0}


def test_a_finished_run_missing_a_phase_metrics_file_is_an_error_naming_it(runs, tmp_path):
    finish(tmp_path, runs[0])
    (tmp_path / "results" / runs[0].path / "phase2" / "metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"phase2/metrics.json"):
        save(runs, tmp_path)
    assert not (tmp_path / "docs").exists()


def test_restore_puts_back_missing_records_and_refuses_results_that_differ(runs, tmp_path):
    for run in runs:
        finish(tmp_path / "sitting", run)
        save([run], tmp_path / "sitting")
    kept = tmp_path / "sitting" / "docs" / "runs"
    fresh = tmp_path / "fresh" / "results"
    assert "6 records put back" in records.restore(runs, kept, fresh)
    assert files(fresh) == {k: v for k, v in files(kept / "results").items() if not k.endswith(records.MACHINE)}
    assert "0 records put back" in records.restore(runs, kept, fresh)
    (fresh / runs[1].path / "summary.json").write_text(json.dumps({"accuracy": 12.0}))
    with pytest.raises(ConfigError, match=rf"{runs[1].path}/summary.json"):
        records.restore(runs, kept, fresh)


def test_report_without_a_record_of_every_run_stops_before_snakemake_naming_the_run(runs, tmp_path, monkeypatch,
                                                                                   capsys):
    finish(tmp_path, runs[0])
    save(runs, tmp_path)
    calls = []
    monkeypatch.setattr(records.subprocess, "call", lambda *a, **k: calls.append(a) or 0)
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")
    rc = records.main(["report", "--configfile", str(TINY), "--config", "seeds=[1993, 1994]",
                       "--records", str(tmp_path / "docs" / "runs")])
    assert rc == 1 and not calls
    err = capsys.readouterr().err
    assert "1 runs of the configuration have no record" in err and runs[1].path in err
    assert not (tmp_path / "fresh" / "results").exists()


def test_the_report_command_allows_the_report_rules_only_after_its_targets(runs):
    cmd = records.snakemake_command(runs, ["cfg.yaml"], ["seeds=[1993]"], 2, ["--snakefile", "S"])
    allowed = cmd.index("--allowed-rules")
    assert cmd[allowed + 1:] == list(REPORT_RULES)
    assert set(REPORT_RULES) == {"aggregate", *(f"plot_{f}" for f in FIGURES)}
    targets = [c for c in cmd if c.startswith("results/")]
    assert targets == cmd[3:3 + len(targets)] and "results/synthetic/tables/claims.csv" in targets
    assert {f"results/synthetic/figures/{f}.png" for f in FIGURES} <= set(targets)
    assert cmd[cmd.index("--config") + 1] == "seeds=[1993]" and "--snakefile" in cmd[:allowed]
