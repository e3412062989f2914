"""What each stage's output depends on: the one place that decides every job's params.

Snakemake reruns a job when its params change, so a job's params hold exactly the settings its output depends on:
a setting a stage does not read must not rerun it. RULES says, for every RunConfig field, which stages read it and
when; `stage_settings` applies them to one job; `rerun_table` prints them for the README (tests/test_deps.py checks
the README's table against it, and checks the rules against what every stage really reads).

Three kinds of fields are in no job's params:
- EXECUTION: how a job runs, not what it computes. They reach the job apart from its params (grid.execution_settings).
- STRUCTURAL: which jobs exist (cbf adds a finetune job after every phase and feeds its model to the next phase).
- MEMORY_SIZE (per_class, total): the stages that keep or read the memory get the number of exemplars per class it
  holds after their phase instead (EXEMPLARS, `exemplars_per_class`), so R_per = 20 and a fixed total that gives 20
  per class are the same selection.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import RunConfig
from .pipeline import STAGES

INCREMENTAL = ("train_phase", "finetune_balanced")           # the stages that train against the previous model
# Where the data lie, the device and its kernels, the memory format, how often a resumable state is saved and how
# many images an inference batch holds: they change rounding at most, never what is computed.
EXECUTION = ("root", "download", "device", "deterministic", "channels_last", "compile", "eval_batch_size",
             "checkpoint_every", "checkpoint_minutes", "workers", "tensorboard")
STRUCTURAL = ("cbf",)
MEMORY_SIZE = ("per_class", "total")
MEMORY_STAGES = ("select_exemplars", "evaluate_phase")              # the stages that keep or read the memory
EXEMPLARS = "exemplars_per_class"                                    # their param: the memory's size after the phase


@dataclass(frozen=True)
class Rule:
    keys: tuple[str, ...]
    stages: tuple[str, ...]
    when: Callable[[RunConfig, int], bool] = lambda cfg, phase: True
    condition: str = ""            # `when`, in the README's words
    implied: bool = False          # also fixed by the stage's inputs or output path: listed, never the only cause

    def applies(self, stage: str, cfg: RunConfig, phase: int) -> bool:
        return stage in self.stages and self.when(cfg, phase)


def exemplars_per_class(cfg: RunConfig, phase: int) -> int:
    """Exemplars kept per class after `phase` (Sec. 4.1: R_per, or R_total spread over the classes seen)."""
    return cfg.memory_per_class(cfg.classes_seen(phase))


def _uses_lambda(cfg: RunConfig, phase: int) -> bool:
    return cfg.distill == "feature" or (cfg.distill == "cosine_scores" and cfg.cs_loss == "l1")


RULES = (
    Rule(("dataset",), STAGES, implied=True),
    Rule(("source", "num_classes", "base_classes", "seed", "train_per_class"), STAGES),
    Rule(("backbone", "head", "last_relu"), ("train_base", *INCREMENTAL)),
    Rule(("backbone", "head", "last_relu"), MEMORY_STAGES, implied=True),      # the model they read
    Rule(("phases",), STAGES[1:], lambda cfg, phase: phase > 0, "after the base phase"),
    Rule(("test_per_class",), ("evaluate_phase",)),
    Rule(("base_train",), ("train_base",)),
    Rule(("train",), ("train_phase",)),
    Rule(("method",), ("train_phase",), implied=True),                           # the run's folder
    Rule(("cbf_train",), ("finetune_balanced",)),
    Rule(("precision",), ("train_base", *INCREMENTAL)),
    Rule(("distill", "margin_ranking"), INCREMENTAL),
    Rule(("lambda_base", "lambda_rule"), INCREMENTAL, _uses_lambda,
         "with the adaptive weight: distill: feature, or cosine_scores with cs_loss: l1"),
    Rule(("cs_loss",), INCREMENTAL, lambda cfg, phase: cfg.distill == "cosine_scores", "with distill: cosine_scores"),
    Rule(("cs_weight",), INCREMENTAL, lambda cfg, phase: cfg.distill == "cosine_scores" and cfg.cs_loss == "official",
         "with distill: cosine_scores, cs_loss: official"),
    Rule(("kd_T", "kd_weight"), INCREMENTAL, lambda cfg, phase: cfg.distill == "kd", "with distill: kd"),
    Rule(("K", "margin", "mr_reduction", "mr_weight"), INCREMENTAL, lambda cfg, phase: cfg.margin_ranking,
         "with margin_ranking: true"),
    Rule(("freeze_old", "imprint"), ("train_phase",), lambda cfg, phase: cfg.head == "cosine",
         "with head: cosine"),
    Rule(("selection",), ("select_exemplars",), lambda cfg, phase: exemplars_per_class(cfg, phase) > 0,
         "where exemplars are kept"),
    Rule(("nme_flip",), ("evaluate_phase",), lambda cfg, phase: exemplars_per_class(cfg, phase) > 0,
         "where exemplars are kept"),
)


def _plain(value: Any) -> Any:
    """Builtins only: Snakemake's params trigger compares repr() and ignores other types."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def stage_settings(stage: str, cfg: RunConfig, phase: int) -> dict[str, Any]:
    """The settings the output of `stage` after `phase` depends on (a job's params), keys sorted: RunConfig
    fields, and for the stages that keep or read the memory the number of exemplars per class (EXEMPLARS)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    out = {k: _plain(getattr(cfg, k)) for r in RULES if r.applies(stage, cfg, phase) for k in r.keys}
    if stage in MEMORY_STAGES:
        out[EXEMPLARS] = exemplars_per_class(cfg, phase)
    return dict(sorted(out.items()))


def run_stages(cfg: RunConfig) -> list[tuple[str, int]]:
    """Every (stage, phase) job of one run, in the order they run."""
    jobs = [("train_base", 0), ("select_exemplars", 0), ("evaluate_phase", 0)]
    for k in range(1, cfg.phases + 1):
        jobs += [("train_phase", k), ("select_exemplars", k)]
        if cfg.cbf:
            jobs.append(("finetune_balanced", k))
        jobs.append(("evaluate_phase", k))
    return jobs


def run_dependencies(cfg: RunConfig) -> dict[str, Any]:
    """Everything a run computes: two settings with the same dependencies are the same run."""
    return {f"{stage}/{k}": stage_settings(stage, cfg, k) for stage, k in run_stages(cfg)}


def run_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings a run's results depend on, as the configuration states them (per_class or total, not the
    per-phase counts): what its summary records."""
    keys = {k for s in run_dependencies(cfg).values() for k in s} - {EXEMPLARS}
    keys |= {"method", *STRUCTURAL, "total" if cfg.total is not None else "per_class"}
    return {k: _plain(getattr(cfg, k)) for k in sorted(keys)}


def rerun_table() -> str:
    """The README's table "What reruns when you change X", from RULES (markdown)."""
    def names(keys):
        return ", ".join(f"`{k}`" for k in keys)

    def stages(r: Rule) -> str:
        text = ", ".join(r.stages)
        return f"{text} ({r.condition})" if r.condition else text

    rows = [(names(r.keys), stages(r)) for r in RULES if not r.implied]
    rows.append((names(MEMORY_SIZE), "select_exemplars after each phase whose number of exemplars per class it changes"))
    rows.append((names(STRUCTURAL), "adds finetune_balanced after every phase; the next phase starts from its model"))
    rows.append((names(EXECUTION), "nothing (execution settings: passed to every job, in no job's params)"))
    lines = ["| setting | reruns (and every job that uses their outputs) |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)
