"""The per-sample PIL pipeline, replaying the random draws of the batched device path.

Same interface as DeviceArrays.batches. Every image goes through torchvision's functional PIL ops (pad 4 with
zeros, crop, horizontal flip, to_tensor, normalize) one by one, with the crop offsets and flips drawn from the same
generator in the same order as ucir.data.augment. It exists to show that the device-resident, batched path
changes speed and not arithmetic (tests/test_speed_paths.py), and as a readable statement of what that path does.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from ucir.data.augment import index_batches
from ucir.data.specs import DataSpec
from ucir.data.splits import ArraySplit


class PILArrays:
    def __init__(self, split: ArraySplit, spec: DataSpec, device: torch.device):
        self.split, self.spec, self.device = split, spec, device

    def _one(self, img_u8: torch.Tensor, dy: int | None, dx: int | None, flip: bool) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        pil = TF.to_pil_image(img_u8)                                     # C x H x W uint8 -> PIL
        if dy is not None:
            h, w = img_u8.shape[1:]
            pil = TF.crop(TF.pad(pil, self.spec.pad, fill=0), dy, dx, h, w)
            if flip:
                pil = TF.hflip(pil)
        return TF.normalize(TF.to_tensor(pil), self.spec.mean, self.spec.std)

    def batches(self, indices: torch.Tensor, batch_size: int, train: bool,
                g: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, draws in index_batches(indices, batch_size, train, self.spec.pad, g):
            if draws is not None:
                xs = [self._one(self.split.images[i], int(a), int(b), bool(f))
                      for i, a, b, f in zip(idx.tolist(), *draws)]
            else:
                xs = [self._one(self.split.images[i], None, None, False) for i in idx.tolist()]
            yield torch.stack(xs).to(self.device), self.split.targets[idx].to(self.device)
