"""Summary metrics over phases, in plain Python (the report jobs use them without importing torch).
acc_matrix[t][g] is the accuracy (%) on class group g (0 = the base classes, g = the classes of phase g) after
phase t, for g <= t: R_{t,g} in GEM's notation (Lopez-Paz & Ranzato 2017)."""
from __future__ import annotations

import math


def average_incremental_accuracy(accs: list[float]) -> float:
    """Mean of the accuracies after every phase, the base phase included (iCaRL's definition)."""
    return sum(accs) / len(accs)


def forgetting(acc_matrix: list[list[float]]) -> float:
    """Average forgetting: for every class group learned before the last phase, the best accuracy it ever had minus
    its accuracy at the end, averaged over groups. acc_matrix[t][g] = accuracy on group g after phase t."""
    last = acc_matrix[-1]
    drops = [max(acc_matrix[t][g] for t in range(len(acc_matrix) - 1) if g < len(acc_matrix[t])) - last[g]
             for g in range(len(last) - 1)]
    return sum(drops) / len(drops) if drops else float("nan")


def backward_transfer(acc_matrix: list[list[float]]) -> float:
    """Backward transfer (GEM): BWT = 1/(T-1) sum_{i<T} (R_{T,i} - R_{i,i}), the accuracy on each group at the end
    minus its accuracy right after it was learned, averaged over the groups learned before the last phase
    (negative = forgetting). NaN with one phase."""
    last = acc_matrix[-1]
    diffs = [last[i] - acc_matrix[i][i] for i in range(len(acc_matrix) - 1)]
    return sum(diffs) / len(diffs) if diffs else float("nan")


def mean_defined(values: list[float | None]) -> float:
    """Mean over the entries that are not None/NaN (e.g. top-5 over the phases with more than 5 classes); NaN if
    none is."""
    ok = [v for v in values if v is not None and not math.isnan(v)]
    return sum(ok) / len(ok) if ok else float("nan")
