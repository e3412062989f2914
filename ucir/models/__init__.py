"""Backbones, heads and the incremental network.

What every backbone provides. A backbone (ucir.config.BACKBONES names each: a family of BACKBONE_FAMILIES and its
arguments) is an nn.Module built as `family(in_channels=..., last_relu=..., **arguments)` that provides:
    out_dim: int           the length D of its feature vector (the head's input), set in __init__;
    forward(x) -> N x D    features of a batch of images x (N x in_channels x H x W), float;
    last_relu=False        drops the ReLU after its last block, so features take both signs (Sec. 4.1: needed under
                           cosine normalisation).
build_backbone checks out_dim; tests/test_models.py checks the rest for every name of BACKBONES.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import BACKBONES
from .heads import CosineLinear, LinearHead, imprint
from .resnet_cifar import CifarResNet

__all__ = ["BACKBONE_FAMILIES", "HEAD_CLASSES", "CosineLinear", "LinearHead", "imprint", "IncrementalNet",
           "build_backbone", "build_model"]


def _resnet18(in_channels: int, last_relu: bool) -> nn.Module:
    from .resnet_imagenet import ResNet18Features  # torchvision is imported only when needed
    return ResNet18Features(in_channels, last_relu)


# Every backbone family: name -> its constructor (in_channels, last_relu, **the arguments BACKBONES gives it).
BACKBONE_FAMILIES = {
    "cifar_resnet": CifarResNet,                  # He et al. 2016's 6n+2 CIFAR ResNets (ResNet-32: Sec. 4.1)
    "resnet18": _resnet18,                        # torchvision's ResNet-18 (ImageNet, Sec. 4.1)
}
# Every head: name (the names of ucir.config.HEADS; tests/test_models.py checks they agree) -> its class
# (in_features, out_features).
HEAD_CLASSES = {"cosine": CosineLinear, "linear": LinearHead}


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
    """The backbone `name` of ucir.config.BACKBONES, checked to provide out_dim."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: one of {', '.join(BACKBONES)} (ucir.config.BACKBONES)")
    family, arguments = BACKBONES[name]
    if family not in BACKBONE_FAMILIES:
        raise ValueError(f"backbone {name!r}: unknown family {family!r}: one of {', '.join(BACKBONE_FAMILIES)} "
                         "(ucir.models.BACKBONE_FAMILIES)")
    net = BACKBONE_FAMILIES[family](in_channels=in_channels, last_relu=last_relu, **arguments)
    dim = getattr(net, "out_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"backbone {name!r} ({type(net).__name__}) must set out_dim, the length of its feature "
                         f"vector, to a positive int in __init__ (what every backbone provides: ucir/models/"
                         f"__init__.py); it has {dim!r}")
    return net


def build_model(backbone: str, head: str, num_classes: int, in_channels: int = 3,
                last_relu: bool = True) -> IncrementalNet:
    if head not in HEAD_CLASSES:
        raise ValueError(f"unknown head {head!r}: one of {', '.join(HEAD_CLASSES)}")
    net = build_backbone(backbone, in_channels, last_relu)
    return IncrementalNet(net, HEAD_CLASSES[head](net.out_dim, num_classes))
