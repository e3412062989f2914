"""The training loop of every stage: SGD over the trainable parameters with MultiStepLR (Sec. 4.1), one batch at a
time: forward (the stage's Objective), backward, step, bookkeeping. Resuming and saving (ucir.train.state) and the
epoch's sums, non-finite check and log lines (ucir.train.progress) live in helpers, so the loop reads top to
bottom. A step converts no tensor to a Python value, so on CUDA it never waits for the GPU, and it launches as few
kernels as its arithmetic allows (ucir.tools.kernels counts them): the optimizer steps every parameter at once
(foreach), the epoch's statistics are one row per step, BatchNorm's batch counters are added once per epoch
(DeferredBatchCount), and the teacher runs without autograd."""
from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Schedule
from ..models import IncrementalNet
from ..runtime import autocast, bf16_training, training_precision
from .objective import Objective
from .progress import EpochStats, NonFiniteLoss, Progress
from .state import DeferredBatchCount, Preempted, Resumable, StopSignals

__all__ = ["NonFiniteLoss", "Objective", "Preempted", "fit", "make_optimizer"]


def make_optimizer(params, s: Schedule):
    """SGD with momentum and weight decay (Sec. 4.1), stepping all parameters with one `_foreach_*` operator per
    update (a few kernels on CUDA, one per parameter for the for-loop; torch picks foreach on CUDA itself, this
    makes the CPU do the same arithmetic: identical results, tests/test_launches.py), and MultiStepLR."""
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(s.milestones), gamma=s.gamma)
    return opt, sched


def fit(net: IncrementalNet, objective: Objective, data, indices: torch.Tensor, s: Schedule, *,
        device: torch.device, g: torch.Generator, log: Callable[[str], None], desc: str,
        state_path: str | Path | None = None, checkpoint_every: int = 0, checkpoint_minutes: float = 0.0,
        fingerprint: str = "", precision: str = "fp32",
        train_mode: Callable[[IncrementalNet], None] | None = None) -> IncrementalNet:
    """Train the parameters of `net` that require grad on data[indices] for s.epochs. state_path: where a resumable
    state is kept (at least every `checkpoint_minutes` of training, every `checkpoint_every` epochs, and on SIGTERM
    or SIGINT, after which the job ends: ucir.train.state), resumed from when its `fingerprint` (what the stage
    depends on) matches. precision: fp32, tf32 or bf16 (ucir.runtime.training_precision; it stops where the device
    lacks it). train_mode: sets train/eval per module each epoch (default net.train()). `log` may also keep the
    epochs' rows and its text (its `record`)."""
    bf16 = bf16_training(precision)
    opt, sched = make_optimizer([p for p in net.parameters() if p.requires_grad], s)
    state = Resumable(state_path, fingerprint, log, desc, checkpoint_every, checkpoint_minutes)
    start_epoch, skip, partial = state.resume(net, opt, sched, g)
    batches = math.ceil(len(indices) / s.batch_size)
    progress = Progress(log, desc, s.epochs, start_epoch, len(indices), batches)
    with StopSignals() as signals, training_precision(device, precision):
        for epoch in range(start_epoch, s.epochs):
            (train_mode or IncrementalNet.train)(net)
            gen_state = g.get_state()                   # this epoch's draws, replayed by a job that resumes in it
            stats = EpochStats(device, batches, partial if skip else None)
            progress.start_epoch(skipped_images=min(skip * s.batch_size, len(indices)))
            with DeferredBatchCount(net) as bn_count:
                for b, (x, y) in enumerate(data.batches(indices, s.batch_size, train=True, g=g)):
                    if b < skip:                        # done before the state was saved
                        continue
                    with autocast(device, bf16):
                        terms, logits = objective.terms(net, x, y)
                    opt.zero_grad(set_to_none=True)
                    functools.reduce(operator.add, terms.values()).backward()
                    opt.step()
                    bn_count.step()
                    stats.add(b, terms, logits, y)
                    progress.batch(epoch, b, len(y))
                    # host-side flag and clock only: no wait for the GPU unless a save is due (the last batch: below)
                    if b + 1 < batches and (signals.caught or state.time_due()):
                        with bn_count.folded():
                            state.checkpoint(net, opt, sched, gen_state, epoch, b + 1, stats.state(), signals)
            skip = 0
            lr = opt.param_groups[0]["lr"]
            sched.step()
            stats.check_finite(f"{desc}, epoch {epoch + 1}")
            progress.end_epoch(epoch, lr, stats)
            if epoch + 1 < s.epochs and (signals.caught or state.time_due() or state.epochs_due(epoch + 1)):
                state.checkpoint(net, opt, sched, g.get_state(), epoch + 1, 0, None, signals)
    state.finish()
    return net
