"""The workflow's rules: one row each, the one list of rule names outside workflow/rules/*.smk.

A row says which stage of the method the rule runs (its params are that stage's settings, ucir.deps), which script
it calls, which package code its `code` param hashes (ucir.codehash), what one of its jobs is for (`per`: a base
model, shared by every run with it; a run's phase; a run; a dataset), what it asks of the machine (GPU, threads,
memory, minutes) and which SLURM group packs it into an allocation. The rules take their threads, resources and
script from here (`threads_of`, `resources_of`, `script_of`); ucir.deps, ucir.codehash, ucir.tools.plan and
ucir.tools.startup read the table; the Snakefile stops when its rules and this table differ (`rule_mismatch`), and
tests check the SLURM profile's groups and CPUs and the Makefile's CPU threads against it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import PREPARED_SOURCES
from .report import EXPERIMENT_FIGURES, FIGURES, TABLES

# Package code each kind of job runs (paths under ucir/; a folder stands for its modules). Editing one of these
# (not its comments, docstrings or formatting) reruns the rules that hash it. What runs the network:
_NETWORK = ("config.py", "runtime.py", "io.py", "checkpoint.py", "features.py", "models", "data")
TRAIN_CODE = (*_NETWORK, "losses.py", "train")
SELECT_CODE = (*_NETWORK, "exemplars.py")
EVALUATE_CODE = (*_NETWORK, "evaluate.py", "metrics.py")
REPORT_CODE = ("report", "metrics.py", "io.py")

# SLURM groups (workflow/profiles/slurm, `groups`): the group id of each kind. A run's phase is one allocation (its
# training, selection, finetune and evaluation; the run's summary rides with its last phase, `at_last_phase`); after
# a base phase the selection and evaluation of each memory ride together.
GROUP_IDS = {"phase": "phase-{dataset}-{method}-{variant}-p{phases}-seed{seed}-k{k}",
             "base": "base-{dataset}-{base}-seed{seed}-{memory}"}


@dataclass(frozen=True)
class Rule:
    name: str
    stage: str | None             # the stage whose settings its params hold (ucir.deps.STAGES); None: a report rule
    script: str                   # workflow/scripts/<script>.py
    code: tuple[str, ...]         # what its code hash covers
    per: str = "phase"            # one job per: base (model, shared by the runs with it) | phase | run | dataset
    sources: tuple[str, ...] = ()  # only for datasets of these sources (empty: every dataset)
    gpu: bool = False             # runs the network: takes a GPU where there is one
    trains: bool = False          # trains it (the others only run it forward: no cuDNN autotuning, ucir.jobs)
    threads: int = 1
    mem_mb: int = 2000
    runtime: int = 10             # minutes
    group: str | None = None      # a key of GROUP_IDS
    at_last_phase: bool = False   # its group is the run's last phase (a per-run rule without the {k} wildcard)

    @property
    def shared(self) -> bool:
        return self.per == "base"

    @property
    def inference_only(self) -> bool:
        return self.gpu and not self.trains

    def group_id(self) -> str | None:
        if self.group is None:
            return None
        gid = GROUP_IDS[self.group]
        return gid.replace("{k}", "{phases}") if self.at_last_phase else gid


_TRAIN = dict(gpu=True, trains=True, threads=2, mem_mb=16000, runtime=720)
_INFER = dict(gpu=True, mem_mb=8000, runtime=120)
RULES: tuple[Rule, ...] = (
    Rule("train_base", "train_base", "train_base", TRAIN_CODE, per="base", **_TRAIN),
    Rule("select_base_exemplars", "select_exemplars", "select_exemplars", SELECT_CODE, per="base", group="base",
         **_INFER),
    Rule("evaluate_base", "evaluate_phase", "evaluate_phase", EVALUATE_CODE, per="base", group="base", **_INFER),
    Rule("train_phase", "train_phase", "train_phase", TRAIN_CODE, group="phase", **_TRAIN),
    Rule("select_exemplars", "select_exemplars", "select_exemplars", SELECT_CODE, group="phase", **_INFER),
    Rule("finetune_balanced", "finetune_balanced", "finetune_balanced", TRAIN_CODE, group="phase",
         **dict(_TRAIN, runtime=240)),
    Rule("evaluate_phase", "evaluate_phase", "evaluate_phase", EVALUATE_CODE, group="phase", **_INFER),
    Rule("summarize_run", None, "summarize_run", REPORT_CODE, per="run", group="phase", at_last_phase=True),
    # an in-memory dataset read once into arrays that its stage jobs memory-map (ucir.data.prepared)
    Rule("prepare_data", None, "prepare_data", ("data", "io.py"), per="dataset", sources=PREPARED_SOURCES),
    Rule("list_classes", None, "list_classes", ("data",), per="dataset", sources=("imagenet_subset",), mem_mb=1000),
    Rule("aggregate", None, "aggregate", REPORT_CODE, per="dataset"),
    # the experiment figures share one script, which draws the rule's figure; the others have their own
    *(Rule(f"plot_{f}", None, "plot_experiment" if f in EXPERIMENT_FIGURES else f"plot_{f}", REPORT_CODE,
           per="dataset") for f in FIGURES),
)
TARGET = "all"                    # the Snakefile's default target: no action, not in RULES
BY_NAME = {r.name: r for r in RULES}
# The rules that read only finished runs' records (summaries, metrics): the tables and figures of a dataset.
REPORT_RULES = tuple(r.name for r in RULES if r.per == "dataset" and r.code == REPORT_CODE)
# The training rules, in the order a run meets them; each writes its epochs to logs/.../<rule>.csv (ucir.jobs).
TRAINING_RULES = tuple(r.name for r in RULES if r.trains)
FIGURE_DIR = "results/{dataset}/figures"
BASE_RULES = {r.stage: r.name for r in RULES if r.shared}             # stage -> its rule in the base phase
RUN_RULES = {r.stage: r.name for r in RULES if r.per == "phase"}      # stage -> its rule in phases 1..P
# The method's stages, in the order a phase runs them: the base model's training, then an incremental phase's.
STAGES = (RULES[0].stage, *RUN_RULES)


def rules_per(per: str, source: str | None = None) -> list[str]:
    """The rules with one job per `per` (base, phase, run, dataset); for a dataset, those its source has."""
    return [r.name for r in RULES if r.per == per and (not r.sources or source in r.sources)]


def rule(name: str) -> Rule:
    if name not in BY_NAME:
        raise KeyError(f"unknown rule {name!r}; ucir.pipeline.RULES has {', '.join(BY_NAME)}")
    return BY_NAME[name]


def threads_of(name: str) -> int:
    return rule(name).threads


def _cpus_per_gpu(wildcards, threads) -> int:
    return threads


def resources_of(name: str) -> dict:
    """A rule's `resources:` (Snakemake's names; the SLURM plugin turns gpu into --gpus, cpus_per_gpu into
    --cpus-per-gpu, mem_mb into --mem and runtime into -t). A GPU job's CPUs are its threads, whatever sets them
    (this table, or a profile's `set-threads`: folder data need one decode worker per CPU but one)."""
    r = rule(name)
    gpu = {"gpu": 1, "cpus_per_gpu": _cpus_per_gpu} if r.gpu else {}
    return {**gpu, "mem_mb": r.mem_mb, "runtime": r.runtime}


def script_of(name: str) -> str:
    """A rule's `script:`, relative to workflow/rules/."""
    return f"../scripts/{rule(name).script}.py"


def rule_mismatch(names) -> str | None:
    """What differs between the workflow's rules (`names`) and this table, in words; None when they agree."""
    have, want = set(names), {*BY_NAME, TARGET}
    parts = []
    if have - want:
        parts.append(f"rules not in ucir.pipeline.RULES: {', '.join(sorted(have - want))}")
    if want - have:
        parts.append(f"rules in ucir.pipeline.RULES that the workflow lacks: {', '.join(sorted(want - have))}")
    return "; ".join(parts) or None


def slurm_groups() -> dict[str, str]:
    """{rule: group id}: what workflow/profiles/slurm's `groups` must say."""
    return {r.name: r.group_id() for r in RULES if r.group}


def slurm_allocations(jobs: dict[str, int]) -> int:
    """Allocations (sbatch submissions) of these jobs ({rule: count}) with the profile's groups: one per job of a
    rule without a group, one per group for the first rule of each group kind (the others ride in it), none for the
    target rule, which has no action and runs on the submitting host."""
    leaders = {next(r.name for r in RULES if r.group == kind) for kind in GROUP_IDS}
    counted = {r.name for r in RULES if r.group is None} | leaders
    return sum(n for name, n in jobs.items() if name in counted)


def table_path(dataset: str, table: str) -> str:
    """One table `aggregate` writes for a dataset (ucir.report.TABLES, as CSV; `tables`: tables.html)."""
    if table not in (*TABLES, "tables"):
        raise KeyError(f"unknown table {table!r}; ucir.report.TABLES has {', '.join(TABLES)}")
    return f"results/{dataset}/tables/{table}.{'html' if table == 'tables' else 'csv'}"


def table_outputs(dataset: str) -> list[str]:
    """The tables `aggregate` writes for a dataset (CSV each, and tables.html with all of them)."""
    return [table_path(dataset, t) for t in (*TABLES, "tables")]


def figure_outputs(dataset: str) -> list[str]:
    """The figures of a dataset, one plot_* rule each (ucir.report.FIGURES; each also writes a PDF beside it)."""
    return [f"{FIGURE_DIR.format(dataset=dataset)}/{f}.png" for f in FIGURES]
