"""What a configuration will cost, from the configuration alone: no data, no torch, a few seconds.

    python -m ucir.tools.plan [--configfile config.yaml ...] [--config key=value ...]
                        [--throughput IMG_PER_S [--inference-throughput IMG_PER_S] | --bench FILE]     (make plan)

Per experiment and in total: the runs, the jobs of every rule exactly as Snakemake plans them (the workflow's
jobs come from the same ucir.grid / ucir.deps functions; shared jobs counted once), the Slurm allocations with
workflow/profiles/slurm's groups, and the images each stage passes through the network:

    training    train_base: base_train.epochs x the base classes' training images
                train_phase: train.epochs x (the new classes' training images + the exemplars kept after the
                             previous phase); joint training: every seen class's training images
                finetune_balanced: cbf_train.epochs x the exemplars kept after the phase
    inference   imprint: the new classes' training images, through the previous model (cosine head, imprint: true)
                herding: the new classes' training images, where exemplars are kept and chosen by herding
                NME: the exemplars kept after the phase (twice unless nme_flip: none: a second view)
                test: the test images of every class seen (evaluate_base / evaluate_phase)

A training pass is one forward and backward step of the network, plus a forward pass of the previous model where
the method distills; ucir.tools.bench measures that (LUCIR's objective against a teacher), so its images/s are the
training rate (slightly pessimistic for base training and the methods without a teacher), in the precision its output
names (`precision: ...`; `make bench PRECISION=...`): a rate of another precision than the configuration's is
refused. Images per class come
from IMAGES_PER_CLASS (no data is read), capped by train_per_class / test_per_class; herding_official may rank
fewer exemplars than asked and is counted as herding.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import deps, pipeline
from ..config import FOLDER_SOURCES, IMAGES_PER_CLASS, ConfigError, RunConfig
from ..grid import Run, expand_runs, shared_jobs

TRAINING = ("train_base", "train_phase", "finetune_balanced")
INFERENCE = ("imprint", "herding", "nme", "test")
PASSES = TRAINING + INFERENCE
HERDING = ("herding", "herding_official")               # the selections that run the network (random does not)
RULES = (*pipeline.BY_NAME, pipeline.TARGET)                          # the order of the printed table
# ucir.tools.bench's training rate is measured without an inference counterpart: a forward pass costs about a third of
# a training step (forward + backward, the backward about twice the forward), so inference is taken 3x faster.
INFERENCE_SPEEDUP = 3.0
# JPEGs one loader worker decodes per second (ImageNet-sized, one idle core of the 2-core development VM:
# docs/benchmarks.md): a GPU job on folder data wants R / DECODE_RATE workers, plus one CPU for training.
DECODE_RATE = 250.0
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


# ---- images -----------------------------------------------------------------------------------------------

def images_per_class(cfg: RunConfig) -> tuple[float, float]:
    """(training, test) images per class of a run's dataset: the source's count, capped by train_per_class /
    test_per_class (for synthetic data those are the generated counts)."""
    train, test = IMAGES_PER_CLASS[cfg.source][:2]
    if cfg.source == "synthetic":
        return float(cfg.train_per_class or train), float(cfg.test_per_class or test)
    return (float(min(train, cfg.train_per_class or train)), float(min(test, cfg.test_per_class or test)))


def exemplars(cfg: RunConfig, phase: int) -> float:
    """Exemplars in memory after `phase`: deps.exemplars_per_class (at most the class's images) for every class
    seen."""
    n_train, _ = images_per_class(cfg)
    return cfg.classes_seen(phase) * min(deps.exemplars_per_class(cfg, phase), n_train)


def job_passes(stage: str, cfg: RunConfig, phase: int) -> dict[str, float]:
    """Images one job of `stage` after `phase` passes through the network, by kind (PASSES)."""
    n_train, n_test = images_per_class(cfg)
    old = cfg.classes_seen(phase - 1) if phase else 0
    new = (cfg.classes_seen(phase) - old) * n_train                        # the classes new in this phase
    if stage == "train_base":
        return {"train_base": cfg.base_train.epochs * new}
    if stage == "train_phase":
        data = cfg.classes_seen(phase) * n_train if cfg.trains_on_all_seen else new + exemplars(cfg, phase - 1)
        imprint = new if cfg.head == "cosine" and cfg.imprint else 0.0
        return {"train_phase": cfg.train.epochs * data, "imprint": imprint}
    if stage == "finetune_balanced":
        return {"finetune_balanced": cfg.cbf_train.epochs * exemplars(cfg, phase)}
    if stage == "select_exemplars":
        return {"herding": new if deps.exemplars_per_class(cfg, phase) > 0 and cfg.selection in HERDING else 0.0}
    if stage == "evaluate_phase":
        nme = exemplars(cfg, phase) * (1 if cfg.nme_flip == "none" else 2)   # NME needs exemplars of every class
        return {"test": cfg.classes_seen(phase) * n_test, "nme": nme if deps.exemplars_per_class(cfg, phase) > 0 else 0.0}
    raise ValueError(f"unknown stage {stage!r}; one of {deps.STAGES}")


# ---- jobs -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    rule: str
    key: tuple                      # what makes it one job: a shared job's key, or (run key, stage, phase)
    passes: tuple[tuple[str, float], ...] = ()


def run_jobs(run: Run) -> list[Job]:
    """The jobs a run needs, its shared phase-0 jobs included (under the same key as every run sharing them)."""
    shared = {key[0]: key for key in shared_jobs(run)}
    jobs = []
    for stage, k in deps.run_stages(run.cfg):
        passes = tuple(sorted(job_passes(stage, run.cfg, k).items()))
        if k == 0:
            jobs.append(Job(pipeline.BASE_RULES[stage], shared[stage], passes))
        else:
            jobs.append(Job(pipeline.RUN_RULES[stage], (run.key, stage, k), passes))
    jobs += [Job(name, (run.key, name)) for name in pipeline.rules_per("run")]
    return jobs


def dataset_jobs(config: dict[str, Any], dataset: str) -> list[Job]:
    """The jobs over all runs of a dataset: its tables, its figures and (ImageNet-Subset) its class list."""
    source = config["datasets"][dataset]["source"]
    return [Job(name, (dataset, name)) for name in pipeline.rules_per("dataset", source)]


@dataclass
class Plan:
    runs: int = 0
    jobs: Counter = field(default_factory=Counter)                          # rule -> jobs
    passes: Counter = field(default_factory=Counter)                        # PASSES kind -> images
    allocations: int = 0                                                    # Slurm allocations, grouped


def plan(jobs: Iterable[Job], runs: int) -> Plan:
    """Counts over distinct jobs (a job listed twice, e.g. a shared base model, counts once)."""
    p = Plan(runs=runs)
    for job in {j.key: j for j in jobs}.values():
        p.jobs[job.rule] += 1
        for kind, n in job.passes:
            p.passes[kind] += n
    p.allocations = pipeline.slurm_allocations(p.jobs)
    return p


def plan_config(config: dict[str, Any], runs: list[Run] | None = None) -> dict[str, Plan]:
    """{experiment name: its Plan, ..., "total": the whole configuration's} (the same jobs Snakemake plans for
    `all`; an experiment's own columns leave out the per-dataset tables and figures, which draw every experiment)."""
    runs = expand_runs(config) if runs is None else runs
    out = {}
    for name in config["experiments"]:
        mine = [r for r in runs if name in r.experiments]
        out[name] = plan((j for r in mine for j in run_jobs(r)), len(mine))
    everything = [j for r in runs for j in run_jobs(r)]
    for ds in sorted({r.dataset for r in runs}):
        everything += dataset_jobs(config, ds)
    everything.append(Job(pipeline.TARGET, (pipeline.TARGET,)))
    out["total"] = plan(everything, len(runs))
    return out


# ---- the configuration, as the workflow reads it ----------------------------------------------------------

def _merge(base: dict, new: dict) -> dict:
    """Snakemake's rule for several config files and --config: nested dicts merged, other values replaced."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(configfiles: list[str], overrides: list[str] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in configfiles:
        with open(path) as f:
            config = _merge(config, yaml.safe_load(f) or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--config {item!r}: expected key=value")
        config = _merge(config, {key: yaml.safe_load(value)})
    return config


def check(config: dict[str, Any]) -> list[Run]:
    """The workflow's checks (ucir.validate.check_config), except that dataset folders need not exist."""
    from ..validate import check_config, load_schema
    return check_config(config, load_schema(SCHEMA), check_paths=False)


# ---- rates ------------------------------------------------------------------------------------------------

@dataclass
class Rates:
    train: float                    # images/s
    inference: float
    source: str                     # where the figures come from, in words
    precision: str | None = None    # the training precision the rate was measured in (None: not stated)


_BENCH_UCIR = re.compile(r"^ucir\s+images/s: min [\d.]+\s+median ([\d.]+)", re.M)
_BENCH_INFER = re.compile(r"^inference images/s: min [\d.]+\s+median ([\d.]+)", re.M)
_BENCH_DEVICE = re.compile(r"^device (\S+ \(.*?\)), .*?(ResNet-\d+)", re.M)
_BENCH_PRECISION = re.compile(r"^precision: (\S+)", re.M)


def rates_from_bench(text: str, where: str) -> Rates:
    """The rates in a saved output of `make bench` / `python -m ucir.tools.bench` (or of `make gpu-check`, which runs
    it): the median images/s of ucir's training loop, and of inference when the output has it."""
    m = _BENCH_UCIR.search(text)
    if not m:
        raise ValueError(f"{where}: no line 'ucir images/s: min ... median ...' (the output of python -m ucir.tools.bench)")
    train = float(m[1])
    dev = _BENCH_DEVICE.search(text)
    prec = _BENCH_PRECISION.search(text)
    what = (f"{where}: ucir.tools.bench's median training rate" + (f" on {dev[1]}, {dev[2]}" if dev else "")
            + (f", precision {prec[1]}" if prec else ""))
    inf = _BENCH_INFER.search(text)
    if inf:
        return Rates(train, float(inf[1]), f"{what}; its inference rate", prec and prec[1])
    return Rates(train, train * INFERENCE_SPEEDUP, f"{what}; inference assumed {INFERENCE_SPEEDUP:g}x faster "
                 "(a forward pass is about a third of a training step)", prec and prec[1])


def precision_note(rates: Rates, precisions: set[str]) -> str:
    """What the rate's precision means for a configuration that trains in `precisions`: ConfigError where the rate
    was measured in a precision the configuration does not train in; a note where it trains in several, or where
    the rate does not say (a rate typed in, or the output of an older bench)."""
    wanted = ", ".join(sorted(precisions))
    if rates.precision is None:
        return (f"note: the rate does not say its training precision; the configuration trains in {wanted} "
                "(make bench PRECISION=... prints it)")
    if rates.precision not in precisions:
        raise ConfigError(f"the rate was measured in precision {rates.precision}, and the configuration trains in "
                          f"{wanted}: measure its rate with make bench PRECISION={'|'.join(sorted(precisions))}")
    if len(precisions) > 1:
        return (f"note: the configuration trains in {wanted}; every training pass is priced at the "
                f"{rates.precision} rate (measure each precision for the others)")
    return ""


def rates_given(train: float, inference: float | None) -> Rates:
    if inference is not None:
        return Rates(train, inference, "given on the command line (training and inference)")
    return Rates(train, train * INFERENCE_SPEEDUP, f"given on the command line; inference assumed "
                 f"{INFERENCE_SPEEDUP:g}x faster (a forward pass is about a third of a training step)")


def cpus_per_gpu(rates: Rates | None) -> str:
    """What a folder dataset's GPU jobs need: one decode worker per DECODE_RATE training images/s, plus one CPU."""
    what = (f"JPEG folders: one loader worker decodes about {DECODE_RATE:.0f} images/s on an idle core "
            f"(docs/benchmarks.md), so a GPU job needs R/{DECODE_RATE:.0f} + 1 CPUs for a GPU that trains R images/s")
    if rates is None:
        return what + " (give --throughput or --bench for the number); set it in the profile's set-threads"
    return (what + f": {math.ceil(rates.train / DECODE_RATE) + 1} CPUs per GPU at {rates.train:,.0f} images/s "
            "(the profile's set-threads)")


def device_hours(p: Plan, rates: Rates) -> tuple[float, float]:
    """(training, inference) device-hours of a plan's image passes at these rates."""
    train = sum(p.passes[k] for k in TRAINING) / rates.train / 3600
    return train, sum(p.passes[k] for k in INFERENCE) / rates.inference / 3600


# ---- printing ---------------------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def _millions(n: float) -> str:
    return f"{n / 1e6:,.{1 if n >= 1e7 else 3}f}" if n else "-"


def _hours(h: float) -> str:
    return f"{h:,.{1 if h >= 10 else 2}f}"


def report(config: dict[str, Any], runs: list[Run], plans: dict[str, Plan], rates: Rates | None,
           where: str) -> str:
    cols = list(plans)
    header = ["", *cols]
    lines = [f"plan of {where}: {len(runs)} runs, {sum(plans['total'].jobs.values()):,} jobs "
             f"(no data read; every count below is computed from the configuration)", ""]
    for ds in sorted({r.dataset for r in runs}):
        cfg = next(r.cfg for r in runs if r.dataset == ds)
        n_train, n_test = images_per_class(cfg)
        capped = "" if cfg.source == "synthetic" else "; capped by train_per_class / test_per_class"
        lines.append(f"dataset {ds}: {n_train:,.1f} training / {n_test:,.0f} test images per class "
                     f"({IMAGES_PER_CLASS[cfg.source].note}{capped})")
        if cfg.source in FOLDER_SOURCES:
            lines.append("  " + cpus_per_gpu(rates))
    rows = [["runs", *(f"{plans[c].runs:,}" for c in cols)]]
    rows += [[rule, *(f"{plans[c].jobs[rule]:,}" if plans[c].jobs[rule] else "-" for c in cols)]
             for rule in RULES if plans["total"].jobs[rule]]
    rows.append(["jobs", *(f"{sum(plans[c].jobs.values()):,}" for c in cols)])
    rows.append(["slurm allocations", *(f"{plans[c].allocations:,}" for c in cols)])
    lines += ["", "jobs per rule (an experiment's column counts its runs' jobs, shared ones once; the tables and "
              "figures, which draw every experiment, only in total)", _table(header, rows)]
    rows = [[f"training  {k}", *(_millions(plans[c].passes[k]) for c in cols)] for k in TRAINING]
    rows += [[f"inference {k}", *(_millions(plans[c].passes[k]) for c in cols)] for k in INFERENCE]
    rows.append(["training", *(_millions(sum(plans[c].passes[k] for k in TRAINING)) for c in cols)])
    rows.append(["inference", *(_millions(sum(plans[c].passes[k] for k in INFERENCE)) for c in cols)])
    lines += ["", "image passes (millions of images through the network; training: forward + backward)",
              _table(header, rows)]
    if rates is None:
        lines += ["", "device-hours: give a throughput (--throughput IMG_PER_S, or --bench FILE with the saved "
                  "output of `make bench` on the device)"]
        return "\n".join(lines)
    hours = {c: device_hours(plans[c], rates) for c in cols}
    rows = [["training", *(_hours(hours[c][0]) for c in cols)],
            ["inference", *(_hours(hours[c][1]) for c in cols)],
            ["total", *(_hours(sum(hours[c])) for c in cols)]]
    lines += ["", f"device-hours at {rates.train:,.0f} training / {rates.inference:,.0f} inference images/s "
              f"({rates.source}); compute only, one job at a time on one device, job start-up not included "
              "(docs/benchmarks.md)", _table(header, rows)]
    other = sorted({(r.dataset, r.cfg.backbone) for r in runs if r.cfg.backbone != "resnet32"})
    if other:
        lines.append("note: the rate holds for the measured network (ucir.tools.bench: ResNet-32 on 32 x 32 images); "
                     + ", ".join(f"{ds} uses {b}" for ds, b in other) + ": measure the rate for it")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="+", default=None, help="as for snakemake (default: config.yaml)")
    ap.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="as for snakemake")
    rate = ap.add_mutually_exclusive_group()
    rate.add_argument("--throughput", type=float, metavar="IMG_PER_S", help="training images/s on the device")
    rate.add_argument("--bench", metavar="FILE", help="the saved output of `make bench` (python -m ucir.tools.bench)")
    ap.add_argument("--inference-throughput", type=float, metavar="IMG_PER_S",
                    help=f"inference images/s (default: {INFERENCE_SPEEDUP:g}x the training rate)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    files = args.configfile or ["config.yaml"]
    try:
        config = load_config(files, args.config)
        runs = check(config)
    except (ConfigError, OSError) as e:
        print(f"invalid configuration: {e}", file=sys.stderr)
        return 1
    rates = None
    if args.bench:
        rates = rates_from_bench(Path(args.bench).read_text(), args.bench)
        if args.inference_throughput:
            rates = Rates(rates.train, args.inference_throughput,
                          rates.source.split(";")[0] + "; inference given on the command line", rates.precision)
    elif args.throughput:
        rates = rates_given(args.throughput, args.inference_throughput)
    note = ""
    if rates is not None:
        try:
            note = precision_note(rates, {r.cfg.precision for r in runs})
        except ConfigError as e:
            print(f"plan: {e}", file=sys.stderr)
            return 1
    print(report(config, runs, plan_config(config, runs), rates, " + ".join(files)) + (f"\n{note}" if note else ""))
    print(f"\n(planned in {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
