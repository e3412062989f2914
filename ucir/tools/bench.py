"""Benchmark: ucir's training loop against a naive reference loop, side by side in one process.

    python -m ucir.tools.bench --device auto [--precision fp32|tf32|bf16]          (make bench [PRECISION=...])

Both loops train the same ResNet-32 with the same LUCIR incremental objective (CE + less-forget + margin ranking
against a teacher, 50 old of 100 classes) on the same synthetic CIFAR-100-shaped data, with the same batch size.
The naive loop feeds the model the way the official code does: a map-style Dataset of HWC uint8 arrays with
per-sample PIL transforms (RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize) through a DataLoader with
2 workers, fp32, NCHW, teacher under no_grad. ucir's loop (ucir.train.fit) keeps the data on the device as uint8
and crops/flips/normalises whole batches there, runs the network channels_last (CPU and CUDA), trains in the
precision asked for (--precision, default fp32, a configuration's default: the rate `make plan BENCH=...` prices; the
output's `precision:` line names it) and on CUDA adds cudnn autotuning. Both loops run in this one
process, so both get ucir's allocator setting (freed memory kept for reuse, ucir.runtime.retain_freed_memory);
`--default-malloc` leaves glibc's defaults, to measure that setting on its own in a second run.
Rounds alternate (ucir, naive, ucir, ...). Then the kernel launches of one LUCIR and one iCaRL training step
(ucir.tools.kernels, counted on the CPU); the last line is `ratio: X.XX`, ucir over naive, of median images/s.
"""
from __future__ import annotations

import argparse
import copy
import glob
import os
import re
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import losses as L
from ..checkpoint import to_device
from ..config import ENUMS, resolve
from ..data import DeviceArrays, make_synthetic, spec_for
from ..models import build_model
from ..devices import pick_device
from ..runtime import configure
from ..train.loop import Objective, fit, make_optimizer
from .kernels import METHODS, NAMES, step_launches


class NaiveCifar(Dataset):
    """Per-sample PIL pipeline over HWC uint8 arrays, as torchvision's CIFAR datasets and the official code do."""

    def __init__(self, images_hwc: np.ndarray, targets: np.ndarray, spec):
        from torchvision import transforms as T
        self.images, self.targets = images_hwc, targets
        self.tf = T.Compose([T.RandomCrop(spec.size, padding=spec.pad), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(spec.mean, spec.std)])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image
        return self.tf(Image.fromarray(self.images[i])), int(self.targets[i])


def naive_epoch(net, objective: Objective, loader: DataLoader, opt, device) -> None:
    net.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            t_feats = objective.teacher.features(x)
        feats = net.features(x)
        cos = net.head.cosine(feats)
        loss = (L.classification(net.head(feats), y) + objective.lam * L.less_forget(feats, t_feats)
                + L.margin_ranking(cos, y, objective.num_old, objective.cfg.K, objective.cfg.margin))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)                                  # the GPU being measured, not GPU 0


def lucir_setup(device: torch.device, per_class: int, batch_size: int):
    """The benchmark's setting, for ucir's loop alone: ResNet-32 (channels_last), LUCIR's incremental objective
    against a 50-class teacher, 100 classes of synthetic CIFAR-shaped images, all on `device`. Returns (cfg, the
    data, the objective, a function that builds the same fresh student each time)."""
    cfg = resolve("lucir", dict(source="synthetic", num_classes=100, base_classes=50, phases=5, device=device.type,
                                train=dict(epochs=1, milestones=[], batch_size=batch_size)))
    train, _ = make_synthetic(100, per_class, 1, seed=0)
    torch.manual_seed(0)
    teacher = to_device(build_model("resnet32", "cosine", 50, 3, False), cfg, device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def fresh():
        torch.manual_seed(1)
        return to_device(build_model("resnet32", "cosine", 100, 3, False), cfg, device)
    return cfg, DeviceArrays(train, spec_for("synthetic"), device), Objective(cfg, 50, 5.0, teacher), fresh


def train_for(setup, net, device: torch.device, precision: str, seconds: float, seed: int = 0) -> tuple[int, float]:
    """Epochs of ucir's loop (ucir.train.fit) over the setup's data, one after the other on `net`, until `seconds`
    have passed (at least one): (images trained, seconds taken)."""
    cfg, data, objective, _ = setup
    indices = torch.arange(len(data.targets))
    images, t0 = 0, time.perf_counter()
    while images == 0 or time.perf_counter() - t0 < seconds:
        fit(net, objective, data, indices, cfg.train, device=device, g=torch.Generator().manual_seed(seed + images),
            log=lambda s: None, desc="bench", precision=precision)
        _sync(device)
        images += len(indices)
    return images, time.perf_counter() - t0


def precision_rates(device: torch.device, precisions, per_class: int, batch_size: int, rounds: int) -> dict:
    """Median training images/s of ucir's loop in each precision, over `rounds` epochs after one of warm-up."""
    setup = lucir_setup(device, per_class, batch_size)
    out = {}
    for precision in precisions:
        net = setup[3]()
        train_for(setup, net, device, precision, 0.0)                         # warm-up (cudnn autotuning)
        out[precision] = statistics.median(n / s for n, s in (train_for(setup, net, device, precision, 0.0, r)
                                                              for r in range(1, rounds + 1)))
    return out


def _demo_wall_time() -> str:
    """Elapsed time of the latest complete demo run in this folder, as Snakemake logged it."""
    for log in sorted(glob.glob(".snakemake/log/*.snakemake.log"), key=os.path.getmtime, reverse=True):
        text = open(log).read()
        elapsed = re.search(r"^Elapsed time: (\S+)", text, re.M)
        if "configs/demo.yaml" in text and elapsed and "Nothing to be done" not in text:
            return f"{elapsed.group(1)} (h:mm:ss, {log})"
    return "no complete demo run found here (run `make demo` first)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--per-class", type=int, default=20, help="images per class (100 classes)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the naive loop (official: 2)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's allocator defaults (ucir's jobs keep freed memory for reuse)")
    ap.add_argument("--phase-epochs", type=int, default=1, help="epochs of the timed incremental phase")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: one per CPU)")
    ap.add_argument("--precision", default="fp32", choices=ENUMS["precision"],
                    help="ucir's loop trains in this precision (a configuration's `precision`; default fp32)")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    configure(device, deterministic=False, precision=args.precision, keep_freed_memory=not args.default_malloc)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    spec = spec_for("synthetic")
    train, _ = make_synthetic(100, args.per_class, 1, seed=0)
    n = len(train)
    cfg = resolve("lucir", dict(source="synthetic", num_classes=100, base_classes=50, phases=5,
                                device=device.type, train=dict(epochs=1, milestones=[],
                                                               batch_size=args.batch_size)))
    torch.manual_seed(0)
    teacher = build_model("resnet32", "cosine", 50, 3, False).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def fresh():
        torch.manual_seed(1)
        net = build_model("resnet32", "cosine", 100, 3, False).to(device)
        return net

    lam = 5.0
    dev_data = DeviceArrays(train, spec, device)
    indices = torch.arange(n)
    hwc = train.images.permute(0, 2, 3, 1).contiguous().numpy()
    loader = DataLoader(NaiveCifar(hwc, train.targets.numpy(), spec), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{torch.get_num_threads()} threads, {n} images/round, batch {args.batch_size}, ResNet-32, "
          f"LUCIR objective (CE + LF + MR, teacher with 50 classes), "
          f"{'glibc default allocator' if args.default_malloc else 'freed memory kept for reuse'}")
    print(f"precision: {args.precision} (ucir's loop; the naive loop is fp32 as the official code)")

    ucir_teacher = to_device(copy.deepcopy(teacher), cfg, device)   # .to() works in place: keep the naive one NCHW
    speeds = {"ucir": [], "naive": []}
    for r in range(args.rounds + 1):                                      # round 0 warms up both loops
        for name in ("ucir", "naive"):
            net = fresh()
            _sync(device)
            t0 = time.perf_counter()
            if name == "ucir":
                net = to_device(net, cfg, device)
                fit(net, Objective(cfg, 50, lam, ucir_teacher), dev_data, indices, cfg.train, device=device,
                    g=torch.Generator().manual_seed(r), log=lambda s: None, desc="bench", precision=args.precision)
            else:
                opt, _ = make_optimizer(net.parameters(), cfg.train)
                naive_epoch(net, Objective(cfg, 50, lam, teacher), loader, opt, device)
            _sync(device)
            ips = n / (time.perf_counter() - t0)
            if r > 0:
                speeds[name].append(ips)
            print(f"round {r}{' (warm-up)' if r == 0 else ''} {name:5s} {ips:9.1f} images/s", flush=True)

    for name, v in speeds.items():
        print(f"{name:5s} images/s: min {min(v):.1f}  median {statistics.median(v):.1f}  max {max(v):.1f}")

    # one incremental phase through the real stage function
    from ..data import load_run_data
    from ..train import train_base, train_phase
    from ..exemplars import select_exemplars
    pcfg = resolve("lucir", dict(dataset="bench", source="synthetic", num_classes=100, base_classes=50, phases=5,
                                 train_per_class=args.per_class, test_per_class=10, device=device.type,
                                 precision=args.precision,
                                 base_train=dict(epochs=1, milestones=[], batch_size=args.batch_size),
                                 train=dict(epochs=args.phase_epochs, milestones=[], batch_size=args.batch_size)))
    data = load_run_data(pcfg, device)
    quiet = lambda s: None  # noqa: E731
    base = train_base(pcfg, data, device, quiet)
    memory = select_exemplars(pcfg, 0, base, None, data, device, quiet)
    _sync(device)
    t0 = time.perf_counter()
    train_phase(pcfg, 1, base, memory, data, device, quiet)
    _sync(device)
    print(f"one incremental phase (train_phase: imprint + {args.phase_epochs} epoch(s) on "
          f"{len(data.train_indices(50, 60)) + len(memory['index'])} images): {time.perf_counter() - t0:.1f} s")
    print(f"demo pipeline wall time: {_demo_wall_time()}")
    for method in METHODS:                                                 # counted on the CPU: the same graph on CUDA
        print(f"kernels per {NAMES[method]} step: {step_launches(method)[0]} (ucir.tools.kernels)", flush=True)
    ratio = statistics.median(speeds["ucir"]) / statistics.median(speeds["naive"])
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
