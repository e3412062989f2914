"""The files that make Snakemake run part of a configuration: one sitting of a study too long for one.

    python -m ucir.tools.targets [--configfile config.yaml ...] [--config key=value ...]
                                 [--experiments NAME ...] [--seeds SEED | FIRST-LAST ...] [--skip-kept DIR]

Prints the summary.json of every run of the named experiments (every experiment when none is named) whose class
order is among --seeds (every order when none), one per line; with --skip-kept, not those whose records are kept
under DIR (ucir.tools.records: docs/runs), which are counted on stderr (all kept: nothing is printed). Given to
snakemake as targets, they train, select and evaluate those runs (their base models included) and nothing else:
the tables and figures read every run of a dataset, so a plain `snakemake` (no targets) makes them once all runs
are there, rerunning none that is done. `make fmnist-main`, `make fmnist-ablations` and `make fmnist-2x` are such
sittings (docs/results.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from ..grid import Run
from .plan import check, load_config
from .records import is_kept


def parse_seeds(items: list[str]) -> set[int]:
    """`1993`, `1993-1997` (both ends included), several of them."""
    seeds: set[int] = set()
    for item in items:
        first, sep, last = item.partition("-")
        try:
            lo, hi = int(first), int(last) if sep else int(first)
        except ValueError:
            raise ConfigError(f"--seeds {item!r}: expected a seed or FIRST-LAST, e.g. 1993-1997") from None
        if hi < lo:
            raise ConfigError(f"--seeds {item!r}: the range is empty ({hi} < {lo})")
        seeds.update(range(lo, hi + 1))
    return seeds


def select(runs: list[Run], experiments: list[str], seeds: set[int]) -> list[Run]:
    """The runs of `experiments` (all when empty) with a seed in `seeds` (all when empty); an experiment or a seed
    that selects nothing is an error naming it."""
    named = sorted({e for r in runs for e in r.experiments})
    for e in experiments:
        if e not in named:
            raise ConfigError(f"--experiments {e!r}: no such experiment in the configuration (it has: "
                              f"{', '.join(named)})")
    picked = [r for r in runs if not experiments or set(r.experiments) & set(experiments)]
    have = sorted({r.seed for r in picked})
    missing = sorted(seeds - set(have))
    if missing:
        raise ConfigError(f"--seeds: no run{' of ' + ', '.join(experiments) if experiments else ''} has the class "
                          f"order {', '.join(map(str, missing))} (its orders: {', '.join(map(str, have))})")
    return [r for r in picked if not seeds or r.seed in seeds]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="+", default=None, help="as for snakemake (default: config.yaml)")
    ap.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="as for snakemake")
    ap.add_argument("--experiments", nargs="+", default=[], metavar="NAME", help="default: every experiment")
    ap.add_argument("--seeds", nargs="+", default=[], metavar="SEED|FIRST-LAST", help="default: every class order")
    ap.add_argument("--skip-kept", type=Path, default=None, metavar="DIR",
                    help="leave out the runs whose records are kept under DIR (e.g. docs/runs)")
    args = ap.parse_args(argv)
    try:
        runs = check(load_config(args.configfile or ["config.yaml"], args.config))
        picked = select(runs, args.experiments, parse_seeds(args.seeds))
    except (ConfigError, OSError) as e:
        print(f"ucir.tools.targets: {e}", file=sys.stderr)
        return 1
    if args.skip_kept is not None:
        todo = [r for r in picked if not is_kept(r, args.skip_kept)]
        if len(todo) < len(picked):
            print(f"ucir.tools.targets: {len(picked) - len(todo)} of {len(picked)} runs have their records kept under "
                  f"{args.skip_kept}: left out", file=sys.stderr)
        picked = todo
    if picked:
        print("\n".join(f"results/{r.path}/summary.json" for r in sorted(picked, key=lambda r: r.key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
