"""What every workflow job does around its stage: log to its log file, pick threads and device, record
provenance. The workflow's scripts call `job(...)` with plain values; nothing here reads Snakemake objects."""
from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import RunConfig
from .runtime import configure, pick_device


@dataclass
class Job:
    cfg: RunConfig
    device: torch.device
    t0: float

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)


@contextlib.contextmanager
def job(run_settings: dict, log_path: str, threads: int = 1) -> Iterator[Job]:
    """Redirect stdout/stderr to the job's log (line-buffered, so `tail -f` follows it), set torch threads and
    the device, and log any exception with its traceback before re-raising it."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        t0 = time.perf_counter()
        try:
            torch.set_num_threads(max(1, threads))
            cfg = RunConfig.from_dict(run_settings)
            device = pick_device(cfg.device)
            configure(device, cfg.deterministic)
            j = Job(cfg, device, t0)
            j.log(f"device {device}, {threads} thread(s), torch {torch.__version__}")
            yield j
            j.log("done")
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            raise
