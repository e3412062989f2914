"""A training stage's resumable state: saved at least every `checkpoint_minutes` minutes of training, every
`checkpoint_every` epochs, and when SIGTERM (a Slurm time limit or preemption) or SIGINT (Ctrl-C) arrives; resumed by
the next attempt of the same job, and only by a job that depends on the same settings and inputs (its fingerprint).

The state also keeps the job's record so far, its log's text and its epoch rows (ucir.train.progress.EpochRecords):
Snakemake deletes a job's logs before it runs the job again, and the resumed job writes them back."""
from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import load_torch, remove_stale_temporaries, save_torch


class Preempted(SystemExit):
    """SIGTERM or SIGINT arrived; the resumable state was saved. The exit status is 128 + the signal's number, as
    the shell reports a process the signal ended (143, 130)."""


class Resumable:
    """The state file of one stage (none when `path` is None). resume() restores the net, optimizer, scheduler, data
    generator and the job's record and says where to go on; checkpoint() writes them atomically (and ends the job
    when a signal arrived); time_due() and epochs_due() say when one is due; finish() removes the file.

    The clock is the host's (time.monotonic), read after every step: it never waits for the GPU."""

    def __init__(self, path: str | Path | None, fingerprint: str, log: Callable[[str], None], desc: str,
                 every_epochs: int = 0, minutes: float = 0.0):
        self.path = Path(path) if path is not None else None
        self.fingerprint, self.log, self.desc = fingerprint, log, desc
        self.every_epochs, self.seconds = every_epochs, minutes * 60
        self.record = getattr(log, "record", None)          # the job's log text and epoch rows (EpochRecords)
        self.t_saved = time.monotonic()
        if self.path is not None:
            for p in remove_stale_temporaries(self.path):
                log(f"{desc}: removed {p.name}, left by a save that was killed")

    def resume(self, net, opt, sched, g: torch.Generator) -> tuple[int, int, dict | None]:
        """(epoch, batches already done in it, that epoch's running sums) to start from: (0, 0, None) without a
        usable state."""
        if self.path is None or not self.path.exists():
            return 0, 0, None
        st = load_torch(self.path)
        if st.get("fingerprint") != self.fingerprint:
            self.log(f"{self.desc}: ignoring a resumable state made by another configuration ({self.path})")
            return 0, 0, None
        net.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        g.set_state(st["generator"])
        if self.record is not None and st.get("record") is not None:
            self.log(f"{self.desc}: the log of the interrupted attempt, kept in {self.path.name}, follows")
            self.record.restore(st["record"])
        self.log(f"{self.desc}: resumed at epoch {st['epoch'] + 1}, batch {st['batches_done']}")
        self.t_saved = time.monotonic()
        return st["epoch"], st["batches_done"], st.get("epoch_stats")

    def time_due(self) -> bool:
        """checkpoint_minutes have passed since the last save (or the start of training in this process)."""
        return self.path is not None and self.seconds > 0 and time.monotonic() - self.t_saved >= self.seconds

    def epochs_due(self, epochs_done: int) -> bool:
        return self.every_epochs > 0 and epochs_done % self.every_epochs == 0

    def checkpoint(self, net, opt, sched, gen_state: torch.Tensor, epoch: int, batches_done: int,
                   epoch_stats: dict | None, signals: StopSignals) -> None:
        """Save the state after `batches_done` batches of `epoch` (0-based); gen_state: the generator at the start of
        that epoch; epoch_stats: its running sums so far (EpochStats.state), when inside it. Then, when SIGTERM or
        SIGINT arrived, end the job (Preempted). The line saying why it saves is logged before the state is written,
        so the log kept in it says why the job stopped; a signal that arrives during the write is saved again."""
        caught = signals.name
        at = f"at epoch {epoch + 1}, batch {batches_done}" if batches_done else f"after epoch {epoch}"
        if caught is not None:
            self.log(f"{self.desc}: {caught} {at}: " + ("saving the resumable state, then stopping"
                                                       if self.path is not None else "stopping (no state file)"))
        elif self.time_due():
            self.log(f"{self.desc}: saving the resumable state {at} (every {self.seconds / 60:g} minutes)")
        if self.path is not None:
            save_torch({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "generator": gen_state, "epoch": epoch, "batches_done": batches_done,
                        "epoch_stats": epoch_stats, "fingerprint": self.fingerprint,
                        "record": self.record.kept() if self.record is not None else None}, self.path)
        self.t_saved = time.monotonic()
        if caught is None and signals.name is not None:                   # arrived during the write
            self.checkpoint(net, opt, sched, gen_state, epoch, batches_done, epoch_stats, signals)
        signals.stop()

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
        self.steps = 0

    @contextlib.contextmanager
    def folded(self):
        """The counts so far added and the buffers back in the layers while a resumable state is saved inside the
        epoch (a state_dict without them would not load), then detached again for the epoch's remaining steps."""
        self.__exit__()
        try:
            yield
        finally:
            self.__enter__()


class StopSignals:
    """Turns SIGTERM (a Slurm time limit or preemption) and SIGINT (Ctrl-C) into a flag the training loop checks
    after each step: Resumable.checkpoint saves the resumable state, then stop() ends the job. A second SIGINT stops
    at once, as Ctrl-C does in any Python program (KeyboardInterrupt), without saving."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.caught: int | None = None                      # the signal's number
        self._old: dict[int, object] = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:                                             # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.caught == signal.SIGINT:
            raise KeyboardInterrupt
        self.caught = signum

    @property
    def name(self) -> str | None:
        return signal.Signals(self.caught).name if self.caught is not None else None

    def stop(self) -> None:
        """After the state was saved: end the job when a signal arrived."""
        if self.caught is not None:
            raise Preempted(128 + self.caught)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            if old is not None:
                signal.signal(sig, old)
