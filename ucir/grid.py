"""From the workflow's config dict to the list of runs it asks for (pure; the Snakefile calls it).

config:
    seeds: [1993, ...]                 # class orders (1993 = the official order)
    datasets: {name: {source, root, download, num_classes, base_classes, settings: {RunConfig fields}}}
    variants: {name: {RunConfig fields}}   # ablation flag sets; 'default' is the method's preset
    experiments: {name: {datasets, methods, variants, phases, seeds?, grid: {RunConfig field: [values]}, plot}}

A run is (dataset, method, variant, phases, seed). A variant's name is its flag-set name followed by one
`_<key><value>` per grid key whose value differs from the setting it would otherwise have, so grids that share a
setting share its runs, and adding a value to a grid adds only the new runs.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, RunConfig, resolve

DATASET_KEYS = ("source", "root", "download", "num_classes", "base_classes")
# what train_base depends on: all LUCIR variants that differ only in incremental settings share one base model
BASE_KEYS = ("dataset", "source", "root", "download", "num_classes", "base_classes", "seed", "train_per_class",
             "test_per_class", "backbone", "head", "last_relu", "base_train", "device", "deterministic", "amp",
             "channels_last", "compile", "eval_batch_size", "checkpoint_every")
EXECUTION = {"device", "deterministic", "amp", "channels_last", "compile", "eval_batch_size", "checkpoint_every"}


@dataclass
class Run:
    dataset: str
    method: str
    variant: str
    phases: int
    seed: int
    settings: dict[str, Any]              # RunConfig.to_dict()
    experiments: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.dataset, self.method, self.variant, self.phases, self.seed)

    @property
    def path(self) -> str:
        return f"results/{self.dataset}/{self.method}/{self.variant}/p{self.phases}/seed{self.seed}"

    @property
    def base(self) -> str:
        return base_name(self.settings)


def _fmt(v: Any) -> str:
    return str(v).replace(" ", "").replace("/", "-")


def base_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The slice of a run's settings that its base model depends on."""
    return {k: settings[k] for k in BASE_KEYS}


def base_name(settings: dict[str, Any]) -> str:
    """Readable key of a base model: head and backbone, plus the ReLU choice where it is not the head's usual one."""
    name = f"{settings['head']}-{settings['backbone']}"
    usual_relu = settings["head"] != "cosine"
    if settings["last_relu"] != usual_relu:
        name += "-relu" if settings["last_relu"] else "-norelu"
    return name


def base_config(settings: dict[str, Any]) -> RunConfig:
    """A RunConfig holding only what the base phase depends on (the rest at defaults)."""
    method = "lucir" if settings["head"] == "cosine" else "finetune"
    # phases and margin ranking do not reach the base phase; fixed values keep the config valid on its own
    return resolve(method, dict(base_settings(settings), phases=1, margin_ranking=False))


DOWNLOADABLE = ("cifar100",)


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


MEMORY_KEYS = ("method", "per_class", "total", "selection", "nme_flip")


def phase0_config(settings: dict[str, Any]) -> RunConfig:
    """What exemplar selection and evaluation after the base phase depend on: the base model and the memory
    settings, not the incremental ones (lambda, margin, ...), so changing those leaves phase 0 alone."""
    keep = dict(base_settings(settings), **{k: settings[k] for k in MEMORY_KEYS if k != "method"})
    return resolve(settings["method"], dict(keep, phases=1, margin_ranking=False))


def expand_runs(config: dict[str, Any]) -> list[Run]:
    runs: dict[tuple, Run] = {}
    variants = config.get("variants") or {}
    for exp_name, exp in config["experiments"].items():
        for ds_name in exp["datasets"]:
            if ds_name not in config["datasets"]:
                raise ConfigError(f"experiments.{exp_name}.datasets: unknown dataset {ds_name!r}")
            ds = config["datasets"][ds_name]
            common = {k: ds[k] for k in DATASET_KEYS if k in ds}
            common.update(ds.get("settings") or {})
            common["dataset"] = ds_name
            for key in ("device", "deterministic"):
                if key in config:
                    common[key] = config[key]
            grid = exp.get("grid") or {}
            for method, vname, phases, seed in itertools.product(
                    exp["methods"], exp.get("variants", ["default"]), exp["phases"],
                    exp.get("seeds", config["seeds"])):
                if vname != "default" and vname not in variants:
                    raise ConfigError(f"experiments.{exp_name}.variants: unknown variant {vname!r}")
                flags = dict(common, phases=phases, seed=seed, **(variants.get(vname) or {}))
                where = f"experiments.{exp_name} ({ds_name}, {method}, {vname}, {phases} phases)"
                try:
                    plain = resolve(method, flags).to_dict()
                except (ConfigError, TypeError) as e:
                    raise ConfigError(f"{where}: {e}") from None
                for values in itertools.product(*grid.values()):
                    point = dict(zip(grid.keys(), values))
                    try:
                        cfg = resolve(method, dict(flags, **point))
                    except (ConfigError, TypeError) as e:
                        raise ConfigError(f"{where}, grid {point}: {e}") from None
                    name = vname + "".join(f"_{k}{_fmt(v)}" for k, v in point.items() if plain[k] != v)
                    run = Run(ds_name, method, name, phases, seed, cfg.to_dict())
                    prev = runs.setdefault(run.key, run)
                    if prev.settings != run.settings:
                        raise ConfigError(f"{where}: run {run.path} is defined twice with different settings")
                    if exp_name not in prev.experiments:
                        prev.experiments.append(exp_name)
    _check_bases(runs.values())
    return list(runs.values())


def _check_bases(runs) -> None:
    seen: dict[tuple, tuple[str, dict]] = {}
    for r in runs:
        key = (r.dataset, r.base, r.seed)
        slice_ = base_settings(r.settings)
        if key in seen and seen[key][1] != slice_:
            diff = sorted(k for k in slice_ if slice_[k] != seen[key][1][k])
            raise ConfigError(f"runs {seen[key][0]} and {r.path} share base model {r.base} but differ in "
                              f"base settings: {', '.join(diff)}")
        seen.setdefault(key, (r.path, slice_))
