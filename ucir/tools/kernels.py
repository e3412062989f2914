"""Kernel launches per training step, counted on the CPU:  python -m ucir.tools.kernels  (also in make bench)

A step on a GPU is launch-bound when the network is small (ResNet-32 at batch 128 keeps an H100 busy for less
time than the host takes to issue its kernels), so the number of kernels a step launches is a measure of its speed
that needs no GPU. `LaunchCounter`, a TorchDispatchMode, sees every ATen operator that reaches a backend, after
autograd (the backward's operators included) and before the backend's own kernels, so the same graph is counted
whether it would run on the CPU or on CUDA. It counts the operators that launch work:

- counted: every operator that computes or copies (convolution, add_, copy_, where, _foreach_mul_, ...), one
  each. A `_foreach_*` operator is one launch here; on CUDA it is one kernel per block of tensors (multi_tensor_apply,
  a few for ResNet-32's parameters), against one kernel per tensor for the for-loop it replaces;
  `_local_scalar_dense` (a tensor read by the host: `.item()`, `float(t)`) is counted too, as the copy it is.
- not counted: views and aliases (the operator's schema says it returns an alias: view, slice, select, t,
  expand, detach, ...), the operators that only allocate or describe (NO_KERNEL: empty, empty_strided, ...),
  composite operators (CompositeImplicitAutograd: conv2d, batch_norm, linear, ...), which the counter decomposes
  so that their constituents are counted in their place (with autograd on, the dispatcher decomposes them before
  the counter sees them; under inference_mode it does not), and what is not ATen (record_function markers).

`step_launches` counts one steady-state step of ucir.train.fit itself (the data's crop/flip/normalise, the
objective with its teacher pass, backward, the optimizer, the epoch statistics) as the difference between a fit
over three batches and one over two, so set-up and per-epoch work cancel out.
"""
from __future__ import annotations

import argparse
import copy
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Operators that allocate or describe a tensor without running a kernel on its data.
NO_KERNEL = frozenset({aten.empty, aten.empty_strided, aten.empty_like, aten.new_empty, aten.new_empty_strided,
                       aten._unsafe_view, aten.lift_fresh, aten.set_, aten.resize_, aten.as_strided_,
                       aten.is_same_size, aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset})


def composite(func) -> bool:
    """Whether an operator is only a composition of others (CompositeImplicitAutograd: conv2d, batch_norm, ...)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")


def launches(func) -> bool:
    """Whether an operator (an OpOverload) counts as a kernel launch (see the module's docstring)."""
    return func.namespace == "aten" and not func.is_view and func.overloadpacket not in NO_KERNEL


class LaunchCounter(TorchDispatchMode):
    """Counts the kernel-launching ATen operators run inside it, per operator name (`ops`) and in all (`total`)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if composite(func):             # reached whole where autograd is off (inference_mode): count its parts
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        if launches(func):
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.ops.values())


METHODS = ("lucir", "icarl")
NAMES = {"lucir": "LUCIR", "icarl": "iCaRL"}


def step_setup(method: str, batch_size: int = 2, device: str | torch.device = "cpu", num_old: int = 50,
               num_classes: int = 100, seed: int = 0):
    """An incremental phase's training step as train_phase sets it up, on random weights: (cfg, net, objective,
    data, indices of three batches). ResNet-32, `num_old` of `num_classes` classes known to the teacher, the
    method's head, losses and frozen rows; the data a synthetic CIFAR-shaped set on `device`."""
    from ..checkpoint import to_device
    from ..config import resolve
    from ..data import DeviceArrays, make_synthetic, spec_for
    from ..models import build_model
    from ..train.objective import Objective
    from ..train.stages import distill_weight
    device = torch.device(device)
    cfg = resolve(method, dict(source="synthetic", num_classes=num_classes, base_classes=num_old,
                               phases=(num_classes - num_old) // 10, device=device.type,
                               train=dict(epochs=1, milestones=[], batch_size=batch_size)))
    torch.manual_seed(seed)
    teacher = to_device(build_model(cfg.backbone, cfg.head, num_old, 3, cfg.last_relu), cfg, device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    net = copy.deepcopy(teacher)
    for p in net.parameters():
        p.requires_grad_(True)
    net.head.add_classes(num_classes - num_old, freeze_old=cfg.head == "cosine" and cfg.freeze_old)
    objective = Objective(cfg, num_old, distill_weight(cfg, num_old, num_classes - num_old), teacher)
    per_class = -(-3 * batch_size // num_classes)
    train, _ = make_synthetic(num_classes, per_class, 1, seed=seed)
    return cfg, net, objective, DeviceArrays(train, spec_for("synthetic"), device), torch.arange(3 * batch_size)


def count_fit(method: str, batches: int, batch_size: int = 2, device: str | torch.device = "cpu") -> LaunchCounter:
    """The launches of ucir.train.fit over `batches` batches (one epoch) of step_setup(method)."""
    from ..train.loop import fit
    cfg, net, objective, data, indices = step_setup(method, batch_size, device)
    with LaunchCounter() as counter:
        fit(net, objective, data, indices[:batches * batch_size], cfg.train, device=torch.device(device),
            g=torch.Generator().manual_seed(0), log=lambda s: None, desc="kernels", precision="fp32")
    return counter


def step_launches(method: str, batch_size: int = 2, device: str | torch.device = "cpu") -> tuple[int, Counter]:
    """Kernel launches of one steady-state training step of `method` (fit over 3 batches minus fit over 2), and
    that step's operators by name."""
    three, two = count_fit(method, 3, batch_size, device), count_fit(method, 2, batch_size, device)
    ops = Counter(three.ops)
    ops.subtract(two.ops)
    return three.total - two.total, +ops


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=2, help="images per step (the count does not depend on it)")
    ap.add_argument("--ops", action="store_true", help="also list each step's operators by count")
    args = ap.parse_args(argv)
    for method in METHODS:
        n, ops = step_launches(method, args.batch_size)
        print(f"kernels per {NAMES[method]} step: {n}", flush=True)
        if args.ops:
            print("  " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))


if __name__ == "__main__":
    main()
