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

from .config import FOLDER_SOURCES, RunConfig
from .data.loaders import decode_workers
from .deps import EXEMPLARS
from .devices import describe, pick_device
from .runtime import configure, prepare_environment
from .train.progress import EpochRecords

# TorchInductor's cache, shared by every job of a workflow (relative to the working directory, where results/ is).
COMPILE_CACHE = "results/.cache/torchinductor"


class JobLog:
    """A job's log lines, stamped with the time and the seconds since the job started; `record` keeps a training
    job's per-epoch rows (ucir.train.progress.EpochRecords)."""

    def __init__(self, t0: float, record: EpochRecords | None = None):
        self.t0, self.record = t0, record

    def __call__(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)


@dataclass
class Job:
    cfg: RunConfig
    device: torch.device
    log: JobLog
    workers: int = 1               # DataLoader workers for folder data
    exemplars_per_class: int | None = None    # the memory's size after the phase (selection, evaluation)
    prepared: str | None = None    # the dataset's prepared arrays (ucir.data.prepared), mapped by load_run_data


def loader_workers(workers: int | None, threads: int) -> int:
    """DataLoader workers for folder data: the setting, else one per CPU the job was given but the one the training
    process keeps (ucir.data.loaders.decode_workers)."""
    return workers if workers is not None else decode_workers(threads)


@contextlib.contextmanager
def job(run_settings: dict, execution: dict, log_path: str, threads: int = 1,
        compile_cache: str | None = COMPILE_CACHE, prepared: str | None = None,
        inference: bool = False) -> Iterator[Job]:
    """Redirect stdout/stderr to the job's log (line-buffered, so `tail -f` follows it), set torch threads and
    the device, and log any exception with its traceback before re-raising it. run_settings: the job's params (what
    its output depends on, ucir.deps.stage_settings: RunConfig fields and, for the stages that keep or read the
    memory, its size `exemplars_per_class`); execution: how it runs (ucir.grid.execution_settings).
    A training job's epochs also go to <log>.csv beside the log, and with `tensorboard: true` to TensorBoard event
    files in the folder <log> without its suffix. prepared: the folder of the dataset's prepared arrays (Job.prepared).
    inference: the job only runs the network forward (selection, evaluation): no cuDNN autotuning, which would
    time every convolution's algorithms for the few batches of each shape such a job runs."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        t0 = time.perf_counter()
        try:
            torch.set_num_threads(max(1, threads))
            settings = dict(run_settings)
            per_class = settings.pop(EXEMPLARS, None)
            cfg = RunConfig.from_dict({**settings, **execution}, check=False)
            prepare_environment(cfg.deterministic, compile_cache if cfg.compile else None)   # before CUDA starts
            records = EpochRecords(Path(log_path).with_suffix(".csv"),
                                   Path(log_path).with_suffix("") if cfg.tensorboard else None, log_path)
            j = Job(cfg, torch.device("cpu"), JobLog(t0, records), loader_workers(cfg.workers, threads), per_class,
                    prepared)
            j.device = pick_device(cfg.device, j.log)
            configure(j.device, cfg.deterministic, cfg.precision)
            if inference:
                torch.backends.cudnn.benchmark = False
            numerics = (f"training precision {cfg.precision}, evaluation fp32 (IEEE)" if "precision" in settings
                        else "fp32 (IEEE; no training in this job)")
            j.log(f"device {describe(j.device)}, {threads} thread(s), torch {torch.__version__}, {numerics}, "
                  f"deterministic: {cfg.deterministic}, cuDNN autotuning: "
                  f"{torch.backends.cudnn.benchmark if j.device.type == 'cuda' else 'n/a'}"
                  + (f", dataset mapped from {prepared}" if prepared else "")
                  + (f", {j.workers} loader workers" if cfg.source in FOLDER_SOURCES else ""))
            yield j
            j.log("done")
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            raise
        finally:
            if "records" in locals():
                records.close()
