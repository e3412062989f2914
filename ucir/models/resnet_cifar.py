"""CIFAR ResNets (He et al. 2016, 6n+2 layers; ResNet-32: 3 stages x 5 BasicBlocks, 16/32/64 channels, 64-d
feature). `last_relu=False` drops the ReLU after the last block, as Sec. 4.1 requires under cosine
normalisation, so features take both signs."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = relu
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)     # in place: same values, one tensor less
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out, inplace=True) if self.relu else out


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 32, in_channels: int = 3, last_relu: bool = True):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth={depth}: must be 6n+2 with n >= 1 (8, 14, 20, 32, ...)")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                last = stage == 2 and i == n - 1
                blocks.append(BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1, relu=last_relu or not last))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = 64                                 # every backbone has out_dim (ucir/models/__init__.py)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.blocks(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)               # N x 64
