"""Checkpoints: plain dicts of tensors and builtins, loaded with weights_only=True and strict=True."""
from __future__ import annotations

from typing import Any

import torch

from .config import RunConfig
from .data import class_names, class_order, spec_for
from .models import IncrementalNet, build_model

# 2 adds `class_names` and `input` (what ucir.inference needs to use a model outside the pipeline); format 1
# checkpoints lack them and still load (ucir.inference takes them from the dataset).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint that does not belong to the configuration asking for it."""


def make_checkpoint(net: IncrementalNet, cfg: RunConfig, phase: int, num_old: int, config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """config: the settings the model depends on (ucir.deps.stage_settings of the stage that trained it).
    class_names: the dataset's names by original class id (output i is class_order[i]); input: how an image
    becomes the network's input (the test transform: normalisation, size, and for folder data the resize before
    the centre crop)."""
    net.head.merge()
    ckpt = {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "arch": {"backbone": cfg.backbone, "head": cfg.head, "last_relu": cfg.last_relu,
                 "in_channels": spec_for(cfg.source).channels, "num_classes": net.num_classes},
        "phase": phase,
        "class_order": class_order(cfg.num_classes, cfg.seed),
        "classes_seen": net.num_classes,
        "num_old": num_old,
        "config": config,
        "class_names": class_names(cfg.source, cfg.root, cfg.num_classes),
        "input": input_spec(cfg.source),
    }
    ckpt.update(extra or {})
    return ckpt


def input_spec(source: str) -> dict[str, Any]:
    """The test transform of a data source as builtins: mean and std per channel, image size, and the resize
    before the centre crop for folder data (None for in-memory data, used at their size)."""
    spec = spec_for(source)
    return {"channels": spec.channels, "size": spec.size, "mean": list(spec.mean), "std": list(spec.std),
            "resize": None if spec.in_memory else spec.test_resize}


def check_compatible(ckpt: dict[str, Any], cfg: RunConfig, phase: int) -> None:
    """Refuse a checkpoint from another configuration (class count, backbone, head, class order, phase)."""
    if ckpt.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint format {ckpt.get('format_version')!r}, expected one of "
                              f"{READABLE_VERSIONS}")
    arch = ckpt["arch"]
    want = {"backbone": cfg.backbone, "head": cfg.head, "last_relu": cfg.last_relu,
            "in_channels": spec_for(cfg.source).channels, "num_classes": cfg.classes_seen(phase)}
    for key, value in want.items():
        if arch[key] != value:
            raise CheckpointError(f"checkpoint has {key}={arch[key]!r} but the configuration needs {value!r} "
                                  f"(phase {phase}); it was made by another configuration")
    if ckpt["class_order"] != class_order(cfg.num_classes, cfg.seed):
        raise CheckpointError(f"checkpoint class order differs from seed {cfg.seed}'s order")
    if ckpt["phase"] != phase:
        raise CheckpointError(f"checkpoint is for phase {ckpt['phase']}, expected phase {phase}")


def model_from_checkpoint(ckpt: dict[str, Any], cfg: RunConfig | None = None, phase: int | None = None,
                          device: torch.device | str = "cpu") -> IncrementalNet:
    if cfg is not None:
        check_compatible(ckpt, cfg, ckpt["phase"] if phase is None else phase)
    a = ckpt["arch"]
    net = build_model(a["backbone"], a["head"], a["num_classes"], a["in_channels"], a["last_relu"])
    net.load_state_dict(ckpt["model"], strict=True)
    return net.to(device)


def to_device(net: IncrementalNet, cfg: RunConfig, device: torch.device) -> IncrementalNet:
    """Move to the device; channels_last when enabled (faster convolutions on CUDA and on CPU alike, measured in
    docs/benchmarks.md); torch.compile of the backbone when asked for (in place, so state_dict keys and checkpoints
    are unchanged)."""
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.compile:
        net.backbone.compile()
    return net


def load_model(ckpt: dict[str, Any], cfg: RunConfig, phase: int, device: torch.device) -> IncrementalNet:
    """A checkpoint's network, checked against the configuration, on the device."""
    return to_device(model_from_checkpoint(ckpt, cfg, phase), cfg, device)
