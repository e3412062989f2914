"""Herding selection (iCaRL) on L2-normalised features, and the exemplar memory's budgets (Sec. 4.1)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ucir import exemplars as E
from ucir.config import resolve

torch.set_num_threads(2)


def _features(seed: int, n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 0.5                   # off-centre, so the mean is meaningful


def _herding_reference(f: np.ndarray, m: int) -> list[int]:
    """iCaRL's greedy rule, coded from its definition: p_k = argmin_x || mu - (x + sum_{j<k} p_j) / k ||."""
    fn = [row / np.sqrt(sum(v * v for v in row)) for row in f.astype(np.float64)]
    mu = sum(fn) / len(fn)
    chosen: list[int] = []
    for k in range(1, m + 1):
        best, best_d = -1, np.inf
        acc = sum((fn[j] for j in chosen), np.zeros_like(mu))
        for i in range(len(fn)):
            if i in chosen:
                continue
            d = float(np.sqrt(((mu - (acc + fn[i]) / k) ** 2).sum()))
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_herding_first_pick_nearest_normalised_mean():
    f = _features(0, 40, 6)
    got = E.herding(f, 5)
    fn = f.double().numpy()
    fn = fn / np.linalg.norm(fn, axis=1, keepdims=True)
    mu = fn.mean(axis=0)
    assert int(got[0]) == int(np.argmin(np.linalg.norm(fn - mu, axis=1)))
    # per-sample rescaling changes nothing: the criterion lives on the unit sphere
    scaled = f * torch.linspace(0.2, 5.0, 40).unsqueeze(1)
    assert int(E.herding(scaled, 1)[0]) == int(got[0])


@pytest.mark.parametrize("seed,n,d,m", [(1, 25, 5, 10), (2, 12, 3, 12), (3, 30, 8, 7)])
def test_herding_matches_bruteforce_greedy(seed, n, d, m):
    f = _features(seed, n, d)
    got = E.herding(f, m).tolist()
    assert got == _herding_reference(f.numpy(), m)
    assert len(set(got)) == len(got) == m
    assert all(0 <= i < n for i in got)


def test_herding_full_is_permutation_and_clamped():
    f = _features(4, 15, 4)
    full = E.herding(f, 15)
    assert sorted(full.tolist()) == list(range(15))
    assert E.herding(f, 100).tolist() == full.tolist()            # m > N: every sample once
    assert E.herding(f, 6).tolist() == full.tolist()[:6]          # greedy: prefixes agree
    assert full.dtype == torch.long


def test_herding_unnormalised_equals_normalised():
    f = _features(5, 20, 6)
    scale = torch.exp(torch.randn(20, 1, generator=torch.Generator().manual_seed(50)))
    fn = f / f.norm(dim=1, keepdim=True)
    assert E.herding(f * scale, 12).tolist() == E.herding(fn, 12).tolist()


def test_herding_running_mean_approaches_class_mean():
    f = _features(6, 50, 5)
    order = E.herding(f, 50).tolist()
    fn = f.double().numpy()
    fn = fn / np.linalg.norm(fn, axis=1, keepdims=True)
    mu = fn.mean(axis=0)
    err = [np.linalg.norm(fn[order[:k]].mean(axis=0) - mu) for k in (1, 5, 20, 50)]
    assert err[-1] == pytest.approx(0.0, abs=1e-12)
    assert err[1] < np.linalg.norm(fn[:5].mean(axis=0) - mu)        # beats taking the first five


# ------------------------------------------------------------------------------------------------ memory

def _rank(c: int, n: int) -> torch.Tensor:
    """Fake rankings: split indices of class c in rank order (distinct across classes)."""
    return torch.tensor([100 * c + (7 * r) % n for r in range(n)])


def test_add_classes_per_class_counts_and_ranks():
    mem = E.add_classes(E.empty_memory(), {1: _rank(1, 4), 0: _rank(0, 4)})
    assert mem["label"].tolist() == [0] * 4 + [1] * 4                 # sorted by class
    assert mem["rank"].tolist() == [0, 1, 2, 3] * 2
    assert mem["index"].tolist() == _rank(0, 4).tolist() + _rank(1, 4).tolist()
    mem = E.add_classes(mem, {2: _rank(2, 3)})
    assert E.counts(mem, 4).tolist() == [4, 4, 3, 0]


def test_fixed_total_memory_keeps_first_ranked():
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, total=30, per_class=None))
    m0, m1, m2 = (cfg.memory_per_class(cfg.classes_seen(p)) for p in range(3))
    assert (m0, m1, m2) == (30 // 6, 30 // 8, 30 // 10) == (5, 3, 3)
    mem = E.shrink(E.add_classes(E.empty_memory(), {c: _rank(c, m0) for c in range(6)}), m0)
    assert E.counts(mem, 10).tolist() == [5] * 6 + [0] * 4
    mem = E.shrink(E.add_classes(mem, {c: _rank(c, m1) for c in (6, 7)}), m1)
    assert E.counts(mem, 10).tolist() == [3] * 8 + [0] * 2
    assert len(mem["index"]) <= 30
    for c in range(8):
        kept = [int(i) for i, lab in zip(mem["index"], mem["label"]) if int(lab) == c]
        assert kept == _rank(c, 5 if c < 6 else 3).tolist()[:3]      # the first-ranked survive, in order
    mem = E.shrink(mem, 1)
    assert mem["index"].tolist() == [int(_rank(c, 5)[0]) for c in range(6)] + [int(_rank(c, 3)[0]) for c in (6, 7)]


def test_per_class_budget_constant():
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, per_class=20))
    assert [cfg.memory_per_class(cfg.classes_seen(p)) for p in range(3)] == [20, 20, 20]
    assert resolve("joint", dict(num_classes=10, base_classes=6, phases=2)).memory_per_class(8) == 0
    assert resolve("lwf", dict(num_classes=10, base_classes=6, phases=2)).memory_per_class(8) == 0
