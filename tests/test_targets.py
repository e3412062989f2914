"""ucir.tools.targets: the run summaries one sitting of a long study asks Snakemake for (make fmnist-main,
fmnist-ablations, fmnist-2x ORDERS=...)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smk import dry_run, run_dirs
from ucir.config import ConfigError
from ucir.tools import targets
from ucir.tools.records import run_records
from ucir.tools.plan import check, load_config

REPO = Path(__file__).resolve().parents[1]
FMNIST = str(REPO / "configs" / "fashion_mnist.yaml")
DEMO = REPO / "configs" / "demo.yaml"


def paths(*argv: str, capsys) -> list[str]:
    assert targets.main(list(argv)) == 0
    return capsys.readouterr().out.split()


def test_the_main_comparison_of_the_fashion_mnist_study_is_ten_orders_of_three_methods(capsys):
    out = paths("--configfile", FMNIST, "--experiments", "main", capsys=capsys)
    expected = {f"results/fashion_mnist/{m}/default/p5/seed{s}/summary.json"
                for m in ("lucir", "icarl", "finetune") for s in range(1993, 2003)}
    assert len(out) == 30 and set(out) == expected


def test_seeds_take_single_orders_and_inclusive_ranges(capsys):
    out = paths("--configfile", FMNIST, "--experiments", "memory", "--seeds", "1993-1994", "1997", capsys=capsys)
    runs = [r for r in check(load_config([FMNIST])) if "memory" in r.experiments]
    variants = {r.variant for r in runs}
    assert len(variants) == 3                                    # R_per 5, 20 (the default runs), 50
    assert set(out) == {f"results/{r.path}/summary.json" for r in runs if r.seed in (1993, 1994, 1997)}
    assert len(out) == 2 * 3 * 3                                 # LUCIR and iCaRL x 3 R_per x 3 orders


def test_without_options_every_run_of_the_configuration(capsys):
    out = paths("--configfile", FMNIST, capsys=capsys)
    assert len(out) == len(check(load_config([FMNIST]))) == 70


@pytest.mark.parametrize("argv, says", [
    (["--experiments", "mian"], "--experiments 'mian': no such experiment in the configuration (it has: "
                                "adaptive_weight, components, main, memory)"),
    (["--experiments", "memory", "--seeds", "2001"], "--seeds: no run of memory has the class order 2001"),
    (["--seeds", "1997-1993"], "--seeds '1997-1993': the range is empty"),
    (["--seeds", "first"], "--seeds 'first': expected a seed or FIRST-LAST"),
])
def test_a_selection_that_selects_nothing_names_what_was_asked(argv, says, capsys):
    assert targets.main(["--configfile", FMNIST, *argv]) == 1
    assert says in capsys.readouterr().err


def test_an_experiment_shares_the_runs_of_another():
    """The ablations' LUCIR runs at R_per 20 are the main comparison's: one run, listed under both."""
    runs = check(load_config([FMNIST]))
    main = {r.key for r in targets.select(runs, ["main"], set())}
    memory = {r.key for r in targets.select(runs, ["memory"], set())}
    assert ("fashion_mnist", "lucir", "default", 5, 1993) in main & memory
    with pytest.raises(ConfigError, match="no run of main has the class order 1990"):
        targets.select(runs, ["main"], {1990})


@pytest.mark.workflow
def test_snakemake_given_the_targets_plans_those_runs_and_no_table(tmp_path):
    """The demo's iCaRL runs of one order: a dry run plans their phases and base model, and no table or figure."""
    proc = subprocess.run([sys.executable, "-m", "ucir.tools.targets", "--configfile", str(DEMO), "--experiments",
                           "main", "--seeds", "1994"], capture_output=True, text=True, cwd=REPO, check=True)
    wanted = proc.stdout.split()
    assert len(wanted) == 2                                      # LUCIR and iCaRL
    run = dry_run(tmp_path, DEMO, *wanted)
    assert run_dirs(run.outputs()) == {p.removesuffix("/summary.json") for p in wanted}
    assert run.stats["summarize_run"] == 2 and run.stats["train_base"] == 2      # cosine and linear heads
    assert not {"aggregate", "all"} & set(run.stats) and not any(r.startswith("plot_") for r in run.stats)


def keep(run, records: Path) -> None:
    """A run's records as ucir.tools.records save keeps them."""
    for rel in run_records(run):
        (records / "results" / rel).parent.mkdir(parents=True, exist_ok=True)
        (records / "results" / rel).write_text("{}")


def test_skip_kept_leaves_out_the_runs_whose_records_are_kept_and_says_how_many(tmp_path, capsys):
    runs = [r for r in check(load_config([FMNIST])) if "main" in r.experiments and r.seed == 1993]
    keep(runs[0], tmp_path)
    out = paths("--configfile", FMNIST, "--experiments", "main", "--seeds", "1993", "--skip-kept", str(tmp_path),
                capsys=capsys)
    assert set(out) == {f"results/{r.path}/summary.json" for r in runs[1:]} and len(out) == 2
    for run in runs[1:]:
        keep(run, tmp_path)
    assert targets.main(["--configfile", FMNIST, "--experiments", "main", "--seeds", "1993", "--skip-kept",
                         str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "3 of 3 runs have their records kept" in err


def test_a_run_missing_one_phase_record_is_not_kept(tmp_path, capsys):
    run = next(r for r in check(load_config([FMNIST])) if "main" in r.experiments)
    keep(run, tmp_path)
    (tmp_path / "results" / run.path / f"phase{run.phases}" / "metrics.json").unlink()
    out = paths("--configfile", FMNIST, "--experiments", "main", "--seeds", str(run.seed), "--skip-kept",
                str(tmp_path), capsys=capsys)
    assert f"results/{run.path}/summary.json" in out


def test_the_make_targets_run_the_sittings_the_makefile_names():
    """make -n: each sitting asks the tool for its runs not kept yet (fmnist-main the main comparison's, ablations
    Figs. 7-8's, fmnist-2x ORDERS=... those orders at twice the epochs), runs snakemake only when there are some
    (never a plain snakemake on the whole configuration), stops when the tool fails, then keeps the records."""
    def dry(*args: str) -> str:
        return subprocess.run(["make", "--no-print-directory", "-n", *args], capture_output=True, text=True,
                              cwd=REPO, check=True).stdout       # no "Entering directory" under make test either
    for args, config, selection in [
            (["fmnist-main"], "configs/fashion_mnist.yaml", "--experiments main"),
            (["fmnist-ablations"], "configs/fashion_mnist.yaml", "--experiments components memory adaptive_weight"),
            (["fmnist-2x", "ORDERS=1993-1997"], "configs/fashion_mnist_2x.yaml", "--seeds 1993-1997")]:
        recipe = " ".join(dry(*args).replace("\\\n", " ").split())
        assert f"ucir.tools.targets --configfile {config} {selection} --skip-kept docs/runs) &&" in recipe, recipe
        assert '{ test -z "$t" || .venv/bin/snakemake' in recipe and f"$t --set-threads" in recipe, recipe
        assert recipe.endswith(f"&& .venv/bin/python -m ucir.tools.records save --configfile {config}"), recipe
    assert "--seeds" not in dry("fmnist-2x")
