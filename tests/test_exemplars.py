"""Herding selection (iCaRL) on L2-normalised features, and the exemplar memory's budgets (Sec. 4.1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ucir import exemplars as E
from ucir.config import resolve

torch.set_num_threads(2)



def counts(memory, num_classes):
    """Exemplars per class in a memory."""
    return torch.bincount(memory["label"], minlength=num_classes)

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


# ------------------------------------------------------------------------------------------------ official loop

def _official_reference(f: np.ndarray, m: int, max_steps: int = 1000) -> tuple[list[int], list[int]]:
    """The official code's herding, coded from its description: samples are the columns of D (normalised), a
    rank array alpha starts at 0, w starts at the mean; every step takes argmax_i <w, D_i> over all columns,
    gives it rank 1 + (ranks given so far) if it has none, and sets w <- w + mu - D_i; it stops when min(m, N)
    columns have a rank or after max_steps steps. The kept exemplars are the columns with 0 < alpha < m + 1.
    Returns (kept columns in rank order, every step's pick)."""
    D = f.astype(np.float64).T
    D = D / np.linalg.norm(D, axis=0)
    mu = D.mean(axis=1)
    alpha = np.zeros(D.shape[1])
    w, given, steps = mu.copy(), 0, []
    while np.count_nonzero(alpha) != min(m, D.shape[1]) and len(steps) < max_steps:
        i = int(np.argmax(w @ D))
        steps.append(i)
        if alpha[i] == 0:
            given += 1
            alpha[i] = given
        w = w + mu - D[:, i]
    kept = np.flatnonzero((alpha > 0) & (alpha < m + 1))
    return [int(i) for i in kept[np.argsort(alpha[kept])]], steps


def _circle(degrees: list[float]) -> torch.Tensor:
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees],
                        dtype=torch.float64)


def test_herding_official_re_picks_and_ranks_differently():
    """Four unit vectors at -60, -5, 30 and 60 degrees (their mean points at about 8 degrees). Both loops pick
    -5, then 30. At the third step the official target w = 3 mu - f(-5) - f(30) still points closest to -5: it
    re-picks it, subtracts it a second time, then ranks 60 before -60. ucir's herding never looks at a ranked
    sample again and takes -60 third. Every decision wins by a margin of at least 0.03, far above rounding."""
    f = _circle([-60, -5, 30, 60])
    kept, steps = _official_reference(f.numpy(), 4)
    assert steps == [1, 2, 1, 3, 0]                                 # the re-pick of sample 1 at step 3
    assert E.herding_official(f, 4).tolist() == kept == [1, 2, 3, 0]
    assert E.herding(f, 4).tolist() == [1, 2, 0, 3]
    assert E.herding_official(f, 2).tolist() == E.herding(f, 2).tolist() == [1, 2]   # equal before the re-pick
    assert E.herding_official(f, 3).tolist() == [1, 2, 3]          # and a 3-exemplar memory keeps another set


@pytest.mark.parametrize("seed,n,d,m", [(20, 500, 64, 20), (21, 200, 16, 50), (22, 60, 8, 60), (23, 30, 4, 10)])
def test_herding_official_matches_the_reference_loop(seed, n, d, m):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g).relu() + 0.01               # non-negative, as features after a ReLU
    kept, steps = _official_reference(f.numpy(), m)                 # seeds 21-23 re-pick
    got = E.herding_official(f, m)
    assert got.tolist() == kept
    assert got.dtype == torch.long and len(set(kept)) == len(kept) == min(m, n)
    assert E.herding_official(f * 3.7, m).tolist() == kept         # scale-free: it works on the unit sphere


def test_herding_official_loops_differ_on_random_features():
    """Over random classes the official loop re-picks in some and keeps another exemplar set in some (the loops
    agree exactly whenever it never re-picks)."""
    g = torch.Generator().manual_seed(30)
    re_picked = different = 0
    for _ in range(20):
        f = torch.randn(500, 64, generator=g).relu() + 0.01
        kept, steps = _official_reference(f.numpy(), 20)
        ours = E.herding(f, 20).tolist()
        re_picked += len(steps) > len(kept)
        different += kept != ours
        assert (len(steps) > len(kept)) or kept == ours
    assert re_picked >= 1 and different >= 1


def test_herding_official_stops_after_max_steps():
    """Two identical samples tie and the first always wins (np.argmax's rule), so the twin is never ranked: the
    official loop runs its 1000 steps and returns fewer than m exemplars; ucir's herding ranks all three."""
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    kept, steps = _official_reference(f.numpy(), 3)
    assert len(steps) == 1000 and kept == [0, 2]
    assert E.herding_official(f, 3).tolist() == [0, 2]
    assert E.herding(f, 3).tolist() == [0, 2, 1]
    assert E.herding_official(_circle([-60, -5, 30, 60]), 4, max_steps=3).tolist() == [1, 2]


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
    assert counts(mem, 4).tolist() == [4, 4, 3, 0]


def test_fixed_total_memory_keeps_first_ranked():
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, total=30, per_class=None))
    m0, m1, m2 = (cfg.memory_per_class(cfg.classes_seen(p)) for p in range(3))
    assert (m0, m1, m2) == (5, 4, 3)                                # ceil(30 / 6), ceil(30 / 8), ceil(30 / 10)
    mem = E.shrink(E.add_classes(E.empty_memory(), {c: _rank(c, m0) for c in range(6)}), m0)
    assert counts(mem, 10).tolist() == [5] * 6 + [0] * 4
    mem = E.shrink(E.add_classes(mem, {c: _rank(c, m1) for c in (6, 7)}), m1)
    assert counts(mem, 10).tolist() == [4] * 8 + [0] * 2
    assert len(mem["index"]) == 32                                  # ceil: slightly over R_total, as the code
    for c in range(8):
        kept = [int(i) for i, lab in zip(mem["index"], mem["label"]) if int(lab) == c]
        assert kept == _rank(c, 5 if c < 6 else 4).tolist()[:4]      # the first-ranked survive, in order
    mem = E.shrink(mem, 1)
    assert mem["index"].tolist() == [int(_rank(c, 5)[0]) for c in range(6)] + [int(_rank(c, 4)[0]) for c in (6, 7)]


def test_fixed_total_rounds_up_as_the_official_fix_budget():
    """--fix_budget keeps ceil(R_total / classes seen) per class: CIFAR-100 B50, 5 phases, R_total = 2000."""
    cfg = resolve("lucir", dict(num_classes=100, base_classes=50, phases=5, total=2000, per_class=None))
    per_class = [cfg.memory_per_class(cfg.classes_seen(p)) for p in range(6)]
    assert per_class == [math.ceil(2000 / seen) for seen in (50, 60, 70, 80, 90, 100)] == [40, 34, 29, 25, 23, 20]
    assert [m * cfg.classes_seen(p) for p, m in enumerate(per_class)] == [2000, 2040, 2030, 2000, 2070, 2000]


def test_per_class_budget_constant():
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, per_class=20))
    assert [cfg.memory_per_class(cfg.classes_seen(p)) for p in range(3)] == [20, 20, 20]
    assert resolve("joint", dict(num_classes=10, base_classes=6, phases=2)).memory_per_class(8) == 0
    assert resolve("lwf", dict(num_classes=10, base_classes=6, phases=2)).memory_per_class(8) == 0
