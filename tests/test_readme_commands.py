"""The README's commands work as written: each is read from the README's (or docs/running.md's) code blocks, so a
test fails when the README changes it, and run in a checkout copied to a temporary folder, as dry runs.

A checkout here is the workflow's sources (tests/smk.py's snapshot) with config.yaml and configs/; `snakemake` is
the one beside the test's Python. Without data/ the paper grid's dry run must still print its plan (issue 25)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import smk

REPO = Path(__file__).resolve().parents[1]
DEMO = "configs/demo.yaml"

pytestmark = pytest.mark.workflow


def commands(page: str) -> list[str]:
    """The shell commands of a page's ```bash blocks, one per line, without comments."""
    text = (REPO / page).read_text()
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()             # a comment after two or more spaces
            if line and not line.startswith("#"):
                out.append(line)
    return out


def command(page: str, pattern: str) -> str:
    """The one command of `page` that matches `pattern` (a regular expression searched in each command)."""
    found = [c for c in commands(page) if re.search(pattern, c)]
    assert len(found) == 1, f"{page}: expected one command matching {pattern!r}, found {found}"
    return found[0]


def dry(cmd: str) -> str:
    """`cmd` (a snakemake command) as a dry run: --dry-run right after the program name, where it cannot be read
    as a target or as a config file."""
    assert cmd.startswith("snakemake "), cmd
    return "snakemake --dry-run " + cmd[len("snakemake "):]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A fresh checkout (no results/, logs/, data/ or .venv) in a temporary folder."""
    root = smk._copy_sources(tmp_path_factory.mktemp("checkout") / "ucir")
    shutil.copy2(REPO / "config.yaml", root / "config.yaml")
    shutil.copytree(REPO / "configs", root / "configs")
    return root


def shell(checkout: Path, cmd: str, timeout: int = 300, stderr=subprocess.STDOUT) -> subprocess.CompletedProcess:
    """`cmd` run by bash in the checkout, with the test's Python environment's `snakemake` first on PATH; its
    standard error in its output unless `stderr` says otherwise (a terminal shows both; a pipe reads only stdout)."""
    env = smk.env_for(checkout)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(["bash", "-c", cmd], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=timeout)


def planned(checkout: Path, cmd: str, timeout: int = 300) -> smk.DryRun:
    proc = shell(checkout, cmd, timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{smk.tail(proc)}"
    return smk.parse_dry_run(proc.stdout)


@pytest.fixture(scope="module")
def demo_plan(checkout) -> smk.DryRun:
    """The README's demo command (what `make demo` runs), as a dry run."""
    cmd = command("README.md", rf"^snakemake --cores \d+ --configfile {re.escape(DEMO)}$")
    return planned(checkout, dry(cmd))


def test_the_demo_command_plans_every_stage(demo_plan):
    assert {"train_base", "train_phase", "select_exemplars", "evaluate_phase", "aggregate",
            "plot_accuracy"} <= set(demo_plan.stats), demo_plan.stats


def test_the_example_with_a_target_builds_that_target_only(checkout, demo_plan):
    cmd = command("README.md", r"^snakemake .*--configfile .* -- \S+$")
    target = shlex.split(cmd)[-1]
    plan = planned(checkout, dry(cmd))
    assert target in plan.outputs(), plan.text[-3000:]
    # one run and the base model it starts from: no tables, no figures, nothing of the demo's other runs
    assert smk.run_dirs(plan.outputs()) == {str(Path(target).parent)}
    assert plan.outputs() < demo_plan.outputs() and "aggregate" not in plan.stats


def test_the_target_after_the_configfile_without_a_separator_is_read_as_a_config_file(checkout):
    # why the README puts `--` before the target (Snakemake's --configfile takes every word after it)
    cmd = command("README.md", r"^snakemake .*--configfile .* -- \S+$").replace(" -- ", " ")
    proc = shell(checkout, dry(cmd))
    assert proc.returncode != 0 and "summary.json" in proc.stdout, smk.tail(proc)


def test_the_watched_log_is_one_the_demo_writes(demo_plan):
    cmd = command("docs/running.md", r"^tail -f ")
    log = shlex.split(cmd)[-1]
    logs = {p.strip() for job in demo_plan.jobs for p in job.fields.get("log", "").split(",")}
    assert log in logs, f"{log} is not a log of the demo's jobs"


def test_the_summary_reads_as_a_table(checkout, demo_plan):
    cmd = command("docs/running.md", r"^snakemake .*--summary")
    assert f"--configfile {DEMO}" in cmd, "the summary should describe the demo, whose log the page follows"
    proc = shell(checkout, cmd, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr[-5000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    header = lines[0].split()
    assert header == ["output_file", "date", "rule", "log-file(s)", "status", "plan"], lines[0]
    starts = [lines[0].index(h) for h in header]
    rows = lines[1:]
    for row in rows:                                   # every field starts where its heading starts
        assert all(row[s] != " " and (s == 0 or row[s - 1] == " ") for s in starts), (lines[0], row)
    files = {row[:starts[1]].rstrip() for row in rows}
    assert demo_plan.outputs() <= files
    assert {row[starts[4]:starts[5]].rstrip() for row in rows} == {"missing"}      # a fresh checkout


def test_the_summary_keeps_dates_in_one_column(checkout, tmp_path):
    # a date has spaces ("Sat Dec  5 00:09:21 2026"): the README's column command must not split it
    cmd = command("docs/running.md", r"^snakemake .*--summary")
    pipe = cmd[cmd.index("|"):]
    table = "output_file\tdate\trule\nresults/a.csv\tSat Dec  5 00:09:21 2026\taggregate\n"
    proc = shell(checkout, f"printf %s {shlex.quote(table)} {pipe}")
    assert proc.returncode == 0, smk.tail(proc)
    header, row = proc.stdout.splitlines()
    assert "Sat Dec  5 00:09:21 2026" in row and row.index("aggregate") == header.index("rule"), proc.stdout


def test_the_jobs_still_to_run(checkout, demo_plan):
    cmd = command("docs/running.md", r"^snakemake .*--quiet rules")
    proc = shell(checkout, cmd)
    assert proc.returncode == 0, smk.tail(proc)
    assert smk.job_stats(proc.stdout) == demo_plan.stats


def test_the_paper_grid_dry_run_needs_no_data(checkout):
    cmd = command("README.md", r"^snakemake -n$")
    assert not (checkout / "data").exists()
    proc = shell(checkout, cmd, timeout=1200)          # 2,720 jobs: about 30 s on an idle core
    assert proc.returncode == 0, smk.tail(proc)
    assert "datasets.cifar100: data not checked" in proc.stdout, smk.tail(proc)   # said, not silent
    plan = smk.parse_dry_run(proc.stdout)
    assert sum(plan.stats.values()) > 1000 and {"train_base", "train_phase", "aggregate"} <= set(plan.stats)
    assert not (checkout / "data").exists()                                     # a dry run creates nothing


def test_a_sitting_of_a_study_plans_its_runs_and_no_table(checkout):
    """docs/running.md's sitting: the main comparison's first 5 class orders of the Fashion-MNIST study (without
    its data here: the dry run plans and says so), and nothing that reads every run."""
    cmd = command("docs/running.md", r"^snakemake \$\(python -m ucir\.tools\.targets ")
    run = planned(checkout, dry(cmd))
    assert smk.run_dirs(run.outputs()) == {f"results/fashion_mnist/{m}/default/p5/seed{s}"
                                           for m in ("lucir", "icarl", "finetune") for s in range(1993, 1998)}
    assert run.stats["summarize_run"] == 15 and "aggregate" not in run.stats
