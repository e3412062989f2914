"""Which single runs the figures drawn from one run per method use (Figs. 3 and 9); pure, so it is unit-tested."""
from __future__ import annotations

from typing import Iterable


def figure_runs(runs: Iterable[tuple[str, int, int]], wanted: list[list[str]],
                seeds: list[int]) -> list[tuple[str, int, int] | None]:
    """runs: (method, phases, seed) of the default-variant runs of a dataset; wanted: per panel, the methods that may
    fill it in order of preference. Returns per panel one run or None, all at one (phases, seed): the one that fills
    the most panels, then has the fewest phases (the paper uses 1), then the seed listed first in `seeds`."""
    have = set(runs)

    def pick(p: int, s: int):
        return [next(((m, p, s) for m in prefs if (m, p, s) in have), None) for prefs in wanted]

    def rank(ps: tuple[int, int]):
        p, s = ps
        return (-sum(r is not None for r in pick(p, s)), p, seeds.index(s) if s in seeds else len(seeds), s)

    settings = sorted({(p, s) for _, p, s in have}, key=rank)
    return pick(*settings[0]) if settings else [None] * len(wanted)
