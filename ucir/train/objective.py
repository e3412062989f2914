"""What one training step minimises (Eq. 9 and the baselines' objectives): the weighted loss terms of a batch, one
branch per distillation kind with its teacher pass. The losses themselves are the pure functions of ucir.losses."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import losses as L
from ..config import DISTILLS, RunConfig
from ..models import IncrementalNet


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
            with torch.no_grad():
                t_feats = teacher.features(x)                              # N x D
            out["lf"] = self.lam * L.less_forget(feats.float(), t_feats.float())
        elif cfg.distill == "cosine_scores":                               # Eq. 5
            with torch.no_grad():
                t_cos = teacher.head.cosine(teacher.features(x))           # N x C_old, unscaled
            cos = net.head.cosine(feats).float()
            out["cs"] = self.lam * L.cosine_score_distillation(cos[:, :old], t_cos.float(), cfg.cs_loss)
        elif cfg.distill == "kd":                                          # Eq. 2
            with torch.no_grad():
                t_logits = teacher(x)                                      # N x C_old
            out["kd"] = self.lam * L.lwf_distillation(logits.float(), t_logits[:, :old].float(), cfg.kd_T)
        elif cfg.distill != "none":
            raise ValueError(f"no term for distill={cfg.distill!r} in Objective.terms (ucir/train/objective.py); "
                             f"the distillations: {', '.join(DISTILLS)} (ucir.config.DISTILLS)")
        if cfg.margin_ranking:                                             # Eq. 8
            cos = net.head.cosine(feats).float() if cos is None else cos
            out["mr"] = cfg.mr_weight * L.margin_ranking(cos, y, old, cfg.K, cfg.margin, cfg.mr_reduction)
        return out, logits
