"""The training loop of every stage: SGD over the trainable parameters, MultiStepLR, one log line per epoch,
non-finite loss detection, resumable state and SIGTERM handling. The losses come from ucir.losses; which ones
apply is decided by the RunConfig flags, not by code branches per method."""
from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import losses as L
from ..config import RunConfig, Schedule
from ..io import load_torch, save_torch
from ..models import IncrementalNet
from ..runtime import autocast, bf16_training


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the phase, epoch and term."""


class Preempted(SystemExit):
    """SIGTERM arrived; the resumable state was saved."""


@dataclass
class Objective:
    """Which losses a stage uses and with what weights (Eq. 9 and the baselines)."""
    cfg: RunConfig
    num_old: int                   # classes the teacher knows (0 in the base phase)
    lam: float = 0.0               # weight of the distillation term
    teacher: IncrementalNet | None = None

    def terms(self, net: IncrementalNet, x: torch.Tensor,
              y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weighted loss terms of one batch, and the logits (N x C). Without old classes or a teacher (the
        base phase) only Eq. 1 applies, and no incremental setting is read."""
        feats = net.features(x)                                            # N x D
        logits = net.head(feats)                                           # N x C
        out = {"ce": L.classification(logits.float(), y)}                   # Eq. 1
        if self.teacher is None or self.num_old == 0:
            return out, logits
        cfg, old, teacher = self.cfg, self.num_old, self.teacher
        cos = None                                                         # N x C unscaled, computed once
        if cfg.distill == "feature":                                       # Eq. 6
            with torch.inference_mode():
                t_feats = teacher.features(x)                              # N x D
            out["lf"] = self.lam * L.less_forget(feats.float(), t_feats.float().clone())
        elif cfg.distill == "cosine_scores":                               # Eq. 5
            with torch.inference_mode():
                t_cos = teacher.head.cosine(teacher.features(x))           # N x C_old, unscaled
            cos = net.head.cosine(feats).float()
            out["cs"] = self.lam * L.cosine_score_distillation(cos[:, :old], t_cos.float().clone(), cfg.cs_loss)
        elif cfg.distill == "kd":                                          # Eq. 2
            with torch.inference_mode():
                t_logits = teacher(x)                                      # N x C_old
            out["kd"] = self.lam * L.lwf_distillation(logits.float(), t_logits[:, :old].float().clone(), cfg.kd_T)
        if cfg.margin_ranking:                                             # Eq. 8
            cos = net.head.cosine(feats).float() if cos is None else cos
            out["mr"] = cfg.mr_weight * L.margin_ranking(cos, y, old, cfg.K, cfg.margin, cfg.mr_reduction)
        return out, logits


def make_optimizer(params, s: Schedule):
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(s.milestones), gamma=s.gamma)
    return opt, sched


class _SigtermFlag:
    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:                                                 # not the main thread
            self._old = None
        return self

    def _handler(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def fit(net: IncrementalNet, objective: Objective, data, indices: torch.Tensor, s: Schedule, *,
        device: torch.device, g: torch.Generator, log: Callable[[str], None], desc: str,
        params=None, state_path: str | Path | None = None, checkpoint_every: int = 0,
        fingerprint: str = "", amp: bool | str = "auto",
        train_mode: Callable[[IncrementalNet], None] | None = None) -> IncrementalNet:
    """Train `net` on data[indices] for s.epochs. `params`: parameters to optimise (default: all that require
    grad). state_path: where a resumable state is kept (every `checkpoint_every` epochs and on SIGTERM); a state
    there is resumed from when its `fingerprint` (what the stage depends on) matches, and ignored otherwise.
    amp: bf16 autocast as ucir.runtime.bf16_training decides. train_mode: sets train/eval per module each epoch
    (default net.train()). A step converts no tensor to a Python value, so on CUDA it never waits for the GPU:
    loss sums, accuracy and the non-finite check stay on the device until the epoch's log line."""
    bf16 = bf16_training(amp, device)
    params = [p for p in (params if params is not None else net.parameters()) if p.requires_grad]
    opt, sched = make_optimizer(params, s)
    start_epoch, skip_batches = 0, 0
    st = load_torch(state_path) if state_path is not None and Path(state_path).exists() else None
    if st is not None and st.get("fingerprint") != fingerprint:
        log(f"{desc}: ignoring a resumable state made by another configuration ({state_path})")
        st = None
    if st is not None:
        net.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        g.set_state(st["generator"])
        start_epoch, skip_batches = st["epoch"], st["batches_done"]
        log(f"{desc}: resumed at epoch {start_epoch + 1}, batch {skip_batches}")

    def save_state(epoch: int, batches_done: int, gen_state: torch.Tensor) -> None:
        if state_path is not None:
            save_torch({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "generator": gen_state, "epoch": epoch, "batches_done": batches_done,
                        "fingerprint": fingerprint}, state_path)

    with _SigtermFlag() as term:
        for epoch in range(start_epoch, s.epochs):
            (train_mode or (lambda m: m.train()))(net)
            gen_state = g.get_state()
            sums: dict[str, torch.Tensor] = {}
            first_bad: dict[str, torch.Tensor] = {}                     # first batch where a term was not finite
            correct = torch.zeros((), device=device)
            seen, t0 = 0, time.perf_counter()
            for b, (x, y) in enumerate(data.batches(indices, s.batch_size, train=True, g=g)):
                if b < skip_batches:                                       # replaying a resumed epoch's draws
                    continue
                with autocast(device, bf16):
                    terms, logits = objective.terms(net, x, y)
                loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in terms.items():
                    v = v.detach()
                    sums[k] = sums.get(k, 0) + v * len(y)
                    bad = first_bad.get(k)
                    if bad is None:                                        # once per term and epoch, not per step
                        bad = torch.full((), -1, device=v.device)
                    first_bad[k] = torch.where((bad < 0) & ~torch.isfinite(v), b, bad)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                if term.set:
                    save_state(epoch, b + 1, gen_state)
                    log(f"{desc}: SIGTERM at epoch {epoch + 1}, batch {b + 1}; resumable state saved")
                    raise Preempted(143)
            skip_batches = 0
            lr = opt.param_groups[0]["lr"]
            sched.step()
            means = {k: float(v) / max(seen, 1) for k, v in sums.items()}
            bad = {k: int(v) for k, v in first_bad.items() if int(v) >= 0}
            if bad:
                first = min(bad.values())
                names = [k for k, v in bad.items() if v == first]
                raise NonFiniteLoss(f"{desc}, epoch {epoch + 1}: loss term {' and '.join(map(repr, names))} "
                                    f"became NaN or infinite at batch {first + 1}")
            dt = time.perf_counter() - t0
            total = sum(means.values())
            log(f"{desc} epoch {epoch + 1}/{s.epochs} lr {lr:.4g} loss {total:.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in means.items())
                + f" acc {100 * float(correct) / max(seen, 1):.2f} img/s {seen / max(dt, 1e-9):.0f}")
            if checkpoint_every and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < s.epochs:
                save_state(epoch + 1, 0, g.get_state())
    if state_path is not None:
        Path(state_path).unlink(missing_ok=True)
    return net
