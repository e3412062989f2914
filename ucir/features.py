"""Features and predictions in large batches, without gradients (herding, imprinting, NME, evaluation).

Always in IEEE fp32 (no autocast, no TF32), whatever the run's `precision` says: these numbers make decisions
(argmax ties, herding picks, nearest means) or are stored (imprinted weights, class means), and bf16's step of
~0.004 in a cosine score would change them (docs/method-notes.md, Precision). Training may use TF32 or bf16
(ucir.runtime.training_precision).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .models import IncrementalNet
from .runtime import full_precision

PROGRESS_EVERY = 30.0                    # seconds between progress lines (ucir.train.progress uses it too)


@torch.inference_mode()
def extract(net: IncrementalNet, data, indices: torch.Tensor, batch_size: int, device: torch.device,
            view: Callable[[torch.Tensor], torch.Tensor] | None = None, logits: bool = False,
            log: Callable[[str], None] | None = None, what: str = "images"):
    """Test-transform features (N x D, float32, CPU) of data[indices]; with logits=True also the head's outputs
    (N x C). view: applied to each normalised batch (N x C x H x W) before the network, e.g. NME's flipped copies
    (ucir.evaluate.nme_view). With `log`: how far it is, at least every PROGRESS_EVERY seconds, and when it is
    done."""
    was_training = net.training
    net.eval()
    feats, outs = [], []
    t0 = t_line = time.perf_counter()
    with full_precision():
        for x, _ in data.batches(indices, batch_size, train=False):
            if view is not None:
                x = view(x)
            f = net.features(x)                                            # N x D
            if logits:
                outs.append(net.head(f).cpu())                             # N x C
            feats.append(f.cpu())
            if log is not None and time.perf_counter() - t_line >= PROGRESS_EVERY:
                log(f"features of {what}: {sum(map(len, feats))}/{len(indices)}")
                t_line = time.perf_counter()
    net.train(was_training)
    if log is not None:
        log(f"features of {len(indices)} {what} in {time.perf_counter() - t0:.1f}s")
    f = torch.cat(feats) if feats else torch.zeros(0, net.backbone.out_dim)     # every backbone has out_dim
    if logits:
        return f, (torch.cat(outs) if outs else torch.zeros(0, net.num_classes))
    return f
