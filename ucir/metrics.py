"""Summary metrics over phases, in plain Python (the report jobs use them without importing torch)."""
from __future__ import annotations


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
