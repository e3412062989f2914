"""LUCIR's losses and the baselines' distillation, as pure functions of tensors (Sec. 3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def classification(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 1 (with Eq. 4's eta-scaled cosine logits when the head is cosine), averaged over the batch."""
    return F.cross_entropy(logits, targets)


def lwf_distillation(logits: torch.Tensor, old_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """Eq. 2 over the old classes, averaged over the batch.

    tau(p) rescales softmax probabilities by the power 1/Omega (Omega = T) and renormalises over the old classes,
    which equals softmax(z_old / T). So L = -sum_i softmax(z*/T)_i log softmax(z_old/T)_i.
    logits: N x C (current model, all seen classes); old_logits: N x C_old (original model).
    """
    num_old = old_logits.shape[1]
    target = F.softmax(old_logits / T, dim=1)
    return -(target * F.log_softmax(logits[:, :num_old] / T, dim=1)).sum(dim=1).mean()


def cosine_score_distillation(cos_old: torch.Tensor, old_cos: torch.Tensor, form: str = "official") -> torch.Tensor:
    """Eq. 5 (the CN-only ablation): the current model's unscaled cosine scores of the old classes,
    <theta_i, f(x)>, against the original model's, <theta*_i, f*(x)>. cos_old, old_cos: N x C_old.

    form="official" (default): sum over old classes of the squared difference, averaged over the batch, as the
        official code computes it (utils_incremental/incremental_train_and_eval_MS.py: MSELoss, a mean over
        N x C_old, times num_old_classes; the current scores are the old part of the head before sigma, the
        original model's are its logits divided by its sigma).
    form="l1": sum over old classes of |difference|, averaged over the batch: Eq. 5 as printed. Eq. 5 also prints
        a leading minus sign; a loss to minimise has none.
    """
    diff = cos_old - old_cos                                               # N x C_old
    if form == "official":
        return diff.square().sum(dim=1).mean()
    if form == "l1":
        return diff.abs().sum(dim=1).mean()
    raise ValueError(f"form={form!r}: expected 'official' or 'l1'")


def less_forget(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    """Eq. 6: L_dis^G = 1 - <f_bar*(x), f_bar(x)>, on every sample of the batch, averaged. features: N x D."""
    return (1.0 - F.cosine_similarity(features, old_features, dim=1)).mean()


def adaptive_lambda(lambda_base: float, num_old: int, num_new: int, rule: str = "code") -> float:
    """Weight of the less-forget loss (Eq. 7).

    rule="code" (default): lambda_base * sqrt(|C_old| / |C_new|), what the official code computes and what produced
        the paper's numbers (CIFAR-100 B50, 10 new classes: 5 * sqrt(50/10) = 11.18).
    rule="paper": lambda_base * sqrt(|C_new| / |C_old|), Eq. 7 as printed. The two disagree; the text after Eq. 7
        ("lambda increases when the ratio of new to old classes increases") matches the printed formula, while the
        released code grows lambda with the old classes.
    rule="fixed": lambda_base (the Fig. 8 baseline without the adaptive weight).
    """
    if rule == "code":
        return lambda_base * math.sqrt(num_old / num_new)
    if rule == "paper":
        return lambda_base * math.sqrt(num_new / num_old)
    if rule == "fixed":
        return float(lambda_base)
    raise ValueError(f"rule={rule!r}: expected 'code', 'paper' or 'fixed'")


def margin_ranking(cos: torch.Tensor, targets: torch.Tensor, num_old: int, k: int = 2, margin: float = 0.5,
                   reduction: str = "pairs") -> torch.Tensor:
    """Eq. 8: for every anchor (a sample of an old class in the batch), sum_k max(m - <theta(x), f(x)> +
    <theta^k, f(x)>, 0), where theta^k are the K new classes with the highest scores (hard negatives).

    cos: N x C unscaled cosine scores over all seen classes (classes < num_old are old).
    reduction="pairs" (default): mean over the anchor x K pairs, as the official code does (1/K of Eq. 9);
    reduction="anchors": sum over K, mean over anchors, as Eq. 9 prints it.
    A batch without old-class samples gives 0, still connected to the graph. Written with a mask instead of
    selecting the anchors, so that no step waits for the GPU to say how many there are.
    """
    if cos.shape[1] <= num_old:
        return cos.sum() * 0.0
    anchors = (targets < num_old).unsqueeze(1)                             # N x 1
    pos = cos.gather(1, targets.unsqueeze(1))                              # N x 1
    neg = cos[:, num_old:].topk(k, dim=1).values                           # N x K
    hinge = torch.where(anchors, F.relu(margin - pos + neg), 0.0)          # N x K, 0 on non-anchors
    n_anchors = anchors.sum().clamp(min=1)                                 # A (1 when there is none: 0 / 1)
    if reduction == "pairs":
        return hinge.sum() / (n_anchors * k)
    if reduction == "anchors":
        return hinge.sum() / n_anchors
    raise ValueError(f"reduction={reduction!r}: expected 'pairs' or 'anchors'")
