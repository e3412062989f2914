"""torchvision's ResNet-18 as a feature extractor (512-d), optionally without the last ReLU (Sec. 4.1)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock


class _NoReluBlock(nn.Module):
    """Wraps torchvision's BasicBlock and returns its output before the final ReLU."""

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.relu(b.bn1(b.conv1(x)))
        return b.bn2(b.conv2(out)) + identity


class ResNet18Features(nn.Module):
    def __init__(self, in_channels: int = 3, last_relu: bool = True):
        super().__init__()
        net = resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        if not last_relu:
            net.layer4[-1] = _NoReluBlock(net.layer4[-1])
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512                                # every backbone has out_dim (ucir/models/__init__.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                                                 # N x 512
