"""A study's records kept in the repository, and its tables and figures made again from them: a study run in
sittings on machines that do not keep results/ from one sitting to the next (docs/running.md, *A study in sittings*).

    python -m ucir.tools.records save   [--configfile config.yaml ...] [--config key=value ...] [--records docs/runs]
    python -m ucir.tools.records report [--configfile config.yaml ...] [--config key=value ...] [--records docs/runs]
                                        [--cores N] [-- SNAKEMAKE_ARGS ...]

save: each finished run of the configuration (one whose summary.json is under results/) keeps under
`<records>/results/<run folder>/` what the tables and figures read of it, its summary.json and each incremental
phase's metrics.json; under `<records>/logs/` go the per-epoch training logs (train_base.csv of its base model,
train_phase.csv and finetune_balanced.csv of its phases) that ucir.tools.curves reads. Runs not finished are left out
and counted. A record kept before is left as it is when the new one says the same, and is an error naming the file
when it differs (--replace keeps the new one): runs repeated in two sittings must agree. Beside a run's records,
machine.json says which machine first kept it (CPU model and instruction sets, torch's CPU kernels, torch version):
training is bit-reproducible on one machine, not across CPUs (docs/results.md, *Running it*), so a record says where
it was made. It is written once and never compared.

report: puts the records back under results/ where a file is missing there (a file there that says something else
is an error naming it), then runs snakemake on the configuration's tables and figures with only the rules that read
records allowed (ucir.pipeline.REPORT_RULES): nothing is trained. A run of the configuration without a record or a
summary stops it before snakemake starts, naming the runs.

"Says the same": equal once what describes how a record was made, not what it found, is set aside (VOLATILE: the
provenance of a metrics file, which names the commit; a training log's images/s and seconds per epoch).
"""
from __future__ import annotations

import argparse
import csv
import filecmp
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..grid import BASE_DIR, Run
from ..io import save_text
from ..pipeline import REPORT_RULES, TRAINING_RULES, figure_outputs, table_outputs
from .plan import check, load_config

RECORDS = Path("docs/runs")
VOLATILE = frozenset({"provenance", "img_per_s", "seconds"})
MACHINE = "machine.json"                # beside a run's records: where it was first kept (never compared)
ISA_FLAGS = ("avx", "amx", "fma", "sse4")   # /proc/cpuinfo flags that choose the CPU kernels


def machine() -> dict:
    """The machine a sitting runs on, as far as it decides a run's floating-point results: the CPU (model and the
    instruction sets torch's kernels pick from), torch's CPU kernel level, torch and Python versions."""
    import torch
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(ISA_FLAGS))
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(), "cpu_flags": flags,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "python": platform.python_version()}


def run_records(run: Run) -> list[str]:
    """What the tables and figures read of a finished run, relative to results/: its summary and each incremental
    phase's metrics (the base phase's are the base model's, read by no table)."""
    return [f"{run.path}/summary.json", *(f"{run.path}/phase{k}/metrics.json" for k in range(1, run.phases + 1))]


def is_kept(run: Run, records: Path) -> bool:
    """Whether a run's records are all kept under `records` (a sitting then need not train it again)."""
    return all((records / "results" / p).is_file() for p in run_records(run))


def run_logs(run: Run) -> list[str]:
    """A run's training logs, relative to logs/: its base model's, then each phase's of the stages that write one."""
    base = BASE_DIR.format(dataset=run.dataset, base=run.base, seed=run.seed)
    first, *per_phase = TRAINING_RULES
    return [f"{base}/{first}.csv",
            *(f"{run.path}/phase{k}/{rule}.csv" for k in range(1, run.phases + 1) for rule in per_phase)]


def _content(path: Path):
    """What a record says: a JSON file's data or a CSV's rows, without the VOLATILE keys and columns."""
    if path.suffix == ".json":
        return _drop(json.loads(path.read_text()))
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(f)]


def _drop(value):
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


def same(a: Path, b: Path) -> bool:
    return filecmp.cmp(a, b, shallow=False) or _content(a) == _content(b)


@dataclass
class Copied:
    written: list[Path] = field(default_factory=list)     # destinations written
    kept: int = 0

    @property
    def new(self) -> int:
        return len(self.written)


def _listed(paths: list) -> str:
    more = f"\n  ... and {len(paths) - 10} more" if len(paths) > 10 else ""
    return "\n".join(f"  {p}" for p in paths[:10]) + more


def copy_records(pairs: list[tuple[Path, Path]], replace: bool, advice: str) -> Copied:
    """Copy each (source, destination) whose destination is missing; one whose destination says something else is
    an error (`advice` says what to do) unless `replace`. Every pair is checked before anything is written."""
    differ = {(s, d) for s, d in pairs if d.exists() and not same(s, d)}
    if differ and not replace:
        raise ConfigError(f"{len(differ)} files say something else than the file they would go to:\n"
                          f"{_listed([f'{d} (from {s})' for s, d in sorted(differ)])}\n{advice}")
    done = Copied()
    for src, dest in pairs:
        if dest.exists() and (src, dest) not in differ:
            done.kept += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
        done.written.append(dest)
    return done


def save(runs: list[Run], records: Path, replace: bool = False, results: Path = Path("results"),
         logs: Path = Path("logs")) -> str:
    finished = [r for r in runs if (results / r.path / "summary.json").is_file()]
    pairs = []
    for run in finished:
        missing = [p for p in run_records(run) if not (results / p).is_file()]
        if missing:
            raise ConfigError(f"run {run.path}: summary.json is there but not {', '.join(missing)}")
        pairs += [(results / p, records / "results" / p) for p in run_records(run)]
        pairs += [(logs / p, records / "logs" / p) for p in run_logs(run) if (logs / p).is_file()]
    done = copy_records(sorted(set(pairs)), replace, "the runs were made with other code or settings than the "
                        "records kept; --replace keeps the new ones")
    written = set(done.written)
    new = [r for r in finished if records / "results" / r.path / "summary.json" in written]
    if new:                             # made here: a record kept before keeps the machine that made it
        here = json.dumps(machine(), indent=1) + "\n"
        for run in new:
            save_text(here, records / "results" / run.path / MACHINE)
    unfinished = len(runs) - len(finished)
    return (f"{len(finished)} finished runs under {records}: {done.new} files written, {done.kept} kept as they "
            f"were" + (f"; {unfinished} runs not finished, left out" if unfinished else ""))


def restore(runs: list[Run], records: Path, results: Path = Path("results")) -> str:
    """Each run's records back under results/ where missing; a run with neither is an error naming it."""
    absent = [r.path for r in runs if not (is_kept(r, records) or all((results / p).is_file()
                                                                       for p in run_records(r)))]
    if absent:
        raise ConfigError(f"{len(absent)} runs of the configuration have no record under {records} and no summary "
                          f"under {results}:\n{_listed(absent)}\nrun their sitting first (docs/running.md)")
    pairs = [(records / "results" / p, results / p) for r in runs for p in run_records(r)
             if (records / "results" / p).is_file()]
    done = copy_records(pairs, False, f"the runs under {results} differ from their records: move them away, or "
                        f"save them (--replace) if they are the ones to keep")
    return f"{len(runs)} runs: {done.new} records put back under {results}, {done.kept} already there"


def report_targets(runs: list[Run]) -> list[str]:
    datasets = sorted({r.dataset for r in runs})
    return [t for ds in datasets for t in (*table_outputs(ds), *figure_outputs(ds))]


def snakemake_command(runs: list[Run], configfiles: list[str], overrides: list[str], cores: int,
                      extra: list[str]) -> list[str]:
    """The report rules alone on the configuration's tables and figures (targets first: --allowed-rules takes
    every name after it)."""
    return [sys.executable, "-m", "snakemake", *report_targets(runs), "--cores", str(cores),
            "--configfile", *configfiles, *(["--config", *overrides] if overrides else []), *extra,
            "--allowed-rules", *REPORT_RULES]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("save", "report"))
    ap.add_argument("--configfile", nargs="+", default=["config.yaml"], help="as for snakemake")
    ap.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="as for snakemake")
    ap.add_argument("--records", type=Path, default=RECORDS, help=f"default: {RECORDS}")
    ap.add_argument("--replace", action="store_true", help="save: keep the new record where it differs")
    ap.add_argument("--cores", type=int, default=2, help="report: snakemake's --cores (default 2)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_args(argv[:cut]), argv[cut + 1:]     # after --: more arguments for snakemake
    try:
        runs = check(load_config(args.configfile, args.config))
        if args.action == "save":
            print(save(runs, args.records, args.replace))
            return 0
        print(restore(runs, args.records))
    except (ConfigError, OSError) as e:
        print(f"ucir.tools.records {args.action}: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return subprocess.call(snakemake_command(runs, args.configfile, args.config, args.cores, extra))


if __name__ == "__main__":
    sys.exit(main())
