"""Backbones, heads and the incremental network."""
from __future__ import annotations

import torch
import torch.nn as nn

from .heads import CosineLinear, LinearHead, imprint
from .resnet_cifar import CifarResNet

__all__ = ["CosineLinear", "LinearHead", "imprint", "IncrementalNet", "build_model"]


class IncrementalNet(nn.Module):
    """Backbone + growing head. forward(x) always returns logits (N x C); features(x) the head's input."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)                                            # N x D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))                                 # N x C


def build_backbone(name: str, in_channels: int, last_relu: bool) -> nn.Module:
    if name.startswith("resnet") and name != "resnet18":
        return CifarResNet(int(name[len("resnet"):]), in_channels, last_relu)
    if name == "resnet18":
        from .resnet_imagenet import ResNet18Features  # torchvision is imported only when needed
        return ResNet18Features(in_channels, last_relu)
    raise ValueError(f"unknown backbone {name!r}")


def build_model(backbone: str, head: str, num_classes: int, in_channels: int = 3,
                last_relu: bool = True) -> IncrementalNet:
    net = build_backbone(backbone, in_channels, last_relu)
    if head == "cosine":
        h = CosineLinear(net.out_dim, num_classes)
    elif head == "linear":
        h = LinearHead(net.out_dim, num_classes)
    else:
        raise ValueError(f"unknown head {head!r}")
    return IncrementalNet(net, h)
