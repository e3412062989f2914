"""Classifier heads that grow by phase.

CosineLinear implements Eq. 4: logits = eta * <theta_bar_i, f_bar(x)>, with eta one learnable scalar (initialised
to 1) and no bias. Rows can be frozen (Sec. 3.3: "we propose to fix the old class embeddings"): frozen rows live in
a buffer, so they get no gradient and no optimizer (weight decay, momentum) ever touches them. LinearHead is the
plain Eq. 3 layer of the baselines.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CosineLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, sigma: bool = True):
        super().__init__()
        self.in_features = in_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.register_buffer("frozen", torch.empty(0, in_features))
        self.sigma = nn.Parameter(torch.tensor(1.0)) if sigma else None     # the paper's eta

    @property
    def out_features(self) -> int:
        return self.frozen.shape[0] + self.weight.shape[0]

    @property
    def num_frozen(self) -> int:
        return self.frozen.shape[0]

    def full_weight(self) -> torch.Tensor:
        return torch.cat([self.frozen, self.weight]) if self.num_frozen else self.weight

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled cosine scores, N x C, in [-1, 1]."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.full_weight(), dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(x)
        return cos if self.sigma is None else self.sigma * cos             # Eq. 4

    @torch.no_grad()
    def add_classes(self, new: int | torch.Tensor, freeze_old: bool = False) -> None:
        """Append rows for new classes: these rows (e.g. imprinted), or that many drawn as at initialisation (on
        the CPU, so every device draws the same); with freeze_old every existing row moves into the frozen buffer."""
        if isinstance(new, int):
            bound = 1.0 / math.sqrt(self.in_features)
            new = torch.empty(new, self.in_features).uniform_(-bound, bound)
        new_weight = new.to(self.weight)
        if freeze_old:
            self.frozen = self.full_weight().detach().clone()
            self.weight = nn.Parameter(new_weight.clone())
        else:
            self.weight = nn.Parameter(torch.cat([self.full_weight(), new_weight]))
            self.frozen = self.frozen[:0]

    @torch.no_grad()
    def merge(self) -> None:
        """All rows back into one trainable parameter (the checkpoint form)."""
        self.weight = nn.Parameter(self.full_weight().detach().clone())
        self.frozen = self.frozen[:0]

    def row_norms(self) -> torch.Tensor:
        return self.full_weight().detach().norm(dim=1)


class LinearHead(nn.Linear):
    """Eq. 3: theta_i^T f(x) + b_i. Grows by appending freshly initialised rows."""

    @torch.no_grad()
    def add_classes(self, new: int | torch.Tensor, freeze_old: bool = False) -> None:
        """Append rows for new classes: these rows (with fresh biases), or that many freshly initialised."""
        if freeze_old:
            raise ValueError("freeze_old: only a cosine head keeps frozen rows (Sec. 3.3)")
        num_new = new if isinstance(new, int) else len(new)
        fresh = nn.Linear(self.in_features, num_new).to(self.weight)
        weight = fresh.weight if isinstance(new, int) else new.to(self.weight)
        self.weight = nn.Parameter(torch.cat([self.weight, weight]))
        self.bias = nn.Parameter(torch.cat([self.bias, fresh.bias]))
        self.out_features += num_new

    def merge(self) -> None:  # nothing is frozen in a linear head
        pass

    def row_norms(self) -> torch.Tensor:
        return self.weight.detach().norm(dim=1)


def imprint(features: torch.Tensor, labels: torch.Tensor, classes: list[int], scale: float) -> torch.Tensor:
    """Imprinted embeddings for new classes: for each class, the L2-normalised mean of its L2-normalised
    features, times `scale` (the mean norm of the old embeddings). features: N x D; returns len(classes) x D."""
    f = F.normalize(features.double(), dim=1)
    rows = [F.normalize(f[labels == c].mean(dim=0), dim=0) for c in classes]
    return (torch.stack(rows) * scale).float()
