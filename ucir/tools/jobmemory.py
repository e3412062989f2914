"""The GPU memory one training job needs, from the sizes of the tensors its step creates: what decides how many
jobs share a GPU by default (ucir.devices, UCIR_JOBS_PER_GPU; docs/gpu.md). `make gpu-check` prints it (section
`memory`) and on a GPU also measures a real step."""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..devices import GpuPolicy

# What a CUDA process holds besides its tensors: the context, cuDNN's and cuBLAS's kernels and handles, cuBLAS's
# workspace. An upper estimate for torch 2.x with CUDA's lazy module loading; `make gpu-check` measures a step.
CUDA_OVERHEAD_MIB = 1024


class _LiveBytes(TorchDispatchMode):
    """The bytes of the storages that operators create (not views or in-place results of their inputs), counted
    while each storage lives (torch keeps one Python object per storage for its life, so a finalizer on it runs
    when the memory is freed), and their peak: what an allocator holds for the operators run inside, on any device,
    the meta device included (shapes only, no arithmetic)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self._seen = 0, 0, set()

    def _track(self, t: torch.Tensor) -> None:
        s = t.untyped_storage()
        if id(s) in self._seen:                                            # a view of a storage already counted
            return
        n = s.nbytes()
        self._seen.add(id(s))
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(s, self._free, id(s), n)

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in given:   # not a view, not in place
                self._track(t)
        return out


# (backbone, classes, pixels, MiB of the data set kept on the GPU, what it stands for) of the paper grid's jobs
JOB_SHAPES = (("resnet32", 100, 32, 176, "CIFAR-100: its 60,000 uint8 images live on the GPU"),
              ("resnet18", 1000, 224, 0, "ImageNet: images come from host memory batch by batch"))


def job_memory(backbone: str, classes: int, pixels: int, batch_size: int = 128,
               device: torch.device | str = "meta") -> dict[str, int]:
    """Bytes of one fp32 training step of `backbone` (SGD with momentum, as every stage trains): `params`, and
    `peak`, the most that the step's tensors (gradients, momentum, activations kept for the backward pass and the
    transient ones) hold at once on top of them. Two steps, so the momentum buffers exist in the second."""
    from ..models import build_model
    torch.manual_seed(0)
    net = build_model(backbone, "cosine", classes, 3, False).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, pixels, pixels, device=device)                   # x: N x 3 x H x W
    y = torch.randint(0, classes, (batch_size,), device=device)
    with _LiveBytes() as live:
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            del loss
    return dict(params=sum(p.numel() * p.element_size() for p in net.parameters()), peak=live.peak)


def job_need_mib(backbone: str, classes: int, pixels: int, data_mib: int, batch_size: int = 128) -> int:
    """GPU memory one training job needs: its step's tensors (job_memory), its data on the GPU, CUDA's own."""
    m = job_memory(backbone, classes, pixels, batch_size)
    return (m["params"] + m["peak"]) // 2**20 + data_mib + CUDA_OVERHEAD_MIB


def memory(device: torch.device, batch_size: int = 128) -> None:
    per_gpu = GpuPolicy.from_env().jobs_per_gpu
    for backbone, classes, pixels, data_mib, what in JOB_SHAPES:
        m = job_memory(backbone, classes, pixels, batch_size)
        need = job_need_mib(backbone, classes, pixels, data_mib, batch_size)
        print(f"{backbone} at {pixels} px, batch {batch_size}, {classes} classes: parameters "
              f"{m['params'] / 2**20:.1f} MiB, the step's tensors at their peak {m['peak'] / 2**20:.0f} MiB, data "
              f"{data_mib} MiB ({what}), CUDA {CUDA_OVERHEAD_MIB} MiB: about {need} MiB a job; {per_gpu} jobs per "
              f"GPU (UCIR_JOBS_PER_GPU): {per_gpu * need} MiB")
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory >> 20
            print(f"  this GPU has {total} MiB: room for {total // need} such jobs")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        backbone, classes, pixels = JOB_SHAPES[0][:3]
        m = job_memory(backbone, classes, pixels, batch_size, device)
        print(f"measured on {device}: {backbone}'s step holds {torch.cuda.max_memory_allocated(device) >> 20} MiB "
              f"at its peak ({torch.cuda.max_memory_reserved(device) >> 20} MiB reserved by the caching allocator; "
              f"from tensor sizes: {(m['params'] + m['peak']) >> 20} MiB)")
