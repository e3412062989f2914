"""One function per training stage of the protocol, each with explicit inputs and outputs (checkpoints and memories are
plain dicts), so the workflow can run every stage in its own process.

    train_base          phase 0: CE on the base classes
    train_phase         phase k >= 1: grow the head (imprint), train on new data + exemplars against the
                        previous model (Eq. 9 for LUCIR; Eq. 2 for iCaRL/LwF; CE only for finetune/joint)
    class_balance_finetune  optional CBF on the balanced exemplar set (Sec. 3.5)

The other stages: ucir.exemplars.select_exemplars and ucir.evaluate.evaluate_phase.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch

from ..checkpoint import load_model, make_checkpoint, to_device
from ..config import DISTILLS, RunConfig
from ..data import RunData
from ..deps import stage_settings
from ..features import extract
from ..losses import adaptive_lambda
from ..models import build_model, imprint
from ..runtime import seed_everything
from .loop import Objective, fit

Log = Callable[[str], None]


def _teacher(ckpt: dict, cfg: RunConfig, phase: int, device: torch.device):
    t = load_model(ckpt, cfg, phase, device).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def fingerprint(stage: str, cfg: RunConfig, phase: int, *inputs: dict) -> str:
    """What a stage's result depends on: its settings (ucir.deps.stage_settings), the phase and its input
    checkpoints' weights. A resumable state is only resumed by a job with the same fingerprint."""
    h = hashlib.sha256(json.dumps([stage_settings(stage, cfg, phase), phase], sort_keys=True).encode())
    for ckpt in inputs:
        for k, v in sorted(ckpt.get("model", ckpt).items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def distill_weight(cfg: RunConfig, num_old: int, num_new: int) -> float:
    """Weight of the distillation term. Eq. 6 (feature) and the L1 reading of Eq. 5 (cosine_scores, cs_loss: l1)
    take Eq. 7's adaptive lambda; the official CN loss (cs_loss: official) takes the code's fixed weight lw_ms
    (cs_weight, 1 by default) and no adaptive lambda; Eq. 2 (kd) takes kd_weight."""
    if cfg.distill == "feature":
        return adaptive_lambda(cfg.lambda_base, num_old, num_new, cfg.lambda_rule)   # Eq. 7
    if cfg.distill == "cosine_scores":
        if cfg.cs_loss == "official":
            return cfg.cs_weight
        return adaptive_lambda(cfg.lambda_base, num_old, num_new, cfg.lambda_rule)   # Eq. 7
    if cfg.distill == "kd":
        return cfg.kd_weight
    if cfg.distill == "none":
        return 0.0
    raise ValueError(f"no weight for distill={cfg.distill!r} in distill_weight (ucir/train/stages.py); the "
                     f"distillations: {', '.join(DISTILLS)} (ucir.config.DISTILLS)")


def train_base(cfg: RunConfig, data: RunData, device: torch.device, log: Log, state_path=None) -> dict:
    g = seed_everything(cfg.seed, 0)
    net = to_device(build_model(cfg.backbone, cfg.head, cfg.base_classes, data.spec.channels, cfg.last_relu),
                    cfg, device)
    idx = data.train_indices(0, cfg.base_classes)
    log(f"base phase: {cfg.base_classes} classes, {len(idx)} images")
    fit(net, Objective(cfg, 0), data.train_loader, idx, cfg.base_train, device=device, g=g, log=log,
        desc="phase 0", state_path=state_path, checkpoint_every=cfg.checkpoint_every,
        checkpoint_minutes=cfg.checkpoint_minutes,
        fingerprint=fingerprint("train_base", cfg, 0), precision=cfg.precision)
    return make_checkpoint(net, cfg, 0, num_old=0, config=stage_settings("train_base", cfg, 0))


def grow_head(net, teacher, cfg: RunConfig, data: RunData, num_old: int, num_seen: int, device,
              log: Log | None = None) -> None:
    """Add the new classes' rows. Cosine head: imprinted from the previous model's features of all training
    images of each new class (test transform), scaled to the mean norm of the old rows; old rows frozen when
    cfg.freeze_old (Sec. 3.3). Linear head, or no imprinting: freshly initialised rows."""
    new = list(range(num_old, num_seen))
    cosine = cfg.head == "cosine"
    rows: int | torch.Tensor = len(new)
    if cosine and cfg.imprint:
        idx = data.train_indices(num_old, num_seen)
        feats = extract(teacher, data.train_loader, idx, cfg.eval_batch_size, device, log=log,
                        what="new-class training images (imprinting)")
        rows = imprint(feats, data.train.targets[idx], new, float(net.head.row_norms().mean()))
    net.head.add_classes(rows, freeze_old=cosine and cfg.freeze_old)


def train_phase(cfg: RunConfig, phase: int, prev_ckpt: dict, memory: dict, data: RunData,
                device: torch.device, log: Log, state_path=None) -> dict:
    g = seed_everything(cfg.seed, phase)
    num_old, num_seen = cfg.classes_seen(phase - 1), cfg.classes_seen(phase)
    teacher = _teacher(prev_ckpt, cfg, phase - 1, device)
    net = load_model(prev_ckpt, cfg, phase - 1, device)
    grow_head(net, teacher, cfg, data, num_old, num_seen, device, log)
    if cfg.trains_on_all_seen:
        idx = data.train_indices(0, num_seen)                              # all data of every seen class (joint)
    else:
        idx = torch.cat([data.train_indices(num_old, num_seen), memory["index"]])
    lam = distill_weight(cfg, num_old, num_seen - num_old)
    log(f"phase {phase}: classes {num_old}..{num_seen - 1} new, {len(idx)} images "
        f"({len(memory['index'])} exemplars), distill={cfg.distill} weight={lam:.4g}")
    fit(net, Objective(cfg, num_old, lam, teacher), data.train_loader, idx, cfg.train, device=device, g=g,
        log=log, desc=f"phase {phase}", state_path=state_path, checkpoint_every=cfg.checkpoint_every,
        checkpoint_minutes=cfg.checkpoint_minutes,
        fingerprint=fingerprint("train_phase", cfg, phase, prev_ckpt, memory), precision=cfg.precision)
    return make_checkpoint(net, cfg, phase, num_old=num_old, config=stage_settings("train_phase", cfg, phase))


def class_balance_finetune(cfg: RunConfig, phase: int, ckpt: dict, prev_ckpt: dict, memory: dict,
                           data: RunData, device: torch.device, log: Log, state_path=None) -> dict:
    """CBF: the exemplars of all seen classes (balanced), backbone frozen (BatchNorm too), eta fixed, the head
    trained with the phase's losses against the previous model. state_path: its resumable state (fit)."""
    g = seed_everything(cfg.seed, phase, stage=1)
    num_old = cfg.classes_seen(phase - 1)
    teacher = _teacher(prev_ckpt, cfg, phase - 1, device)
    net = load_model(ckpt, cfg, phase, device)
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    if getattr(net.head, "sigma", None) is not None:
        net.head.sigma.requires_grad_(False)

    def train_mode(m):
        m.train()
        m.backbone.eval()

    lam = distill_weight(cfg, num_old, cfg.classes_per_phase)
    log(f"phase {phase} CBF: {len(memory['index'])} exemplars")
    fit(net, Objective(cfg, num_old, lam, teacher), data.train_loader, memory["index"], cfg.cbf_train,
        device=device, g=g, log=log, desc=f"phase {phase} cbf", state_path=state_path,
        checkpoint_every=cfg.checkpoint_every, checkpoint_minutes=cfg.checkpoint_minutes,
        fingerprint=fingerprint("finetune_balanced", cfg, phase, ckpt, prev_ckpt, memory), precision=cfg.precision,
        train_mode=train_mode)
    return make_checkpoint(net, cfg, phase, num_old=num_old, config=stage_settings("finetune_balanced", cfg, phase),
                           extra={"cbf": True})
