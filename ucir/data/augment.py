"""Batched augmentation on tensors (Sec. 4.1: random crop with 4-pixel padding + horizontal flip), run on the
training device as cifar10-airbench does, instead of per-sample PIL transforms.

Random parameters are drawn on the CPU from a seeded generator and then applied on the device, so one seed gives
the same crops and flips on every device, and a per-sample reference pipeline can replay them exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crop_flip(n: int, pad: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets (dy, dx) in [0, 2*pad] and flip flags for n images."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return dy, dx, flip


def epoch_draws(indices: torch.Tensor, train: bool, pad: int,
                g: torch.Generator | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """An epoch's order and its crop/flip draws, all at once: `indices` shuffled when training, then the offsets and
    flips of every image in that order (None at test time). Every loader draws from `g` in this order, which is
    what makes the device path and the per-sample reference pipeline identical; drawing the whole epoch at once
    lets the device path copy it to the GPU in one transfer instead of one per batch."""
    if not train:
        return indices, None
    indices = indices[torch.randperm(len(indices), generator=g)]
    return indices, draw_crop_flip(len(indices), pad, g)


def index_batches(indices: torch.Tensor, batch_size: int, train: bool, pad: int, g: torch.Generator | None):
    """Chunks of the epoch's order, each with its crop/flip draws (None at test time); see epoch_draws."""
    order, draws = epoch_draws(indices, train, pad, g)
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        yield order[sl], (None if draws is None else tuple(d[sl] for d in draws))


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by `pad`, crop back to the input size at (dy, dx), then flip where `flip`. x: N x C x H x W."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))                                  # N x C x H+2p x W+2p
    rows = torch.arange(h, device=dev)[None, :] + dy.to(dev)[:, None]      # N x H
    cols = torch.arange(w, device=dev)[None, :] + dx.to(dev)[:, None]      # N x W
    cols = torch.where(flip.to(dev)[:, None], cols.flip(1), cols)          # horizontal flip = reversed columns
    n_idx = torch.arange(n, device=dev)[:, None, None, None]
    c_idx = torch.arange(c, device=dev)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(x_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> float, (x/255 - mean) / std. mean, std: C x 1 x 1 on x's device."""
    return (x_u8.float().div_(255) - mean) / std


def hflip(x: torch.Tensor) -> torch.Tensor:
    """A real horizontal flip of N x C x H x W images (nme_flip: horizontal). The official CIFAR code's "flipped
    version" of the exemplars reverses the colour channels instead, which is what it does, kept as nme_flip:
    channels (ucir.evaluate.nme_view)."""
    return x.flip(-1)
