"""`make gpu-check`: the first thing to run on a new GPU box. Sized for 5-10 minutes on one H100.

    python -m ucir.tools.gpucheck                          # the check, on the GPU a job would take, or it fails
    python -m ucir.tools.gpucheck --device cpu --tiny      # a CPU dry run of the same code, in about a minute

Sections, each printed as it completes:
  environment   python, torch, its CUDA build and kernel architectures, the driver's CUDA version, NVML, every
                visible GPU (name, compute capability, memory, bf16), the GPU variables this process was given,
                every sign of an NVIDIA GPU found without torch, and why torch cannot use CUDA if it cannot
  device        the GPU a job with `device: auto` takes (ucir.devices.pick_device) and the precisions it trains in;
                no GPU, or one torch cannot use, fails the check (`--device cpu` is a dry run)
  memory        the memory one training job needs, ResNet-32 at 32 px and ResNet-18 at 224 px, batch 128, from
                tensor sizes (the meta device), against what UCIR_JOBS_PER_GPU jobs need of each GPU; on a GPU, the
                ResNet-32 step's measured peak too
  bench         `python -m ucir.tools.bench` on that device: ucir's training loop against a naive one
  determinism   one epoch with `deterministic: true`, twice, compared bit for bit, and its speed against the default
  folder data   how many images/s one DataLoader worker decodes (generated JPEGs of ImageNet's size) against how
                many ResNet-18 trains at 224 px on the device: the workers and CPUs per GPU ImageNet needs
  precisions    training images/s of ucir's loop (bench's setting) in every precision the device trains in
  schedule      the CIFAR-100-shaped protocol (synthetic images, 100 classes, B50 + 10 phases of 5, ResNet-32) through
                the stage functions, once per precision the device trains in (fp32; tf32 and bf16 from compute
                capability 8.0; bf16 on the CPU): wall time, the 160-epoch extrapolation, average incremental accuracy
  jobs per GPU  1, 2, 4, 8 processes training on the device at once for a fixed time, their images/s summed
                (ucir.tools.sharing)
  tests         the CUDA-marked tests (pytest -m cuda; they skip without CUDA)
Everything it printed, with a summary of the measurements, goes to a page ready to commit, docs/gpu-check/<GPU>.md
(ucir.tools.gpurecord; --record PATH). The last line is `gpu-check: ok` or `gpu-check: FAILED (<sections>)`, and
for a CPU dry run `gpu-check: CPU dry run ok (this was not a GPU check)`; the exit status says the same. Sections
that would start after --budget-s seconds are skipped (and say so), so that the check ends in time.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from ..devices import (GpuProbe, arch_problem, cuda_problem, describe, driver_cuda_version, gpu_evidence, gpu_uuid,
                       gpus_given, pick_device, release_gpu)
from ..runtime import PRECISIONS, configure, precision_problem, prepare_environment
from . import bench, sharing
from .gpurecord import Record, default_path
from .jobmemory import memory

PAPER_EPOCHS = 160                                                        # Sec. 4.1: CIFAR-100, every phase
DRY_RUN = "(this was not a GPU check)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(probe: GpuProbe | None = None) -> None:
    print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
    print(f"kernel architectures of this build: {' '.join(torch.cuda.get_arch_list()) or 'none (CPU-only build)'}")
    drv = driver_cuda_version(probe)
    print("NVIDIA driver: " + ("none found (libcuda.so.1)" if drv is None
                               else f"supports CUDA up to {drv[0]}.{drv[1]}"))
    try:
        import pynvml
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        print(f"NVML: driver {version.decode() if isinstance(version, bytes) else version}, "
              f"{pynvml.nvmlDeviceGetCount()} GPU(s) on the machine")
        pynvml.nvmlShutdown()
    except ImportError:
        print("NVML: not installed (pip install nvidia-ml-py, or the package's `gpu` extra): GPU choice on a "
              "workstation then goes by lock files alone, without free memory")
    except Exception as e:                                                 # installed, but no NVML library
        print(f"NVML: unavailable ({e})")
    given = gpus_given()
    print(f"GPU variables given to this process: {', '.join(f'{k}={v}' for k, v in given.items()) or 'none'}")
    print(f"signs of an NVIDIA GPU, found without torch: {'; '.join(gpu_evidence(probe=probe)) or 'none'}")
    problem = cuda_problem(probe)
    if problem is not None:
        print(f"torch cannot use CUDA: {problem}")
        return
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        bf16 = (p.major, p.minor) >= (8, 0)
        print(f"GPU {i}: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory >> 20} MiB, "
              f"{p.multi_processor_count} SMs, bf16 training {'yes' if bf16 else 'no (fp32)'}, "
              f"kernels: {arch_problem(i) or 'ok'}")
    print(f"CPUs: {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)")


def determinism(device: torch.device, per_class: int, batch_size: int) -> bool:
    from ..train.loop import fit
    cfg, data, objective, fresh = bench.lucir_setup(device, per_class, batch_size)
    idx = torch.arange(len(data.targets))

    def run(deterministic: bool):
        configure(device, deterministic)
        net = fresh()
        _sync(device)
        t0 = time.perf_counter()
        fit(net, objective, data, idx, cfg.train, device=device, g=torch.Generator().manual_seed(0),
            log=lambda s: None, desc="determinism")
        _sync(device)
        return {k: v.detach().cpu() for k, v in net.state_dict().items()}, len(idx) / (time.perf_counter() - t0)

    try:
        run(False)                                                         # warm-up (cudnn autotuning)
        a, ips_det = run(True)
        b, _ = run(True)
        _, ips = run(False)
    finally:
        configure(device, False)
    same = all(torch.equal(a[k], b[k]) for k in a)
    print(f"deterministic: true, two runs of one epoch ({len(idx)} images, batch {batch_size}): "
          f"{'bit-identical' if same else 'DIFFERENT'} weights; {ips_det:.0f} images/s against {ips:.0f} with "
          f"deterministic: false ({ips_det / ips:.2f}x)")
    return same


def precision_rates(device: torch.device, args) -> dict[str, float]:
    rates = bench.precision_rates(device, trainable(device), args.bench_per_class, args.batch_size,
                                  args.bench_rounds)
    for p, r in rates.items():
        print(f"{p}: {r:,.0f} training images/s (ucir's loop, ResNet-32, LUCIR against a teacher, batch "
              f"{args.batch_size}, median of {args.bench_rounds} epoch(s) of {args.bench_per_class * 100} images)"
              + (f", {r / rates['fp32']:.2f}x fp32" if p != "fp32" else ""))
    return rates


def trainable(device: torch.device) -> list[str]:
    """The precisions `device` can train in (ucir.runtime.precision_problem)."""
    return [p for p in PRECISIONS if precision_problem(p, device) is None]


def schedule(device: torch.device, args, precisions: list[str]) -> dict[str, dict]:
    """The protocol once per training precision, through the stage functions a workflow run's jobs call."""
    from ..config import resolve
    from ..data import load_run_data
    from ..evaluate import evaluate_phase
    from ..exemplars import select_exemplars
    from ..metrics import average_incremental_accuracy
    from ..train import train_base, train_phase
    e = args.epochs
    milestones = sorted({m for m in (e * 80 // PAPER_EPOCHS, e * 120 // PAPER_EPOCHS) if 0 < m < e})
    sched = dict(epochs=e, milestones=milestones, batch_size=args.batch_size)
    base = dict(dataset="gpucheck", source="synthetic", num_classes=100, base_classes=50, phases=10,
                train_per_class=args.per_class, test_per_class=args.test_per_class, backbone=args.backbone,
                device=device.type, base_train=sched, train=sched)
    data = load_run_data(resolve("lucir", base), device)
    print(f"protocol: 100 classes, B50 + 10 phases of 5, {args.backbone}, {e} epoch(s) per phase (the paper: "
          f"{PAPER_EPOCHS}), batch {args.batch_size}, {args.per_class} training / {args.test_per_class} test images "
          f"per class, 20 exemplars per class; training precisions {', '.join(precisions)}")
    results = {}
    for name in precisions:
        cfg = resolve("lucir", dict(base, precision=name))
        stamps: dict[str, list[float]] = {}

        def log(msg: str) -> None:
            if " epoch " in msg:
                stamps.setdefault(msg.split(" epoch ")[0], []).append(time.perf_counter())
        quiet = lambda s: None  # noqa: E731
        train_time, extra, cnn, nme = 0.0, 0.0, [], []
        _sync(device)
        t_all = time.perf_counter()
        ckpt, memory = None, None
        for k in range(cfg.phases + 1):
            t0 = time.perf_counter()
            ckpt = train_base(cfg, data, device, log) if k == 0 else train_phase(cfg, k, ckpt, memory, data,
                                                                                   device, log)
            _sync(device)
            took = time.perf_counter() - t0
            train_time += took
            ticks = [t0] + stamps.get(f"phase {k}", [])
            steady = statistics.median(b - a for a, b in zip(ticks[1:-1], ticks[2:])) if len(ticks) > 2 else took
            extra += (PAPER_EPOCHS - e) * steady                           # the epochs not run, at the steady rate
            memory = select_exemplars(cfg, k, ckpt, memory, data, device, quiet)
            m = evaluate_phase(cfg, k, ckpt, memory, data, device)
            cnn.append(m["cnn"]["all"])
            nme.append(m["nme"]["all"] if m.get("nme") else float("nan"))
        wall = time.perf_counter() - t_all
        r = dict(wall=wall, train=train_time, estimate=wall + extra, cnn=average_incremental_accuracy(cnn),
                 nme=average_incremental_accuracy(nme))
        results[name] = r
        print(f"{name}: wall {r['wall']:.1f} s (training {r['train']:.1f} s, exemplar selection and evaluation "
              f"{r['wall'] - r['train']:.1f} s); at {PAPER_EPOCHS} epochs per phase: {r['estimate'] / 60:.1f} min; "
              f"average incremental accuracy CNN {r['cnn']:.2f} %, NME {r['nme']:.2f} %", flush=True)
    for name in [p for p in results if p != "fp32"]:
        d = {k: results[name][k] - results["fp32"][k] for k in ("cnn", "nme")}
        print(f"{name} - fp32: CNN {d['cnn']:+.2f}, NME {d['nme']:+.2f} points (one class order, synthetic images, "
              f"{e} epoch(s): shows that {name} training works, not how it compares on real data)")
    return results


def decode_rate(n: int = 200, size: tuple[int, int] = (500, 375), seed: int = 0) -> dict[str, float]:
    """Images per second that one process (one DataLoader worker) turns from JPEG files into normalised 224-pixel
    tensors, with the training transform (RandomResizedCrop + flip) and the test transform (Resize 256 + centre
    crop). The images are smooth random fields saved at quality 90 and `size` pixels, about ImageNet's average
    (roughly 400 x 350 at 110 kB)."""
    import tempfile

    import numpy as np
    from PIL import Image

    from ..data.loaders import _FolderDataset, FolderImages
    from ..data.specs import spec_for
    from ..data.splits import FolderSplit
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        samples = []
        for i in range(n):
            low = rng.integers(0, 256, (size[1] // 25 + 1, size[0] // 25 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(low).resize(size, Image.BICUBIC)
            noise = rng.integers(-20, 21, (size[1], size[0], 3))
            img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
            path = os.path.join(tmp, f"{i}.JPEG")
            img.save(path, quality=90)
            samples.append((path, 0))
        images = FolderImages(FolderSplit(samples, torch.zeros(n, dtype=torch.int64)), spec_for("imagenet"),
                              torch.device("cpu"), workers=0)
        ds: _FolderDataset = images._dataset
        kb = sum(os.path.getsize(p) for p, _ in samples) / n / 1024
        out = {"kB per image": kb}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)                                           # as in a DataLoader worker
        try:
            for name, seed_of in (("train", lambda i: i), ("test", lambda i: -1)):
                t0 = time.perf_counter()
                for i in range(n):
                    ds[(i, seed_of(i))]
                out[name] = n / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)
    return out


def resnet18_rate(device: torch.device, batch_size: int, steps: int) -> float:
    """Training images per second of ResNet-18 at 224 pixels on `device` (channels_last, in the fastest precision
    the device has: bf16 where it can), data already on the device: what the folder data must keep up with."""
    from ..models import build_model
    from ..runtime import autocast
    net = build_model("resnet18", "cosine", 100, 3, False).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch_size,), device=device)
    bf16 = "bf16" in trainable(device)

    def step():
        with autocast(device, bf16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def folder_data(device: torch.device, args) -> None:
    rate = decode_rate(args.decode_images)
    gpu = resnet18_rate(device, args.resnet18_batch, args.resnet18_steps)
    workers = math.ceil(gpu / rate["train"])
    print(f"one DataLoader worker: {rate['train']:.0f} images/s with the training transform, {rate['test']:.0f} "
          f"with the test transform (JPEG {rate['kB per image']:.0f} kB, 500 x 375 -> 224 x 224)")
    print(f"ResNet-18 at 224 px trains at {gpu:.0f} images/s here (batch {args.resnet18_batch}, "
          f"{'bf16' if 'bf16' in trainable(device) else 'fp32'}): about {workers} workers keep it fed, i.e. "
          f"`workers: {workers}` and {workers + 1} CPUs per GPU (docs/gpu.md)")


def cuda_tests(device: torch.device) -> bool:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "tests").is_dir():
        print("no tests/ folder next to the package (an installed copy): skipped")
        return True
    env = dict(os.environ)
    if device.type == "cuda":                                              # the tests run on the GPU checked here
        env["CUDA_VISIBLE_DEVICES"] = gpu_uuid(device.index)
        release_gpu()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
                       cwd=repo, env=env)
    return r.returncode in (0, 5)                                          # 5: no test collected


def main(argv=None, probe: GpuProbe | None = None) -> int:
    """`probe`: where pick_device looks for a GPU that torch cannot use (tests fake it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto, cuda: check a GPU, or fail; cpu: a dry run of the same code, not a GPU check")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes everywhere (for a CPU dry run)")
    ap.add_argument("--per-class", type=int, default=500, help="schedule: training images per class (CIFAR: 500)")
    ap.add_argument("--test-per-class", type=int, default=100, help="schedule: test images per class")
    ap.add_argument("--epochs", type=int, default=3, help="schedule: epochs per phase")
    ap.add_argument("--backbone", default="resnet32")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--bench-per-class", type=int, default=100, help="bench: images per class (100 classes)")
    ap.add_argument("--bench-rounds", type=int, default=3)
    ap.add_argument("--decode-images", type=int, default=200, help="folder data: JPEGs decoded to time a worker")
    ap.add_argument("--resnet18-batch", type=int, default=128)
    ap.add_argument("--resnet18-steps", type=int, default=20)
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per CPU; --tiny: 1)")
    ap.add_argument("--budget-s", type=float, default=540, help="skip sections that would start after this")
    ap.add_argument("--jobs-per-gpu", type=int, nargs="+", default=[1, 2, 4, 8],
                    help="jobs per GPU: how many processes train side by side on the device, each count in turn")
    ap.add_argument("--sharing-seconds", type=float, default=15, help="jobs per GPU: how long each count trains")
    ap.add_argument("--record", metavar="PATH", help="where the record goes (default docs/gpu-check/<GPU name>.md; "
                    "a CPU dry run: results/gpu-check/cpu-dry-run.md)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.per_class, args.test_per_class, args.epochs, args.backbone = 2, 1, 1, "resnet8"
        args.batch_size, args.bench_per_class, args.bench_rounds = 16, 2, 1
        args.decode_images, args.resnet18_batch, args.resnet18_steps = 8, 2, 1
        args.jobs_per_gpu, args.sharing_seconds = [n for n in args.jobs_per_gpu if n <= 2] or [1], 1.0
        args.threads = args.threads or 1
    record = Record(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    prepare_environment(deterministic=True)                  # before CUDA starts, for the determinism section
    t_start = time.perf_counter()
    failed, skipped = [], []

    def section(name: str, fn) -> None:
        print(f"\n== {name}", flush=True)
        if name != "device" and time.perf_counter() - t_start > args.budget_s:
            with record.capture(name):                                    # the record says so too
                print(f"skipped: past the {args.budget_s:.0f} s budget")
            skipped.append(name)
            return
        t0 = time.perf_counter()
        with record.capture(name):
            try:
                ok = fn()
            except Exception:
                traceback.print_exc(file=sys.stdout)
                ok = False
        if ok is False:
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)

    section("environment", lambda: environment(probe))
    device = torch.device("cpu")

    def choose():
        nonlocal device
        device = pick_device(args.device, probe=probe)
        if device.type != "cuda" and args.device != "cpu":
            raise RuntimeError("no NVIDIA GPU here (no GPU variable, device node, driver library or NVML GPU; see "
                               "the environment section): a GPU check needs one. For a CPU dry run of the same "
                               "code: make gpu-check GPU_CHECK=\"--device cpu --tiny\"")
        configure(device, deterministic=False)
        print(f"device: {describe(device)}; it trains in precision {', '.join(trainable(device))} (a "
              f"configuration's `precision`, default fp32)")
    section("device", choose)
    if "device" in failed:
        print("\ngpu-check: FAILED (device)")
        return 1
    section("memory", lambda: memory(device))
    if not args.no_bench:
        section("bench", lambda: bench.main(["--device", device.type, "--per-class", str(args.bench_per_class),
                                             "--rounds", str(args.bench_rounds), "--batch-size",
                                             str(args.batch_size), "--threads", str(torch.get_num_threads())]))
    section("determinism", lambda: determinism(device, args.bench_per_class, args.batch_size))
    section("folder data", lambda: folder_data(device, args))
    section("precisions", lambda: bool(record.keep("precisions", precision_rates(device, args))))
    section("schedule", lambda: bool(record.keep("schedule", schedule(device, args, trainable(device)))))
    section("jobs per GPU", lambda: bool(record.keep("jobs per GPU", sharing.measure(
        device, args.jobs_per_gpu, args.sharing_seconds, "fp32", args.bench_per_class, args.batch_size,
        torch.get_num_threads()))))
    if not args.no_tests:
        section("tests", lambda: cuda_tests(device))
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    verdict = f"FAILED ({', '.join(failed)})" if failed else "ok"
    line = f"gpu-check: {verdict}" if device.type == "cuda" else f"gpu-check: CPU dry run {verdict} {DRY_RUN}"
    path = record.write(args.record or default_path(device), device, line)
    print(f"record of what was measured: {path}")
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
