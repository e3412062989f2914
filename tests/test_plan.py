"""`python -m ucir.tools.plan` (make plan): its image-pass counts against a count worked by hand, its job counts against
a real `snakemake --dry-run` of the same configuration, its rates against the outputs it reads."""
from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml

from smk import REPO, dry_run, write_config
from ucir.tools import plan
from ucir.config import SOURCES
from ucir.grid import expand_runs
from ucir.report import EXPERIMENT_PLOTS, FIGURES

N_TRAIN, N_TEST = 10, 4          # images per class
B, STEP, P, M = 2, 2, 2, 3       # base classes, classes per phase, phases, exemplars per class
E_BASE, E_TRAIN, E_CBF = 2, 3, 1
SYNTHETIC = dict(source="synthetic", num_classes=6, base_classes=B,
                 settings=dict(train_per_class=N_TRAIN, test_per_class=N_TEST, backbone="resnet8", per_class=M,
                               base_train=dict(epochs=E_BASE, milestones=[], batch_size=8),
                               train=dict(epochs=E_TRAIN, milestones=[], batch_size=8),
                               cbf_train=dict(epochs=E_CBF, milestones=[], batch_size=8)))
CONFIG = {
    "seeds": [1993],
    "datasets": {"synthetic": SYNTHETIC},
    "variants": {"cbf": {"cbf": True}},
    "experiments": {
        "main": dict(datasets=["synthetic"], methods=["lucir", "icarl", "lwf", "joint"], phases=[P],
                     plot=EXPERIMENT_PLOTS[0]),
        "cbf": dict(datasets=["synthetic"], methods=["lucir"], variants=["cbf"], phases=[P], plot="none"),
        "ablation": dict(datasets=["synthetic"], methods=["lucir"], phases=[P], plot="none",
                         grid={"selection": ["random"], "nme_flip": [False]}),
    },
}


def seen(k: int) -> int:
    return B + k * STEP


def hand_count() -> tuple[Counter, Counter]:
    """(jobs per rule, image passes per kind) of CONFIG, from the protocol, one explicit loop per run.

    Runs: lucir, icarl, lwf, joint (main), lucir+cbf, lucir random/no-flip: 6. Shared after the base phase:
    base models cosine (the three LUCIR runs) and linear; memories (cosine, herding3), (cosine, random3),
    (linear, herding3) for iCaRL, (linear, none) for LwF and joint; evaluations: one per memory, the random
    one without flipped exemplars."""
    runs = [  # method, keeps exemplars, cbf, herding, nme_flip
        ("lucir", True, False, True, True), ("icarl", True, False, True, True), ("lwf", False, False, True, True),
        ("joint", False, False, True, True), ("lucir", True, True, True, True), ("lucir", True, False, False, False)]
    jobs, passes = Counter(), Counter()
    # shared base phase: 2 base models, 4 selections, 4 evaluations
    jobs.update(train_base=2, select_base_exemplars=4, evaluate_base=4)
    passes["train_base"] += 2 * E_BASE * B * N_TRAIN
    passes["herding"] += 2 * B * N_TRAIN                    # (cosine, herding3), (linear, herding3); random: none
    passes["test"] += 4 * B * N_TEST
    passes["nme"] += 2 * (B * M) * 2 + (B * M) * 1         # two flipped herding memories, the random one unflipped
    for method, keeps, cbf, herding, flip in runs:
        memory = {k: seen(k) * M if keeps else 0 for k in range(P + 1)}
        for k in range(1, P + 1):
            new = STEP * N_TRAIN
            jobs.update(train_phase=1, select_exemplars=1, evaluate_phase=1)
            data = seen(k) * N_TRAIN if method == "joint" else new + memory[k - 1]
            passes["train_phase"] += E_TRAIN * data
            passes["imprint"] += new if method == "lucir" else 0
            passes["herding"] += new if keeps and herding else 0
            passes["test"] += seen(k) * N_TEST
            passes["nme"] += memory[k] * (2 if flip else 1)
            if cbf:
                jobs["finetune_balanced"] += 1
                passes["finetune_balanced"] += E_CBF * memory[k]
        jobs["summarize_run"] += 1
    jobs.update(aggregate=1, all=1, **{f"plot_{f}": 1 for f in FIGURES})
    return jobs, passes


def test_image_passes_and_jobs_match_a_count_by_hand():
    p = plan.plan_config(copy.deepcopy(CONFIG))["total"]
    jobs, passes = hand_count()
    assert p.runs == 6
    assert dict(p.jobs) == dict(jobs)
    assert {k: v for k, v in p.passes.items() if v} == {k: v for k, v in passes.items() if v}


def test_one_lucir_run_worked_by_hand():
    """LUCIR, B2 + 2 phases of 2, 10 images per class, 3 exemplars per class, 3 epochs per phase."""
    p = plan.plan_config({**CONFIG, "experiments": {"main": {**CONFIG["experiments"]["main"],
                                                             "methods": ["lucir"]}}})["main"]
    assert p.passes["train_base"] == 2 * 20                       # 2 epochs x 20 base images
    assert p.passes["train_phase"] == 3 * (20 + 6) + 3 * (20 + 12)  # new images + exemplars of 2, then 4 classes
    assert p.passes["imprint"] == 20 + 20
    assert p.passes["herding"] == 20 + 20 + 20                    # base classes, then each phase's new ones
    assert p.passes["test"] == 8 + 16 + 24
    assert p.passes["nme"] == 2 * (6 + 12 + 18)                   # exemplars and their flipped copies
    assert p.jobs["finetune_balanced"] == 0 and p.runs == 1


def test_experiment_columns_count_shared_jobs_once():
    plans = plan.plan_config(copy.deepcopy(CONFIG))
    assert plans["cbf"].jobs["train_base"] == 1 and plans["ablation"].jobs["train_base"] == 1
    assert plans["main"].jobs["train_base"] == 2                  # cosine (LUCIR) and linear (the others)
    assert plans["total"].jobs["train_base"] == 2                  # not 4: shared by the experiments
    assert plans["main"].jobs["aggregate"] == 0 and plans["total"].jobs["aggregate"] == 1


def test_real_data_counts_are_capped_by_the_settings():
    cifar = plan.images_per_class(expand_runs({**CONFIG, "datasets": {"synthetic": {
        **SYNTHETIC, "source": "cifar100", "num_classes": 100, "base_classes": 50,
        "settings": {**SYNTHETIC["settings"], "train_per_class": None, "test_per_class": 50}}}})[0].cfg)
    assert cifar == (500, 50)
    assert set(plan.IMAGES_PER_CLASS) == set(SOURCES)


@pytest.mark.workflow
def test_jobs_are_what_snakemake_plans(tmp_path):
    """The same configuration, with a second dataset (its own tables and figures), an ImageNet-Subset one (its
    class list) and a CIFAR-100 one (its prepared arrays): jobs per rule from the plan and from a real dry run."""
    cfg = copy.deepcopy(CONFIG)
    root = tmp_path / "imagenet"                   # absent: a dry run plans without the data (issue 24)
    cfg["datasets"]["other"] = copy.deepcopy(SYNTHETIC)
    cfg["datasets"]["subset"] = dict(source="imagenet_subset", root=str(root), num_classes=6, base_classes=2,
                                     settings=dict(backbone="resnet18", per_class=2))
    cfg["datasets"]["cifar"] = dict(source="cifar100", root=str(tmp_path / "cifar"), num_classes=100,
                                    base_classes=50)
    cfg["experiments"]["other"] = dict(datasets=["other", "subset", "cifar"], methods=["lucir", "icarl"],
                                       phases=[1, 2], plot=EXPERIMENT_PLOTS[0])
    run = dry_run(tmp_path, write_config(tmp_path / "config.yaml", cfg))
    assert dict(plan.plan_config(cfg)["total"].jobs) == run.stats
    assert run.stats["prepare_data"] == 1


@pytest.mark.workflow
def test_slurm_allocations_are_the_group_jobs_snakemake_plans(tmp_path):
    """With workflow/profiles/slurm, a dry run lists one "Group job" per phase of a run and per memory after a base
    phase, and the other jobs (train_base, tables, figures) alone; `all` runs on the submitting host."""
    import re

    pytest.importorskip("snakemake_executor_plugin_slurm")
    from smk import snakemake
    proc = snakemake(tmp_path, write_config(tmp_path / "config.yaml", CONFIG), "--dry-run", "--profile",
                     str(REPO / "workflow" / "profiles" / "slurm"), "--slurm-status-command", "squeue")
    assert proc.returncode == 0, proc.stdout[-3000:]
    groups = re.findall(r"\] Group job (\S+) ", proc.stdout)
    alone = [r for r in re.findall(r"^rule (\w+):$", proc.stdout, re.M) if r != "all"]
    p = plan.plan_config(copy.deepcopy(CONFIG))["total"]
    assert len(groups) == p.jobs["train_phase"] + p.jobs["select_base_exemplars"], groups
    assert len(groups) + len(alone) == p.allocations < sum(p.jobs.values()) - 1


def test_make_plan_on_the_paper_grid_agrees_with_its_dry_run_counts():
    """config.yaml's counts (README: What a grid costs), recomputed; `make dryrun-paper` prints the same."""
    p = plan.plan_config(plan.load_config([str(REPO / "config.yaml")]))["total"]
    assert p.runs == 138 and sum(p.jobs.values()) == 2721
    assert p.allocations < sum(p.jobs.values()) / 3


def test_rates_from_a_saved_bench_output(tmp_path):
    out = ("device cuda (NVIDIA H100 80GB HBM3), 1 threads, 50000 images/round, batch 128, ResNet-32, LUCIR ...\n"
           "ucir  images/s: min 9000.0  median 10000.0  max 11000.0\n"
           "naive images/s: min 2000.0  median 2500.0  max 2600.0\nratio: 4.00\n")
    r = plan.rates_from_bench(out, "bench.txt")
    assert (r.train, r.inference) == (10000.0, 10000.0 * plan.INFERENCE_SPEEDUP)
    assert "bench.txt" in r.source and "NVIDIA H100" in r.source and "assumed" in r.source
    r = plan.rates_from_bench(out + "inference images/s: min 1.0  median 40000.0  max 5.0\n", "b")
    assert r.inference == 40000.0 and "assumed" not in r.source
    with pytest.raises(ValueError, match="ucir images/s"):
        plan.rates_from_bench("nothing here", "b")
    p = plan.Plan(passes=Counter(train_phase=36e6, test=3 * 36e6))
    assert plan.device_hours(p, plan.Rates(10000.0, 30000.0, "")) == (1.0, 1.0)


def test_config_files_and_overrides_merge_as_in_snakemake(tmp_path):
    a = write_config(tmp_path / "a.yaml", {"seeds": [1], "datasets": {"d": {"source": "synthetic", "x": 1}}})
    b = write_config(tmp_path / "b.yaml", {"datasets": {"d": {"x": 2}}})
    cfg = plan.load_config([str(a), str(b)], ["device=cuda", "seeds=[3, 4]"])
    assert cfg == {"seeds": [3, 4], "datasets": {"d": {"source": "synthetic", "x": 2}}, "device": "cuda"}


def test_main_prints_jobs_passes_and_hours(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", CONFIG)
    assert plan.main(["--configfile", str(cfg), "--throughput", "100"]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "device-hours at 100 training / 300 inference images/s" in out
    assert "train_phase" in out and "inference herding" in out
    bad = write_config(tmp_path / "bad.yaml", {**CONFIG, "seeds": "x"})
    assert plan.main(["--configfile", str(bad)]) == 1
    assert "seeds" in capsys.readouterr().err


def test_no_torch_needed():
    """The plan reads no data and imports no torch (seconds, on any machine)."""
    import subprocess
    import sys
    code = "import sys, ucir.tools.plan; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(REPO)).returncode == 0


def test_the_plan_says_how_many_cpus_a_folder_dataset_needs_per_gpu():
    assert plan.cpus_per_gpu(plan.Rates(2000.0, 6000.0, "given")).endswith(
        "9 CPUs per GPU at 2,000 images/s (the profile's set-threads)")           # 2000 / 250 + 1
    assert "give --throughput or --bench" in plan.cpus_per_gpu(None)
    config = yaml.safe_load((REPO / "configs" / "imagenet_subset.yaml").read_text())
    runs = plan.check(config)
    text = plan.report(config, runs, plan.plan_config(config, runs), plan.Rates(1000.0, 3000.0, "given"), "x")
    assert "5 CPUs per GPU at 1,000 images/s" in text


def test_the_plan_prices_the_precision_the_configuration_trains_in(tmp_path, capsys):
    """Issue 23 (3): a rate measured in another precision than the configuration's is refused; one that does not
    say its precision, or a configuration of several, gets a note."""
    bench = ("device cuda (NVIDIA H100 80GB HBM3), 1 threads, 2000 images/round, batch 128, ResNet-32, LUCIR ...\n"
             "precision: {} (ucir's loop; the naive loop is fp32 as the official code)\n"
             "ucir  images/s: min 9000.0  median 10000.0  max 11000.0\n")
    for precision in ("fp32", "bf16"):
        (tmp_path / f"{precision}.txt").write_text(bench.format(precision))
    assert plan.rates_from_bench(bench.format("bf16"), "b").precision == "bf16"
    assert "precision bf16" in plan.rates_from_bench(bench.format("bf16"), "b").source
    cfg = write_config(tmp_path / "c.yaml", CONFIG)                                  # trains in fp32
    assert plan.main(["--configfile", str(cfg), "--bench", str(tmp_path / "bf16.txt")]) == 1
    err = capsys.readouterr().err
    assert "measured in precision bf16" in err and "trains in fp32" in err and "PRECISION=fp32" in err
    assert plan.main(["--configfile", str(cfg), "--bench", str(tmp_path / "fp32.txt")]) == 0
    out = capsys.readouterr().out
    assert "precision fp32" in out and "training precision" not in out and "priced at" not in out
    assert plan.main(["--configfile", str(cfg), "--throughput", "100"]) == 0
    assert "the rate does not say its training precision; the configuration trains in fp32" in capsys.readouterr().out
    both = copy.deepcopy(CONFIG)
    both["experiments"]["main"]["grid"] = {"precision": ["fp32", "bf16"]}
    cfg = write_config(tmp_path / "both.yaml", both)
    assert plan.main(["--configfile", str(cfg), "--bench", str(tmp_path / "bf16.txt")]) == 0
    assert "trains in bf16, fp32; every training pass is priced at the bf16 rate" in capsys.readouterr().out
