"""Features and predictions in large batches, without gradients (herding, imprinting, NME, evaluation)."""
from __future__ import annotations

import torch

from .data.augment import hflip
from .models import IncrementalNet
from .runtime import autocast


@torch.inference_mode()
def extract(net: IncrementalNet, data, indices: torch.Tensor, batch_size: int, device: torch.device,
            amp: bool = True, flip: bool = False, logits: bool = False):
    """Test-transform features (N x D, float32, CPU) of data[indices]; with logits=True also the head's outputs
    (N x C). flip=True extracts features of horizontally flipped images."""
    was_training = net.training
    net.eval()
    feats, outs = [], []
    for x, _ in data.batches(indices, batch_size, train=False):
        if flip:
            x = hflip(x)
        with autocast(device, amp):
            f = net.features(x)
            if logits:
                outs.append(net.head(f).float().cpu())
        feats.append(f.float().cpu())
    net.train(was_training)
    dim = getattr(net.backbone, "out_dim", 0)
    f = torch.cat(feats) if feats else torch.zeros(0, dim)
    if logits:
        return f, (torch.cat(outs) if outs else torch.zeros(0, net.num_classes))
    return f
