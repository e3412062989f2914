"""One function per stage of the protocol, each with explicit inputs and outputs (checkpoints and memories are
plain dicts), so the workflow can run every stage in its own process.

    train_base          phase 0: CE on the base classes
    train_phase         phase k >= 1: grow the head (imprint), train on new data + exemplars against the
                        previous model (Eq. 9 for LUCIR; Eq. 2 for iCaRL/LwF; CE only for finetune/joint)
    select_exemplars    after phase k: rank the new classes' exemplars, shrink old ones under a fixed total
    class_balance_finetune  optional CBF on the balanced exemplar set (Sec. 3.5)
    evaluate_phase      CNN and NME accuracy, confusion matrices, head norms
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .. import exemplars as E
from ..checkpoint import make_checkpoint, model_from_checkpoint
from ..config import RunConfig
from ..data import RunData
from ..evaluate import class_means, confusion_matrix, nme_predict, split_accuracy
from ..features import extract
from ..losses import adaptive_lambda
from ..models import CosineLinear, build_model, imprint
from ..runtime import seed_everything
from .loop import Objective, fit

Log = Callable[[str], None]


def _prepare(net, cfg: RunConfig, device: torch.device):
    net = net.to(device)
    if device.type == "cuda" and cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _teacher(ckpt: dict, cfg: RunConfig, phase: int, device: torch.device):
    t = _prepare(model_from_checkpoint(ckpt, cfg, phase), cfg, device).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def distill_weight(cfg: RunConfig, num_old: int, num_new: int) -> float:
    if cfg.distill in ("feature", "cosine_scores"):
        return adaptive_lambda(cfg.lambda_base, num_old, num_new, cfg.lambda_rule)   # Eq. 7
    if cfg.distill == "kd":
        return cfg.kd_weight
    return 0.0


def train_base(cfg: RunConfig, data: RunData, device: torch.device, log: Log, state_path=None) -> dict:
    g = seed_everything(cfg.seed, 0)
    net = _prepare(build_model(cfg.backbone, cfg.head, cfg.base_classes, data.spec.channels, cfg.last_relu),
                   cfg, device)
    idx = data.train_indices(0, cfg.base_classes)
    log(f"base phase: {cfg.base_classes} classes, {len(idx)} images")
    fit(net, Objective(cfg, 0), data.train_dev, idx, cfg.base_train, device=device, g=g, log=log,
        desc="phase 0", state_path=state_path, checkpoint_every=cfg.checkpoint_every, amp=cfg.amp)
    return make_checkpoint(net, cfg, 0, num_old=0)


def grow_head(net, teacher, cfg: RunConfig, data: RunData, num_old: int, num_seen: int, device) -> None:
    """Add the new classes' rows. Cosine head: imprinted from the previous model's features of all training
    images of each new class (test transform), scaled to the mean norm of the old rows; old rows frozen when
    cfg.freeze_old (Sec. 3.3). Linear head: freshly initialised rows."""
    new = list(range(num_old, num_seen))
    if isinstance(net.head, CosineLinear):
        if cfg.imprint:
            idx = data.train_indices(num_old, num_seen)
            feats = extract(teacher, data.train_dev, idx, cfg.eval_batch_size, device, cfg.amp)
            scale = float(net.head.row_norms().mean())
            w = imprint(feats, data.train.targets[idx], new, scale)
        else:
            d = net.head.in_features
            w = torch.empty(len(new), d).uniform_(-d ** -0.5, d ** -0.5)
        net.head.add_classes(w.to(device), freeze_old=cfg.freeze_old)
    else:
        net.head.add_classes(len(new))


def train_phase(cfg: RunConfig, phase: int, prev_ckpt: dict, memory: dict, data: RunData,
                device: torch.device, log: Log, state_path=None) -> dict:
    g = seed_everything(cfg.seed, phase)
    num_old, num_seen = cfg.classes_seen(phase - 1), cfg.classes_seen(phase)
    teacher = _teacher(prev_ckpt, cfg, phase - 1, device)
    net = _prepare(model_from_checkpoint(prev_ckpt, cfg, phase - 1), cfg, device)
    grow_head(net, teacher, cfg, data, num_old, num_seen, device)
    if cfg.method == "joint":
        idx = data.train_indices(0, num_seen)                              # all data of every seen class
    else:
        idx = torch.cat([data.train_indices(num_old, num_seen), memory["index"]])
    lam = distill_weight(cfg, num_old, num_seen - num_old)
    log(f"phase {phase}: classes {num_old}..{num_seen - 1} new, {len(idx)} images "
        f"({len(memory['index'])} exemplars), distill={cfg.distill} weight={lam:.4g}")
    fit(net, Objective(cfg, num_old, lam, teacher), data.train_dev, idx, cfg.train, device=device, g=g,
        log=log, desc=f"phase {phase}", state_path=state_path, checkpoint_every=cfg.checkpoint_every,
        amp=cfg.amp)
    return make_checkpoint(net, cfg, phase, num_old=num_old)


def class_balance_finetune(cfg: RunConfig, phase: int, ckpt: dict, prev_ckpt: dict, memory: dict,
                           data: RunData, device: torch.device, log: Log) -> dict:
    """CBF: the exemplars of all seen classes (balanced), backbone frozen (BatchNorm too), eta fixed, the head
    trained with the phase's losses against the previous model."""
    g = seed_everything(cfg.seed, phase, stage=1)
    num_old = cfg.classes_seen(phase - 1)
    teacher = _teacher(prev_ckpt, cfg, phase - 1, device)
    net = _prepare(model_from_checkpoint(ckpt, cfg, phase), cfg, device)
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    if getattr(net.head, "sigma", None) is not None:
        net.head.sigma.requires_grad_(False)

    def train_mode(m):
        m.train()
        m.backbone.eval()

    lam = distill_weight(cfg, num_old, cfg.classes_per_phase)
    log(f"phase {phase} CBF: {len(memory['index'])} exemplars")
    fit(net, Objective(cfg, num_old, lam, teacher), data.train_dev, memory["index"], cfg.cbf_train,
        device=device, g=g, log=log, desc=f"phase {phase} cbf", amp=cfg.amp, train_mode=train_mode)
    return make_checkpoint(net, cfg, phase, num_old=num_old, extra={"cbf": True})


def select_exemplars(cfg: RunConfig, phase: int, ckpt: dict, prev_memory: dict | None, data: RunData,
                     device: torch.device, log: Log) -> dict:
    """Rank exemplars of the classes new in `phase` with that phase's model; keep the budget per class."""
    lo = 0 if phase == 0 else cfg.classes_seen(phase - 1)
    hi = cfg.classes_seen(phase)
    m = cfg.memory_per_class(hi)
    memory = prev_memory if prev_memory is not None else E.empty_memory()
    rankings = {}
    if m > 0:
        g = seed_everything(cfg.seed, phase, stage=2)
        net = _prepare(model_from_checkpoint(ckpt, cfg, phase), cfg, device)
        for c in range(lo, hi):
            idx = data.train_indices(c, c + 1)
            if cfg.selection == "herding":
                feats = extract(net, data.train_dev, idx, cfg.eval_batch_size, device, cfg.amp)
                rankings[c] = idx[E.herding(feats, m)]
            else:
                rankings[c] = idx[E.random_ranking(len(idx), m, g)]
    memory = E.shrink(E.add_classes(memory, rankings), m)
    log(f"phase {phase}: {m} exemplars per class for {hi} classes, {len(memory['index'])} in memory")
    return memory


def evaluate_phase(cfg: RunConfig, phase: int, ckpt: dict, memory: dict, data: RunData,
                   device: torch.device) -> dict:
    num_seen = cfg.classes_seen(phase)
    num_old = cfg.classes_seen(phase - 1) if phase > 0 else 0
    net = _prepare(model_from_checkpoint(ckpt, cfg, phase), cfg, device)
    idx = data.test_indices(0, num_seen)
    targets = data.test.targets[idx]
    feats, logits = extract(net, data.test_dev, idx, cfg.eval_batch_size, device, cfg.amp, logits=True)
    cnn = logits.argmax(1)
    out = {"phase": phase, "classes_seen": num_seen, "num_old": num_old, "num_test": len(idx),
           "cnn": split_accuracy(cnn, targets, num_old),
           "cnn_groups": group_accuracy(cnn, targets, cfg, phase),
           "confusion_cnn": confusion_matrix(cnn, targets, num_seen).tolist()}
    stored = torch.unique(memory["label"]) if len(memory["label"]) else torch.zeros(0, dtype=torch.long)
    if len(stored) == num_seen:
        mi, ml = memory["index"], memory["label"]
        ef = extract(net, data.train_dev, mi, cfg.eval_batch_size, device, cfg.amp)
        ff = extract(net, data.train_dev, mi, cfg.eval_batch_size, device, cfg.amp, flip=True) \
            if cfg.nme_flip else None
        nme = nme_predict(feats, class_means(ef, ml, num_seen, ff))
        out["nme"] = split_accuracy(nme, targets, num_old)
        out["nme_groups"] = group_accuracy(nme, targets, cfg, phase)
        out["confusion_nme"] = confusion_matrix(nme, targets, num_seen).tolist()
    else:
        out["nme"] = None
    head = net.head
    out["head"] = {"weight_norms": head.row_norms().tolist(),
                   "bias": head.bias.detach().tolist() if getattr(head, "bias", None) is not None else None,
                   "sigma": float(head.sigma.detach()) if getattr(head, "sigma", None) is not None else None}
    return out


def group_accuracy(pred: torch.Tensor, targets: torch.Tensor, cfg: RunConfig, phase: int) -> list[float]:
    """Accuracy on each class group learned so far (group 0 = base classes, group j = classes of phase j)."""
    bounds = [0] + [cfg.classes_seen(j) for j in range(phase + 1)]
    accs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (targets >= lo) & (targets < hi)
        accs.append(float((pred[sel] == targets[sel]).float().mean()) * 100)
    return accs
