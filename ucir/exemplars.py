"""Exemplar memory (Sec. 4.1): herding selection (iCaRL; `herding_official` replays the official code's loop) on
L2-normalised features, per-class (R_per) or fixed-total (R_total) budgets. Exemplars are ranked once, when their
class is new, and never reselected; with a fixed total, classes shrink by keeping their first-ranked exemplars.

A memory is a plain dict of tensors (what checkpoints hold):
    {"index": LongTensor M  -- indices into the training split,
     "label": LongTensor M  -- class positions,
     "rank":  LongTensor M  -- herding rank within the class (0 = first picked)}
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .checkpoint import load_model
from .features import extract
from .runtime import seed_everything


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Greedy herding: pick m distinct samples whose running mean stays closest to the class mean.

    features: N x D (normalised inside). Returns LongTensor of m indices (m <= N) in selection order; the first is
    the sample nearest the class mean.
    """
    f = F.normalize(features.double(), dim=1)                              # N x D
    mu = f.mean(dim=0)                                                     # D
    m = min(m, f.shape[0])
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(f.shape[0], dtype=torch.bool)
    for k in range(1, m + 1):
        cand = (running + f) / k                                           # N x D: mean if each were added
        dist = (mu - cand).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.long)


def herding_official(features: torch.Tensor, m: int, max_steps: int = 1000) -> torch.Tensor:
    """The official code's herding loop, replayed (class_incremental_cosine_cifar100.py, "Herding procedure", the
    loop of iCaRL's released code): a target w starts at the class mean mu; each step takes the sample with the
    largest <w, f_i> among ALL samples, ranks it if it is not ranked yet, and moves w by mu - f_i either way. It
    stops once min(m, N) distinct samples are ranked (the code writes min(m, 500), CIFAR's images per class) or
    after `max_steps` steps, so it may return fewer than m. Until its first re-pick it ranks exactly as `herding`;
    a re-picked sample counts twice in w but is kept once.

    features: N x D (normalised inside). Returns LongTensor of the ranked indices in rank order.
    """
    f = F.normalize(features.double(), dim=1)                              # N x D
    mu = f.mean(dim=0)                                                     # D
    target = min(m, f.shape[0])
    w = mu.clone()
    ranked = torch.zeros(f.shape[0], dtype=torch.bool)
    chosen: list[int] = []
    steps = 0
    while len(chosen) < target and steps < max_steps:
        i = int((f @ w).argmax())                                          # first index on ties, as np.argmax
        steps += 1
        if not ranked[i]:
            ranked[i] = True
            chosen.append(i)
        w += mu - f[i]
    return torch.tensor(chosen, dtype=torch.long)


def random_ranking(n: int, m: int, g: torch.Generator) -> torch.Tensor:
    """Random selection, the ablation alternative to herding."""
    return torch.randperm(n, generator=g)[: min(m, n)]


def empty_memory() -> dict[str, torch.Tensor]:
    z = torch.zeros(0, dtype=torch.long)
    return {"index": z, "label": z.clone(), "rank": z.clone()}


def add_classes(memory: dict[str, torch.Tensor], rankings: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Append the rankings of new classes ({class position: split indices in rank order})."""
    parts = [memory]
    for c, idx in sorted(rankings.items()):
        parts.append({"index": idx.long(), "label": torch.full_like(idx.long(), c),
                      "rank": torch.arange(len(idx), dtype=torch.long)})
    return {k: torch.cat([p[k] for p in parts]) for k in ("index", "label", "rank")}


def shrink(memory: dict[str, torch.Tensor], per_class: int) -> dict[str, torch.Tensor]:
    """Keep the first `per_class` ranked exemplars of every class."""
    keep = memory["rank"] < per_class
    return {k: v[keep] for k, v in memory.items()}


# ---- the workflow stage ---------------------------------------------------------------------------------------
def select_exemplars(cfg, phase: int, ckpt: dict, prev_memory: dict | None, data,
                     device: torch.device, log: Callable[[str], None], per_class: int | None = None) -> dict:
    """Rank exemplars of the classes new in `phase` with that phase's model; keep `per_class` exemplars of every
    class (default: the run's memory size after the phase, cfg.memory_per_class)."""
    lo = 0 if phase == 0 else cfg.classes_seen(phase - 1)
    hi = cfg.classes_seen(phase)
    m = cfg.memory_per_class(hi) if per_class is None else per_class
    memory = prev_memory if prev_memory is not None else empty_memory()
    rankings = {}
    if m > 0:
        g = seed_everything(cfg.seed, phase, stage=2)
        idx = data.train_indices(lo, hi)                                   # every new class, one pass
        labels = data.train.targets[idx]
        rank = {"herding": herding, "herding_official": herding_official}.get(cfg.selection)   # None: random
        if rank is not None:
            feats = extract(load_model(ckpt, cfg, phase, device), data.train_loader, idx, cfg.eval_batch_size,
                            device, log=log, what="new-class training images")   # fp32 whatever the precision
        for c in range(lo, hi):
            mine = labels == c
            ranking = rank(feats[mine], m) if rank is not None else random_ranking(int(mine.sum()), m, g)
            rankings[c] = idx[mine][ranking]
    memory = shrink(add_classes(memory, rankings), m)
    log(f"phase {phase}: {m} exemplars per class for {hi} classes, {len(memory['index'])} in memory")
    return memory
