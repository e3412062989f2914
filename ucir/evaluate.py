"""Evaluation (Sec. 4.1): CNN and nearest-mean-of-exemplars (NME) top-1 on all seen classes, split into old and
new; confusion matrices; average incremental accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                flipped: torch.Tensor | None = None) -> torch.Tensor:
    """NME prototypes: per class, the mean of L2-normalised exemplar features, averaged with the mean of their
    horizontally flipped copies' features when given, then L2-normalised. Classes without exemplars get NaN rows.
    features, flipped: M x D; labels: M. Returns num_classes x D."""
    def mean_of(f: torch.Tensor) -> torch.Tensor:
        f = F.normalize(f.double(), dim=1)
        sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype).index_add_(0, labels, f)
        n = torch.bincount(labels, minlength=num_classes).unsqueeze(1).to(f.dtype)
        return sums / n                                                     # 0/0 -> NaN for empty classes
    mu = mean_of(features)
    if flipped is not None:
        mu = (mu + mean_of(flipped)) / 2
    return F.normalize(mu, dim=1).float()


def nme_predict(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """Nearest class mean (Euclidean) to each L2-normalised feature. features: N x D; class_means: C x D."""
    f = F.normalize(features.float(), dim=1)
    d = torch.cdist(f, class_means.float())
    return d.nan_to_num(float("inf")).argmin(dim=1)


def accuracy(pred: torch.Tensor, targets: torch.Tensor) -> float:
    return float((pred == targets).float().mean()) * 100 if len(targets) else float("nan")


def split_accuracy(pred: torch.Tensor, targets: torch.Tensor, num_old: int) -> dict[str, float]:
    """Top-1 (%) on all classes, on the old classes (< num_old) and on the new ones."""
    old = targets < num_old
    return {"all": accuracy(pred, targets), "old": accuracy(pred[old], targets[old]),
            "new": accuracy(pred[~old], targets[~old])}


def confusion_matrix(pred: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C x C counts, rows = true class, columns = predicted class."""
    return torch.bincount(targets * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)


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
