"""Exact invalidation at grid scale: a changed setting replans only the jobs whose results it can change.

One complete run of tests/configs/grid.yaml (every method, two LUCIR variants, two figures; module-scoped, ~2 min
on 2 CPU cores), then dry runs of changes (tests/smk.py), each with the jobs it replans counted.
"""
from __future__ import annotations

import re

import pytest
import yaml

from smk import REPO, dry_run, run_dirs, snakemake, tail, workflow_fixtures, write_config

GRID = REPO / "tests" / "configs" / "grid.yaml"
RUNS = {"lucir/default", "lucir/cn_lc", "icarl/default", "lwf/default", "finetune/default", "joint/default"}
BASE = "results/synthetic/base"

pytestmark = pytest.mark.workflow


def grid() -> dict:
    return yaml.safe_load(GRID.read_text())


def run(name: str) -> str:
    return f"results/synthetic/{name}/p2/seed1993"


complete, clone = workflow_fixtures(GRID, "complete")


def _replans(clone, change) -> tuple[set[str], dict[str, int]]:
    """(the runs whose phases a changed config replans, its job stats)."""
    cfg = grid()
    change(cfg)
    plan = clone.dry_run(cfg)
    return {d.removeprefix("results/synthetic/").removesuffix("/p2/seed1993") for d in run_dirs(plan.outputs())}, \
        plan.stats


def test_phase0_selection_and_evaluation_are_shared(complete):
    text = (complete / "complete_run.out").read_text()
    stats = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", text, re.M)}
    # 6 runs, 2 base models; after the base phase 3 selections and evaluations instead of 6
    assert (stats["train_base"], stats["select_base_exemplars"], stats["evaluate_base"]) == (2, 3, 3), stats
    assert (stats["train_phase"], stats["select_exemplars"], stats["evaluate_phase"]) == (12, 12, 12), stats
    work = complete / "work"
    assert sorted(p.relative_to(work / BASE).as_posix() for p in (work / BASE).rglob("*.json")) == [
        "cosine-resnet8/seed1993/herding4/metrics.json", "linear-resnet8/seed1993/herding4/metrics.json",
        "linear-resnet8/seed1993/none/metrics.json"]


def test_margin_replans_only_the_runs_with_margin_ranking(clone):
    runs, stats = _replans(clone, lambda c: c["datasets"]["synthetic"]["settings"].update(margin=0.3))
    assert runs == {"lucir/default"}, runs                  # not cn_lc, iCaRL, LwF, finetuning or joint training
    assert {r: stats.get(r) for r in ("train_phase", "select_exemplars", "evaluate_phase", "summarize_run")} == \
        {"train_phase": 2, "select_exemplars": 2, "evaluate_phase": 2, "summarize_run": 1}, stats
    assert not {"train_base", "select_base_exemplars", "evaluate_base"} & set(stats), stats


def test_kd_temperature_replans_only_icarl_and_lwf(clone):
    runs, stats = _replans(clone, lambda c: c["datasets"]["synthetic"]["settings"].update(kd_T=3.0))
    assert runs == {"icarl/default", "lwf/default"}, runs
    assert (stats["train_phase"], stats["summarize_run"]) == (4, 2), stats
    assert not {"train_base", "select_base_exemplars", "evaluate_base"} & set(stats), stats


@pytest.mark.parametrize("where", ["dataset", "top level"])
def test_execution_settings_replan_nothing(clone, where):
    change = {"checkpoint_every": 1, "checkpoint_minutes": 2.5, "eval_batch_size": 7, "channels_last": False,
              "compile": False, "device": "cpu", "deterministic": True}
    cfg = grid()
    if where == "dataset":
        cfg["datasets"]["synthetic"]["settings"].update({k: v for k, v in change.items() if k not in (
            "device", "deterministic")})
    else:
        cfg.update(change)
    plan = clone.dry_run(cfg)
    assert plan.nothing_to_do, plan.stats


# the figures that draw runs of this grid and so read the claims table for their verdicts (Holm's family is the
# whole table: ucir.report.claims); plot_memory and plot_adaptive_weight draw none here and read nothing
READS_CLAIMS = {"plot_accuracy", "plot_components", "plot_weight_norms", "plot_confusion"}


def test_editing_one_experiment_reruns_no_other_run_only_the_table_and_its_readers(clone):
    runs, stats = _replans(clone, lambda c: c["experiments"]["components"].update(grid={"lambda_base": [5.0, 2.0]}))
    assert runs == {"lucir/default_lambda_base2.0", "lucir/cn_lc_lambda_base2.0"}, runs      # the new runs only
    assert {r for r in stats if r.startswith("plot_")} == READS_CLAIMS, stats
    assert stats["aggregate"] == 1, stats
    runs, stats = _replans(clone, lambda c: c["experiments"]["main"].update(methods=["lucir", "icarl", "lwf",
                                                                                      "finetune"]))
    assert runs == set(), runs                             # joint training dropped: nothing to compute
    # exactly the table and the figures that read it: no training, selection or evaluation
    assert {r: n for r, n in stats.items() if r != "all"} == {"aggregate": 1, **dict.fromkeys(READS_CLAIMS, 1)}, \
        stats


def test_quoted_grid_values_are_refused_naming_the_key(tmp_path):
    for key, values, shown in (("nme_flip", [True, "no"], "'no'"), ("per_class", [4, "ten"], "'ten'")):
        cfg = grid()
        cfg["experiments"]["main"]["grid"] = {key: values}
        proc = snakemake(tmp_path, write_config(tmp_path / "bad.yaml", cfg), "--dry-run")
        assert proc.returncode != 0
        assert f"experiments.main.grid.{key}: {shown} is not allowed" in proc.stdout, tail(proc)
        assert not (tmp_path / "results").exists()


def test_command_line_config_applies_on_top_of_the_config_file(tmp_path):
    write_config(tmp_path / "config.yaml", grid())          # the Snakefile's default config file, in the workdir
    # no --configfile: config.yaml is read, and the override applies on top (it used to replace the whole config)
    plan = dry_run(tmp_path, None, "--config", "device=cpu", "checkpoint_every=2")
    assert plan.stats["summarize_run"] == len(RUNS), plan.stats
    for configfile in (None, tmp_path / "config.yaml"):     # on top of the default and of a given --configfile
        proc = snakemake(tmp_path, configfile, "--dry-run", "--config", "device=gpu")
        assert proc.returncode != 0 and "device: 'gpu' is not allowed" in proc.stdout, tail(proc)
