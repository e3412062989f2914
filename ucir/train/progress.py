"""What a training job reports while it runs: the epoch's running sums (kept on the device), a line at least every
ucir.features.PROGRESS_EVERY seconds inside long epochs, one line per epoch with the job's ETA, and that epoch's row
of numbers for the job's CSV (and TensorBoard, when asked: EpochRecords).

Reading a device tensor waits for the GPU, so nothing here reads one inside an epoch: the progress lines carry only
host-side counts and clocks, and the losses, accuracy and non-finite check are read once, at the epoch's end.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import features
from ..io import save_text


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the phase, epoch and term."""


class EpochStats:
    """An epoch's loss terms and correct predictions, one row per batch in a device buffer: a step writes its row
    with one kernel (plus the three of its correct count), and the epoch's sums, accuracy and non-finite check are
    read once, at its end. The sums are those of a running float32 sum over the batches in their order (sum +=
    term * batch size), the arithmetic a per-step accumulation on the device would do, so the logged numbers do not
    depend on where the sum is made."""

    def __init__(self, device: torch.device, batches: int, saved: dict | None = None):
        """saved: the rows of the batches done before a resumable state was saved inside the epoch (state()), so
        the epoch's sums, accuracy and non-finite check cover the whole epoch, in batch order, after a resume."""
        self.device, self.batches = device, batches
        self.names: list[str] = []
        self.rows: torch.Tensor | None = None           # batches x (terms + 1): each term, then the correct count
        self.sizes: dict[int, int] = {}                 # batch -> its images, for the batches trained so far
        self.seen = 0
        self._read: tuple[dict[str, float], int, dict[str, int]] | None = None
        if saved is not None and saved["rows"] is not None:
            self.names, self.rows = list(saved["names"]), saved["rows"].to(device)
            self.sizes, self.seen = dict(saved["sizes"]), saved["seen"]

    def state(self) -> dict:
        """The rows so far, as a CPU tensor and builtins (for a resumable state; reading them waits for the GPU,
        which a save does anyway)."""
        return {"names": list(self.names), "rows": self.rows.cpu().clone() if self.rows is not None else None,
                "sizes": dict(self.sizes), "seen": self.seen}

    def add(self, b: int, terms: dict[str, torch.Tensor], logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.rows is None:                            # the terms are known at the first step
            self.names = list(terms)
            self.rows = torch.zeros(self.batches, len(terms) + 1, device=self.device)
        correct = (logits.argmax(1) == y).sum()
        torch.stack([*(v.detach() for v in terms.values()), correct], out=self.rows[b])
        self.sizes[b] = len(y)
        self.seen += len(y)

    def _reduce(self) -> tuple[dict[str, float], int, dict[str, int]]:
        """(loss sums, correct predictions, first non-finite batch of each term that had one), read once."""
        if self._read is None:
            rows = self.rows.cpu().numpy() if self.rows is not None else np.zeros((0, 1), np.float32)
            sums = [np.float32(0)] * len(self.names)
            correct, first_bad = 0, {}
            for b, n in sorted(self.sizes.items()):
                for i, k in enumerate(self.names):
                    v = rows[b, i]
                    sums[i] = np.float32(sums[i] + v * np.float32(n))
                    if not np.isfinite(v):
                        first_bad.setdefault(k, b)
                correct += int(rows[b, -1])
            self._read = dict(zip(self.names, map(float, sums))), correct, first_bad
        return self._read

    def check_finite(self, where: str) -> None:
        bad = self._reduce()[2]
        if bad:
            first = min(bad.values())
            names = [k for k, v in bad.items() if v == first]
            raise NonFiniteLoss(f"{where}: loss term {' and '.join(map(repr, names))} became NaN or infinite at "
                                f"batch {first + 1}")

    def means(self) -> dict[str, float]:
        return {k: v / max(self.seen, 1) for k, v in self._reduce()[0].items()}

    def accuracy(self) -> float:
        return 100 * self._reduce()[1] / max(self.seen, 1)


def clock(seconds: float) -> str:
    """h:mm:ss"""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Lines of one training run (a stage's `fit`) and its per-epoch records. The ETA is the training time left at
    the rate of the images trained so far in this process."""

    def __init__(self, log: Callable[[str], None], desc: str, epochs: int, start_epoch: int, images: int,
                 batches: int):
        self.log, self.desc, self.epochs, self.images, self.batches = log, desc, epochs, images, batches
        self.every = features.PROGRESS_EVERY
        self.record = getattr(log, "record", None)          # a job's log also keeps the epoch rows (EpochRecords)
        if self.record is not None:
            self.record.start(start_epoch)
        self.t_start = time.perf_counter()
        self.left = (epochs - start_epoch) * images          # images still to train in this process
        self.done = 0

    def start_epoch(self, skipped_images: int = 0) -> None:
        self.left -= skipped_images
        self.t_epoch = self.t_line = time.perf_counter()
        self.epoch_images = 0

    def eta(self) -> str:
        rate = self.done / max(time.perf_counter() - self.t_start, 1e-9)
        return clock((self.left - self.done) / rate) if self.done else "?"

    def batch(self, epoch: int, b: int, n: int) -> None:
        """After batch b (0-based) of `n` images: a line when `every` seconds passed since the last one."""
        self.done += n
        self.epoch_images += n
        now = time.perf_counter()
        if now - self.t_line >= self.every and b + 1 < self.batches:
            rate = self.epoch_images / (now - self.t_epoch)
            self.log(f"{self.desc}: batch {b + 1}/{self.batches} of epoch {epoch + 1}/{self.epochs}, "
                     f"{rate:.0f} img/s, eta {self.eta()}")
            self.t_line = now

    def end_epoch(self, epoch: int, lr: float, stats: EpochStats) -> None:
        dt = time.perf_counter() - self.t_epoch
        means = stats.means()
        loss, acc, rate = sum(means.values()), stats.accuracy(), self.epoch_images / max(dt, 1e-9)
        self.log(f"{self.desc} epoch {epoch + 1}/{self.epochs} lr {lr:.4g} loss {loss:.4f} "
                 + " ".join(f"{k} {v:.4f}" for k, v in means.items())
                 + f" acc {acc:.2f} img/s {rate:.0f} {dt:.1f}s eta {self.eta()}")
        if self.record is not None:                         # percentages to 2 decimals, as every CSV of ucir
            self.record(self.desc, {"epoch": epoch + 1, "lr": float(f"{lr:.6g}"), "loss": round(loss, 6),
                                    **{k: round(v, 6) for k, v in means.items()}, "train_acc": round(acc, 2),
                                    "img_per_s": round(rate, 1), "seconds": round(dt, 3)})


class EpochRecords:
    """A training job's per-epoch rows: a CSV (stage, epoch, lr, loss, every loss term, train_acc, img_per_s,
    seconds) and, when `tensorboard` is a folder, TensorBoard event files there (the optional `tensorboard`
    package; `tensorboard --logdir logs/` shows every run side by side). A resumed job keeps the rows of the
    epochs before its resume point and replaces the others.

    A resumable state keeps what kept() returns, the rows and the text of the job's log (`log_path`, the file its
    stdout goes to, ucir.jobs); restore() writes them back in the job that resumes: Snakemake deletes a job's logs,
    this CSV among them, before it runs the job again."""

    def __init__(self, csv_path: str | Path, tensorboard: str | Path | None = None,
                 log_path: str | Path | None = None):
        self.csv_path, self.tensorboard = Path(csv_path), tensorboard
        self.log_path = Path(log_path) if log_path is not None else None
        self.rows: list[dict] = []
        self.writer = None

    def start(self, start_epoch: int) -> None:
        if start_epoch and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= start_epoch]
        else:
            self.rows = []
        if self.tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter     # needs the `tensorboard` extra
            self.writer = SummaryWriter(str(self.tensorboard), purge_step=start_epoch + 1)

    def kept(self) -> dict:
        """The rows so far and the log's text so far (None without a log file): plain builtins."""
        text = None
        if self.log_path is not None and self.log_path.exists():
            sys.stdout.flush()
            sys.stderr.flush()
            text = self.log_path.read_text(errors="replace")
        return {"rows": [dict(r) for r in self.rows], "log": text}

    def restore(self, kept: dict) -> None:
        """Write back what kept() returned: the log's text to stdout (the job's log, which Snakemake emptied), the
        rows to the CSV (start() then keeps those before the resume point)."""
        if kept["log"]:
            sys.stdout.write(kept["log"] if kept["log"].endswith("\n") else kept["log"] + "\n")
            sys.stdout.flush()
        self.rows = list(kept["rows"])
        self._write_csv()

    def __call__(self, stage: str, row: dict) -> None:
        self.rows.append({"stage": stage, **row})
        self._write_csv()
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                    self.writer.add_scalar(f"{stage}/{k}", v, row["epoch"])
            self.writer.flush()

    def _write_csv(self) -> None:
        if not self.rows:                                   # a state saved inside the first epoch
            save_text("", self.csv_path)
            return
        out = io.StringIO(newline="")
        w = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for r in self.rows for k in r)))
        w.writeheader()
        w.writerows(self.rows)
        save_text(out.getvalue(), self.csv_path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
