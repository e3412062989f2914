"""Evaluation (Sec. 4.1): CNN and nearest-mean-of-exemplars (NME) top-1 on all seen classes, split into old and
new and per class group (the accuracy matrix); top-5 where more than 5 classes are seen; confusion matrices."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .checkpoint import load_model
from .config import NME_FLIPS
from .data.augment import hflip
from .features import extract


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                flipped: torch.Tensor | None = None) -> torch.Tensor:
    """NME prototypes: per class, the mean of L2-normalised exemplar features, averaged with the mean of their
    second view's features (nme_view) when given, then L2-normalised. Classes without exemplars get NaN rows.
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


def reverse_channels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The official CIFAR-100 code's "flipped version" of the exemplars (nme_flip: channels): prototypes[...][:, :, :,
    ::-1] on N x H x W x C images reverses the colour channels (RGB -> BGR), not the width, before the usual
    normalisation. x: N x C x H x W normalised with mean, std (C x 1 x 1); returns the reversed images normalised the
    same way."""
    return ((x * std + mean).flip(1) - mean) / std


def nme_view(nme_flip: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable | None:
    """The second view of each exemplar that NME's class means also average (RunConfig.nme_flip): a real horizontal
    flip, the official code's channel reversal, or None."""
    if nme_flip == "horizontal":
        return hflip
    if nme_flip == "channels":
        m, s = (torch.tensor(v).view(-1, 1, 1) for v in (mean, std))
        return lambda x: reverse_channels(x, m.to(x.device), s.to(x.device))
    if nme_flip == "none":
        return None
    raise ValueError(f"nme_flip={nme_flip!r} is not allowed: one of {', '.join(NME_FLIPS)}")


def nme_scores(features: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """Minus the Euclidean distance of each L2-normalised feature to each class mean (higher = nearer), -inf for
    classes without a mean. features: N x D; class_means: C x D. Returns N x C."""
    f = F.normalize(features.float(), dim=1)
    d = torch.cdist(f, class_means.float())
    return -d.nan_to_num(float("inf"))


def has_exemplars_of_all(memory: dict, num_classes: int) -> bool:
    """Whether the memory holds exemplars of every one of the first `num_classes` classes (what NME needs)."""
    return len(torch.unique(memory["label"])) == num_classes


def exemplar_means(net, data, memory: dict, num_classes: int, nme_flip: str, batch_size: int,
                   device: torch.device, log: Callable[[str], None] | None = None) -> torch.Tensor:
    """The NME classifier's class means (Sec. 4.1): features of the memory's exemplars (training images,
    test transform), averaged with their second view's (nme_view: nme_flip horizontal or channels) by
    `class_means`. data: the run's data (data.train_loader, data.spec); memory: {"index": M, "label": M} into its
    training split. Returns num_classes x D."""
    mi, ml = memory["index"], memory["label"]
    ef = extract(net, data.train_loader, mi, batch_size, device, log=log, what="exemplars")
    view = nme_view(nme_flip, data.spec.mean, data.spec.std)
    ff = None if view is None else extract(net, data.train_loader, mi, batch_size, device, view=view, log=log,
                                           what=f"exemplars (nme_flip: {nme_flip})")
    return class_means(ef, ml, num_classes, ff)


def accuracy(pred: torch.Tensor, targets: torch.Tensor) -> float:
    return float((pred == targets).float().mean()) * 100 if len(targets) else float("nan")


TOP_K = 5


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int = TOP_K) -> float | None:
    """Top-k (%): the true class among the k highest scores. None when there are no more than k classes (top-k
    would be 100 % by construction). scores: N x C; targets: N."""
    if scores.shape[1] <= k:
        return None
    hit = (scores.topk(k, dim=1).indices == targets.unsqueeze(1)).any(dim=1)
    return accuracy(hit, torch.ones_like(hit))


def split_accuracy(pred: torch.Tensor, targets: torch.Tensor, num_old: int) -> dict[str, float]:
    """Top-1 (%) on all classes, on the old classes (< num_old) and on the new ones."""
    old = targets < num_old
    return {"all": accuracy(pred, targets), "old": accuracy(pred[old], targets[old]),
            "new": accuracy(pred[~old], targets[~old])}


def confusion_matrix(pred: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C x C counts, rows = true class, columns = predicted class."""
    return torch.bincount(targets * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)


# ---- the workflow stage ---------------------------------------------------------------------------------------
def evaluate_phase(cfg, phase: int, ckpt: dict, memory: dict, data, device: torch.device,
                   log: Callable[[str], None] | None = None) -> dict:
    num_seen = cfg.classes_seen(phase)
    num_old = cfg.classes_seen(phase - 1) if phase > 0 else 0
    net = load_model(ckpt, cfg, phase, device)
    idx = data.test_indices(0, num_seen)
    targets = data.test.targets[idx]
    feats, logits = extract(net, data.test_loader, idx, cfg.eval_batch_size, device, logits=True, log=log,
                            what="test images")
    cnn = logits.argmax(1)
    out = {"phase": phase, "classes_seen": num_seen, "num_old": num_old, "num_test": len(idx),
           "cnn": split_accuracy(cnn, targets, num_old), "cnn_top5": topk_accuracy(logits, targets),
           "cnn_groups": group_accuracy(cnn, targets, cfg, phase),
           "confusion_cnn": confusion_matrix(cnn, targets, num_seen).tolist()}
    if has_exemplars_of_all(memory, num_seen):                         # NME needs exemplars of every class
        scores = nme_scores(feats, exemplar_means(net, data, memory, num_seen, cfg.nme_flip,
                                                  cfg.eval_batch_size, device, log))
        nme = scores.argmax(dim=1)
        out["nme"] = split_accuracy(nme, targets, num_old)
        out["nme_top5"] = topk_accuracy(scores, targets)
        out["nme_groups"] = group_accuracy(nme, targets, cfg, phase)
        out["confusion_nme"] = confusion_matrix(nme, targets, num_seen).tolist()
    else:
        out["nme"] = out["nme_top5"] = None
    head = net.head
    out["head"] = {"weight_norms": head.row_norms().tolist(),
                   "bias": head.bias.detach().tolist() if getattr(head, "bias", None) is not None else None,
                   "sigma": float(head.sigma.detach()) if getattr(head, "sigma", None) is not None else None}
    return out


def group_accuracy(pred: torch.Tensor, targets: torch.Tensor, cfg, phase: int) -> list[float]:
    """Accuracy on each class group learned so far (group 0 = base classes, group j = classes of phase j)."""
    bounds = [0] + [cfg.classes_seen(j) for j in range(phase + 1)]
    accs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (targets >= lo) & (targets < hi)
        accs.append(accuracy(pred[sel], targets[sel]))
    return accs
