"""Jobs per GPU, measured: N processes on one device, each running ucir's training loop (ucir.tools.bench's
setting: ResNet-32, LUCIR against a teacher) for the same fixed time at once; their images/s summed. One job is
launch-bound on a large GPU (docs/gpus.md), so the total grows with N until the GPU is full.

    python -m ucir.tools.sharing --device cuda --jobs 1 2 4 8 --seconds 20      (make gpu-check runs it)

Each process starts, builds its model and data and trains one epoch to warm up, says `ready`, and waits; when
all N are ready they are told to go together, train for --seconds, and print their images/s. On a GPU every
process gets that GPU alone (CUDA_VISIBLE_DEVICES = its UUID) and takes no GPU slot (ucir.devices' locks): the
check measures the GPU it holds itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..config import ENUMS

REPO = Path(__file__).resolve().parents[2]


def worker(device: str, precision: str, per_class: int, batch_size: int, seconds: float, threads: int) -> None:
    """One of the N processes (--worker): warm up, print `ready`, wait for a line on stdin, train for `seconds`,
    print {"images", "seconds", "rate" (images/s), "start", "end" (time.time())} as JSON."""
    from ..runtime import configure
    from .bench import lucir_setup, train_for
    torch.set_num_threads(threads)
    dev = torch.device(device)
    configure(dev, deterministic=False, precision=precision)
    setup = lucir_setup(dev, per_class, batch_size)
    net = setup[3]()
    train_for(setup, net, dev, precision, 0.0)                                  # warm-up (cudnn autotuning)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    images, took = train_for(setup, net, dev, precision, seconds, seed=1)
    print(json.dumps({"images": images, "seconds": took, "rate": images / took, "start": start,
                      "end": time.time()}), flush=True)


def _started(cmd: list[str], env: dict, err) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            text=True)


def _line(p: subprocess.Popen, err, what: str) -> str:
    line = p.stdout.readline()
    if not line:
        p.wait()
        err.seek(0)
        raise RuntimeError(f"a sharing process ended before {what} (exit {p.returncode}):\n{err.read()[-3000:]}")
    return line


def run_together(device: torch.device, n: int, seconds: float, precision: str = "fp32", per_class: int = 20,
                 batch_size: int = 128, threads: int = 1) -> list[dict]:
    """`n` processes training on `device` at once for `seconds`: each one's report (worker), with "go", the time
    (time.time()) when all were ready and were told to start."""
    env = dict(os.environ)
    target = "cpu"
    if device.type == "cuda":
        from ..devices import gpu_uuid
        env["CUDA_VISIBLE_DEVICES"], target = gpu_uuid(device.index or 0), "cuda:0"
    cmd = [sys.executable, "-m", "ucir.tools.sharing", "--worker", "--device", target, "--precision", precision,
           "--per-class", str(per_class), "--batch-size", str(batch_size), "--seconds", str(seconds),
           "--threads", str(threads)]
    errs = [tempfile.TemporaryFile("w+") for _ in range(n)]
    procs = [_started(cmd, env, e) for e in errs]
    try:
        for p, e in zip(procs, errs):
            if _line(p, e, "it was ready").strip() != "ready":
                raise RuntimeError("a sharing process said something other than `ready`")
        go = time.time()
        for p in procs:                                                     # all ready: go together
            p.stdin.write("go\n")
            p.stdin.flush()
        out = [dict(json.loads(_line(p, e, "it reported its rate")), go=go) for p, e in zip(procs, errs)]
        for p in procs:
            p.wait()
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for e in errs:
            e.close()


def measure(device: torch.device, jobs: list[int], seconds: float, precision: str = "fp32", per_class: int = 20,
            batch_size: int = 128, cpu_threads: int | None = None) -> dict[int, list[float]]:
    """{N: the images/s of each of the N processes} for every N in `jobs`, printed as measured. On the CPU the N
    processes share `cpu_threads` torch threads (default: one per CPU), at least one each; on a GPU each has one."""
    if not jobs or min(jobs) < 1:
        raise ValueError(f"jobs per GPU: {jobs} is not a list of positive counts")
    out = {}
    for n in jobs:
        threads = max(1, (cpu_threads or os.cpu_count() or 1) // n) if device.type == "cpu" else 1
        out[n] = [r["rate"] for r in run_together(device, n, seconds, precision, per_class, batch_size, threads)]
        total = sum(out[n])
        print(f"{n} job(s) on {device}: {total:,.0f} images/s in all, {total / n:,.0f} per job "
              f"({', '.join(f'{r:,.0f}' for r in out[n])}; {seconds:g} s each, {precision}, batch {batch_size})",
              flush=True)
    one = sum(out[min(out)]) / min(out)
    best = max(out, key=lambda k: sum(out[k]))
    print(f"most images/s with {best} job(s): {sum(out[best]) / one:.2f}x one job's")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the processes' device)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long every process trains, all at once")
    ap.add_argument("--precision", default="fp32", choices=ENUMS["precision"])
    ap.add_argument("--per-class", type=int, default=20, help="images per class (100 classes)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="--worker: torch threads")
    ap.add_argument("--worker", action="store_true", help="one of the N processes (started by the others)")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.device, args.precision, args.per_class, args.batch_size, args.seconds, args.threads)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    measure(device, args.jobs, args.seconds, args.precision, args.per_class, args.batch_size)


if __name__ == "__main__":
    main()
