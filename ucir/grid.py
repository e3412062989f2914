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
from .config import BACKBONES, ENUMS, HEADS, SELECTIONS, ConfigError, RunConfig, resolve

DATASET_KEYS = ("source", "num_classes", "base_classes")          # what a run reads of its dataset's entry
# Where a base model and a run live, under results/ (and likewise under logs/ and benchmarks/): the workflow's rules
# and ucir.tools.targets format these.
BASE_DIR = "{dataset}/base/{base}/seed{seed}"
RUN_DIR = "{dataset}/{method}/{variant}/p{phases}/seed{seed}"
DOWNLOADABLE = ("cifar100",)
PRECISION_DEFAULT = RunConfig().precision                         # fp32: no suffix


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

    @property
    def path(self) -> str:
        """The run's folder under results/ (logs/, benchmarks/)."""
        return RUN_DIR.format(**self.identity())


# ---- names of shared jobs -------------------------------------------------------------------------------------

def base_name(cfg: RunConfig) -> str:
    """A base model: head and backbone, plus the ReLU choice where it is not the head's usual one and the training
    training precision where it is not the default fp32 (-tf32, -bf16)."""
    name = f"{cfg.head}-{cfg.backbone}"
    if cfg.last_relu != (cfg.head != "cosine"):
        name += "-relu" if cfg.last_relu else "-norelu"
    if cfg.precision != PRECISION_DEFAULT:
        name += f"-{cfg.precision}"
    return name


def memory_name(cfg: RunConfig) -> str:
    """The exemplars kept after the base phase: `herding20`, `random5`, or `none`."""
    m = deps.exemplars_per_class(cfg, 0)
    return f"{cfg.selection}{m}" if m else "none"


EVALUATIONS = {"horizontal": "metrics", "none": "metrics_noflip", "channels": "metrics_channels"}   # by nme_flip


def evaluation_name(cfg: RunConfig) -> str:
    """The evaluation after the base phase: `metrics` (NME with horizontally flipped exemplars, or no exemplars),
    `metrics_noflip` (NME without a second view) or `metrics_channels` (the official code's channel reversal)."""
    return EVALUATIONS[cfg.nme_flip] if deps.exemplars_per_class(cfg, 0) else "metrics"


# regular expressions of the names above (the workflow's wildcard constraints)
BASE_PATTERN = (f"({'|'.join(HEADS)})-({'|'.join(BACKBONES)})(-relu|-norelu)?"
                f"(-{'|-'.join(p for p in ENUMS['precision'] if p != PRECISION_DEFAULT)})?")
MEMORY_PATTERN = f"none|({'|'.join(SELECTIONS)})[0-9]+"
EVALUATION_PATTERN = "|".join(EVALUATIONS.values())


# ---- execution settings ---------------------------------------------------------------------------------------

def execution_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """How the jobs of `dataset` run (ucir.deps.EXECUTION): the top level of the config, then the dataset's own
    entries. The one route of these settings to a job (workflow/scripts/stage_job.py): never in a run's settings
    (Run.cfg) nor in a job's params, so changing one reruns nothing."""
    ds = config["datasets"][dataset]
    out = {k: config[k] for k in deps.EXECUTION if k in config}
    out.update({k: ds[k] for k in ("root", "download") if k in ds})
    out.update({k: v for k, v in (ds.get("settings") or {}).items() if k in deps.EXECUTION})
    return out


def check_execution(config: dict[str, Any], dataset: str) -> None:
    """The execution settings of `dataset`'s jobs get RunConfig's checks (ranges) like every other setting."""
    try:
        RunConfig.from_dict(execution_settings(config, dataset))
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"datasets.{dataset} (execution settings): {e}") from None


def _refuse_execution(where: str, keys) -> None:
    bad = sorted(set(keys) & set(deps.EXECUTION))
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} changes how jobs run, not what they compute (an execution "
                          "setting); set it at the top level of the config or under datasets.<name>.settings")


def check_downloads(config: dict[str, Any]) -> None:
    """Only CIFAR-100 may be downloaded (by the first job that reads it)."""
    for name, ds in config["datasets"].items():
        if ds.get("download", False) and ds["source"] not in DOWNLOADABLE:
            raise ConfigError(f"datasets.{name}.download: true is not allowed for source {ds['source']!r}; "
                              f"only {', '.join(DOWNLOADABLE)} can be downloaded")


def check_data(config: dict[str, Any], runs, dry_run: bool = False) -> list[str]:
    """The files of every dataset the runs read, checked cheaply (ucir.data.check) before any job: a ConfigError
    naming the dataset, the folder or file and what is wrong. Returns notes on the data left unchecked: a dataset
    to be downloaded by its first job, or, in a dry run, one whose root folder does not exist on this machine (a
    login node, a laptop); a real run without the data is refused. (Whether a download is allowed is checked with
    the configuration, check_downloads.)"""
    notes, problems = [], []
    for name in sorted({r.dataset for r in runs}):
        ds = config["datasets"][name]
        if ds["source"] == "synthetic":
            continue
        root, where = ds.get("root"), f"datasets.{name}"
        if not root or not os.path.isdir(root):
            if ds.get("download", False):
                notes.append(f"{where}: data not checked: {root!r} will be downloaded by the first job")
            elif dry_run:
                notes.append(f"{where}: data not checked: folder {root!r} does not exist on this machine (a dry "
                             "run plans without the data; a real run needs them)")
            else:
                hint = " or set download: true" if ds["source"] in DOWNLOADABLE else ""
                problems.append(f"{where}.root: folder {root!r} does not exist (source {ds['source']}); point root "
                                f"at the data{hint} (README: Running experiments)")
            continue
        from .data.check import data_problems          # numpy (no torch): only for real data
        # the images per class the runs keep: the same in all runs of a dataset (their base model is shared)
        cfg = next(r.cfg for r in runs if r.dataset == name)
        problems += [f"{where} ({ds['source']} in {root}): {p}" for p in data_problems(
            ds["source"], root, ds["num_classes"], cfg.train_per_class, cfg.test_per_class, ds.get("download", False))]
    if problems:
        raise ConfigError("the data cannot be used: " + "; ".join(problems))
    return notes


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
    for exp_name, exp in config["experiments"].items():
        grid = exp.get("grid") or {}
        _refuse_execution(f"experiments.{exp_name}.grid", grid)
        for ds_name in exp["datasets"]:
            if ds_name not in config["datasets"]:
                raise ConfigError(f"experiments.{exp_name}.datasets: unknown dataset {ds_name!r}")
            ds = config["datasets"][ds_name]
            check_execution(config, ds_name)
            settings = {k: v for k, v in (ds.get("settings") or {}).items() if k not in deps.EXECUTION}
            common = dict({k: ds[k] for k in DATASET_KEYS}, **settings, dataset=ds_name)
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
