"""A training stage's resumable state: saved every `checkpoint_every` epochs and on SIGTERM, resumed by the next
attempt of the same job, and only by a job that depends on the same settings and inputs (its fingerprint)."""
from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import load_torch, save_torch


class Preempted(SystemExit):
    """SIGTERM arrived; the resumable state was saved."""


class Resumable:
    """The state file of one stage (none when `path` is None). resume() restores the net, optimizer, scheduler and
    data generator and says where to go on; save() writes them atomically; finish() removes the file."""

    def __init__(self, path: str | Path | None, fingerprint: str, log: Callable[[str], None], desc: str):
        self.path = Path(path) if path is not None else None
        self.fingerprint, self.log, self.desc = fingerprint, log, desc

    def resume(self, net, opt, sched, g: torch.Generator) -> tuple[int, int]:
        """(epoch, batches already done in it) to start from: (0, 0) without a usable state."""
        if self.path is None or not self.path.exists():
            return 0, 0
        st = load_torch(self.path)
        if st.get("fingerprint") != self.fingerprint:
            self.log(f"{self.desc}: ignoring a resumable state made by another configuration ({self.path})")
            return 0, 0
        net.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        g.set_state(st["generator"])
        self.log(f"{self.desc}: resumed at epoch {st['epoch'] + 1}, batch {st['batches_done']}")
        return st["epoch"], st["batches_done"]

    def save(self, net, opt, sched, gen_state: torch.Tensor, epoch: int, batches_done: int) -> None:
        if self.path is not None:
            save_torch({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "generator": gen_state, "epoch": epoch, "batches_done": batches_done,
                        "fingerprint": self.fingerprint}, self.path)

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class DeferredBatchCount:
    """BatchNorm counts its training batches in a buffer (num_batches_tracked += 1: one kernel per layer and step,
    33 for ResNet-32) that only a layer with momentum=None reads. For the layers with a momentum (ucir's: 0.1) the
    buffer is detached while the epoch's steps run and the steps are added to it at once when they end, so the
    checkpoints hold the same counts. Only layers in training mode count (the frozen backbone of CBF does not)."""

    def __init__(self, net: torch.nn.Module):
        self.layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                       and m.training and m.track_running_stats and m.momentum is not None
                       and m.num_batches_tracked is not None]
        self.counts = [m.num_batches_tracked for m in self.layers]
        self.steps = 0

    def __enter__(self):
        for m in self.layers:
            m.num_batches_tracked = None
        return self

    def step(self) -> None:
        self.steps += 1

    def __exit__(self, *exc):
        for m, count in zip(self.layers, self.counts):
            m.num_batches_tracked = count
        if self.steps and self.counts:
            torch._foreach_add_(self.counts, self.steps)


class SigtermFlag:
    """Turns SIGTERM (a SLURM time limit or preemption) into a flag the training loop checks after each step."""

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
