"""From the workflow's config dict to the runs it asks for and the jobs they share (pure; common.smk calls it).

config:
    seeds: [1993, ...]                 # class orders (1993 = the official order)
    <execution setting>: value         # ucir.deps.EXECUTION: device, checkpoint_every, ... (also per dataset)
    datasets: {name: {source, root, download, num_classes, base_classes, settings: {RunConfig fields}}}
    variants: {name: {RunConfig fields}}   # ablation flag sets; 'default' is the method's preset
    experiments: {name: {datasets, methods, variants, phases, seeds?, grid: {RunConfig field: [values]}, plot}}

A run is (dataset, method, variant, phases, seed). A variant's name is its flag-set name followed by one
`_<key><value>` per grid key whose value changes what the run computes (ucir.deps.run_dependencies), so grids that
share a setting share its runs, a value a method does not read (kd_T for LUCIR) adds no run, and adding a value to
a grid adds only the new runs.

Shared jobs: the base model is keyed by `base_name` (and the seed); exemplar selection and evaluation after the base
phase by `memory_name` and `evaluation_name` beside it. Runs that name the same shared job must agree on everything
it depends on.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from . import deps
from .config import BACKBONES, HEADS, SELECTIONS, ConfigError, RunConfig, resolve

DATASET_KEYS = ("source", "root", "download", "num_classes", "base_classes")
DOWNLOADABLE = ("cifar100",)
AMP_DEFAULT = RunConfig().amp


@dataclass
class Run:
    dataset: str
    method: str
    variant: str
    phases: int
    seed: int
    cfg: RunConfig
    experiments: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.dataset, self.method, self.variant, self.phases, self.seed)

    @property
    def settings(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    @property
    def base(self) -> str:
        return base_name(self.cfg)

    @property
    def memory(self) -> str:
        return memory_name(self.cfg)

    @property
    def evaluation(self) -> str:
        return evaluation_name(self.cfg)

    def identity(self) -> dict[str, Any]:
        return dict(zip(("dataset", "method", "variant", "phases", "seed"), self.key))


# ---- names of shared jobs -------------------------------------------------------------------------------------

def base_name(cfg: RunConfig) -> str:
    """A base model: head and backbone, plus the ReLU choice where it is not the head's usual one and the training
    precision where `amp` is not the default fp32 (-bf16: amp true, -auto: amp auto)."""
    name = f"{cfg.head}-{cfg.backbone}"
    if cfg.last_relu != (cfg.head != "cosine"):
        name += "-relu" if cfg.last_relu else "-norelu"
    if cfg.amp != AMP_DEFAULT:
        name += {True: "-bf16", False: "-fp32", "auto": "-auto"}[cfg.amp]
    return name


def memory_name(cfg: RunConfig) -> str:
    """The exemplars kept after the base phase: `herding20`, `random5`, or `none`."""
    m = deps.memory(cfg, 0)
    return f"{cfg.selection}{m}" if m else "none"


EVALUATIONS = {"horizontal": "metrics", "none": "metrics_noflip", "channels": "metrics_channels"}   # by nme_flip


def evaluation_name(cfg: RunConfig) -> str:
    """The evaluation after the base phase: `metrics` (NME with horizontally flipped exemplars, or no exemplars),
    `metrics_noflip` (NME without a second view) or `metrics_channels` (the official code's channel reversal)."""
    return EVALUATIONS[cfg.nme_flip] if deps.memory(cfg, 0) else "metrics"


# regular expressions of the names above (the workflow's wildcard constraints)
BASE_PATTERN = f"({'|'.join(HEADS)})-({'|'.join(BACKBONES)})(-relu|-norelu)?(-bf16|-fp32|-auto)?"
MEMORY_PATTERN = f"none|({'|'.join(SELECTIONS)})[0-9]+"
EVALUATION_PATTERN = "|".join(EVALUATIONS.values())


# ---- execution settings ---------------------------------------------------------------------------------------

def execution_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """How the jobs of `dataset` run (ucir.deps.EXECUTION): the top level of the config, then the dataset's own
    entries. Never in a job's params, so changing one reruns nothing."""
    ds = config["datasets"][dataset]
    out = {k: config[k] for k in deps.EXECUTION if k in config}
    out.update({k: ds[k] for k in ("root", "download") if k in ds})
    out.update({k: v for k, v in (ds.get("settings") or {}).items() if k in deps.EXECUTION})
    return out


def _refuse_execution(where: str, keys) -> None:
    bad = sorted(set(keys) & set(deps.EXECUTION))
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} changes how jobs run, not what they compute (an execution "
                          "setting); set it at the top level of the config or under datasets.<name>.settings")


def check_dataset_paths(config: dict[str, Any]) -> None:
    """Every real dataset's root must exist, unless it may be downloaded (CIFAR-100 only)."""
    for name, ds in config["datasets"].items():
        if ds["source"] == "synthetic":
            continue
        if ds.get("download", False):
            if ds["source"] not in DOWNLOADABLE:
                raise ConfigError(f"datasets.{name}.download: true is not allowed for source {ds['source']!r}; "
                                  f"only {', '.join(DOWNLOADABLE)} can be downloaded")
            continue
        root = ds.get("root")
        if not root or not os.path.isdir(root):
            hint = " or set download: true" if ds["source"] in DOWNLOADABLE else ""
            raise ConfigError(f"datasets.{name}.root: folder {root!r} does not exist (source {ds['source']}); "
                              f"point root at the data{hint} (README: Running experiments)")


# ---- runs -----------------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    return str(v).replace(" ", "").replace("/", "-")


def _resolve(where: str, method: str, settings: dict[str, Any]) -> RunConfig:
    try:
        return resolve(method, settings)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def variant_name(vname: str, method: str, flags: dict[str, Any], plain: RunConfig, point: dict[str, Any],
                 cfg: RunConfig, where: str) -> str:
    """The flag set's name, then `_<key><value>` for each grid key that changes what the run computes: set back to
    the value it has without the grid (`plain`), the run would depend on other settings."""
    mine = deps.run_dependencies(cfg)
    named = [k for k in point if deps.run_dependencies(
        _resolve(where, method, {**flags, **point, k: getattr(plain, k)})) != mine]
    return vname + "".join(f"_{k}{_fmt(point[k])}" for k in named)


def expand_runs(config: dict[str, Any]) -> list[Run]:
    runs: dict[tuple, Run] = {}
    variants = config.get("variants") or {}
    for vname, flags in variants.items():
        _refuse_execution(f"variants.{vname}", flags or {})
    top = {k: config[k] for k in deps.EXECUTION if k in config}
    for exp_name, exp in config["experiments"].items():
        grid = exp.get("grid") or {}
        _refuse_execution(f"experiments.{exp_name}.grid", grid)
        for ds_name in exp["datasets"]:
            if ds_name not in config["datasets"]:
                raise ConfigError(f"experiments.{exp_name}.datasets: unknown dataset {ds_name!r}")
            ds = config["datasets"][ds_name]
            common = dict(top, **{k: ds[k] for k in DATASET_KEYS if k in ds}, **(ds.get("settings") or {}),
                          dataset=ds_name)
            for method, vname, phases, seed in itertools.product(
                    exp["methods"], exp.get("variants", ["default"]), exp["phases"],
                    exp.get("seeds", config["seeds"])):
                if vname != "default" and vname not in variants:
                    raise ConfigError(f"experiments.{exp_name}.variants: unknown variant {vname!r}")
                flags = dict(common, phases=phases, seed=seed, **(variants.get(vname) or {}))
                where = f"experiments.{exp_name} ({ds_name}, {method}, {vname}, {phases} phases)"
                plain = _resolve(where, method, flags)
                for values in itertools.product(*grid.values()):
                    point = dict(zip(grid.keys(), values))
                    at = f"{where}, grid {point}" if point else where
                    cfg = _resolve(at, method, dict(flags, **point))
                    name = variant_name(vname, method, flags, plain, point, cfg, at)
                    run = Run(ds_name, method, name, phases, seed, cfg)
                    prev = runs.setdefault(run.key, run)
                    if deps.run_dependencies(prev.cfg) != deps.run_dependencies(cfg):
                        raise ConfigError(f"{at}: run {'/'.join(map(str, run.key))} is defined twice with "
                                          "different settings")
                    if exp_name not in prev.experiments:
                        prev.experiments.append(exp_name)
    check_shared_jobs(runs.values())
    return list(runs.values())


def shared_jobs(run: Run) -> dict[tuple, dict[str, Any]]:
    """The jobs a run shares with other runs of its dataset and seed: {key: the settings the job depends on}."""
    at = (run.dataset, run.base, run.seed)
    return {("train_base", *at): deps.stage_settings("train_base", run.cfg, 0),
            ("select_exemplars", *at, run.memory): deps.stage_settings("select_exemplars", run.cfg, 0),
            ("evaluate_phase", *at, run.memory, run.evaluation): deps.stage_settings("evaluate_phase", run.cfg, 0)}


def check_shared_jobs(runs) -> None:
    """Runs that name the same shared job must agree on all it depends on (else one would overwrite the other)."""
    seen: dict[tuple, tuple[Run, dict]] = {}
    for r in runs:
        for key, settings in shared_jobs(r).items():
            first, theirs = seen.setdefault(key, (r, settings))
            if theirs != settings:
                diff = sorted(k for k in settings.keys() | theirs.keys() if settings.get(k) != theirs.get(k))
                raise ConfigError(f"runs {'/'.join(map(str, first.key))} and {'/'.join(map(str, r.key))} share "
                                  f"the {key[0]} job of {'/'.join(map(str, key[1:]))} but differ in "
                                  f"{', '.join(diff)}; give them different datasets or base settings")
