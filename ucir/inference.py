"""A trained model outside the pipeline: `load` one phase's network with its class names, its input normalisation
and, where the run kept exemplars, its nearest-mean-of-exemplars (NME) classifier; `Model.scores` classifies images
with both (`python -m ucir.predict` is the command line; the README's "Using a trained model" shows both).

The NME class means are recomputed when the model is loaded, not stored: memory.pt holds the exemplars' indices
into the run's training split, and their features are extracted with the loaded network exactly as the evaluation
does (ucir.evaluate.exemplar_means, with the run's `nme_flip` read from metrics.json beside memory.pt). The means,
and so the predictions, are those behind metrics.json, and no stage of the pipeline writes anything new. The cost:
the exemplars' training images must be at hand. The synthetic set is regenerated from the checkpoint's settings;
Fashion-MNIST, CIFAR-100 and ImageNet need `root`, the data folder the run used. `nme=False` loads the CNN alone,
without any data.

Class names and normalisation come from the checkpoint (format 2); a format-1 checkpoint lacks them, and they are
taken from the dataset (ucir.data.class_names: CIFAR-100 and ImageNet then need `root`) and its data spec.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import input_spec, model_from_checkpoint, to_device
from .config import NME_FLIPS, RunConfig, nme_flip_name
from .data import ArraySplit, DataSpec, FolderSplit, class_names, load_run_data, on_device
from .evaluate import exemplar_means, has_exemplars_of_all, nme_scores
from .features import extract
from .grid import EVALUATIONS
from .io import load_json, load_torch
from .models import IncrementalNet

MODEL_FILES = ("model_cbf.pt", "model.pt")        # a phase's final model: class-balance finetuned where the run did
MEMORY_FILE = "memory.pt"
METRICS_FILES = tuple(f"{name}.json" for name in EVALUATIONS.values())     # metrics.json, metrics_noflip.json, ...
DATA_KEYS = ("dataset", "source", "num_classes", "seed", "train_per_class")   # what finds the exemplars' images
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class LoadError(ValueError):
    """A model, memory or setting that cannot be found or used; the message names the path or the argument."""


@dataclass
class Files:
    """Where a phase's model, memory and metrics lie (memory and metrics None where there are none)."""
    model: Path
    memory: Path | None
    metrics: list[Path] = field(default_factory=list)


@dataclass
class Scores:
    """Scores of N images for the C classes a model has seen: `cnn` the head's outputs (η x cosine for a cosine
    head, Eq. 4), `nme` minus the distance to each class mean (higher = nearer; None without exemplars)."""
    cnn: torch.Tensor                          # N x C
    nme: torch.Tensor | None                   # N x C


@dataclass
class Model:
    """A phase's model ready for inference (what `load` returns): `scores` classifies images with the CNN and,
    where the run kept exemplars, the NME classifier; `classes[i]` names output i of both."""
    net: IncrementalNet                        # eval mode, on `device`
    classes: list[str]                         # name of output i
    class_ids: list[int]                       # the dataset's class id of output i (the run's class order)
    mean: tuple[float, ...]                    # per channel, applied to pixels in [0, 1]
    std: tuple[float, ...]
    channels: int
    size: int                                  # the network's input is size x size
    resize: int | None                         # folder data: shorter side resized to this, then centre crop
    phase: int
    class_means: torch.Tensor | None           # C x D, the NME classifier; None where the run kept no exemplars
    device: torch.device
    files: Files
    batch_size: int = 512

    def spec(self) -> DataSpec:
        return DataSpec(self.channels, self.size, self.mean, self.std, in_memory=self.resize is None,
                        test_resize=self.resize or 0)

    def _loader(self, images):
        """(a loader of the pipeline's kind over the images, their number): ucir.data.loaders normalises, resizes
        and crops them as it does the run's test images."""
        if isinstance(images, (str, os.PathLike)):
            raise LoadError("images: a list of image files or an array of images; got one path")
        if isinstance(images, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in images):
            if self.resize is not None:                                   # folder data: torchvision decodes them
                split = FolderSplit([(str(p), 0) for p in images], torch.zeros(len(images), dtype=torch.int64))
                return on_device(split, self.spec(), self.device, workers=0), len(images)
            images = np.stack([read_image(p, self.channels, self.size) for p in images]) if images else \
                np.zeros((0, self.channels, self.size, self.size), np.uint8)
        if self.resize is not None:
            raise LoadError(f"this model was trained on image files ({self.files.model}): pass files, which are "
                            f"resized to {self.resize} and centre-cropped to {self.size} as in its evaluation")
        x = as_images(images, self.channels, self.size)
        return on_device(ArraySplit(x, torch.zeros(len(x), dtype=torch.int64)), self.spec(), self.device), len(x)

    def scores(self, images) -> Scores:
        """CNN and NME scores of `images`: a uint8 array or tensor (N x H x W for one channel, N x C x H x W or
        N x H x W x C, at the model's size) or a list of image files (converted to the model's channels; for
        in-memory datasets resized to size x size when they differ, bilinear)."""
        loader, n = self._loader(images)
        feats, logits = extract(self.net, loader, torch.arange(n), self.batch_size, self.device, logits=True)
        nme = nme_scores(feats, self.class_means) if self.class_means is not None else None
        return Scores(logits, nme)


# ---- inputs ---------------------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, channels: int, size: int) -> np.ndarray:
    """An image file as uint8 channels x size x size (grayscale for one channel, RGB for three)."""
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def as_images(images, channels: int, size: int) -> torch.Tensor:
    """uint8 N x channels x size x size from an array or tensor of N x size x size (one channel), N x C x H x W or
    N x H x W x C."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8:
        raise LoadError(f"images must be uint8 (0..255, as the datasets store them); got {x.dtype}")
    shape = tuple(x.shape[1:])
    if x.ndim == 3 and channels == 1 and shape == (size, size):
        return x.unsqueeze(1).contiguous()
    if x.ndim == 4 and shape == (channels, size, size):
        return x.contiguous()
    if x.ndim == 4 and shape == (size, size, channels):
        return x.permute(0, 3, 1, 2).contiguous()
    want = f"N x {channels} x {size} x {size} or N x {size} x {size} x {channels}"
    raise LoadError(f"images of shape {tuple(x.shape)}: the model takes {want}"
                    + (f" or N x {size} x {size}" if channels == 1 else ""))


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files under a folder (any depth), sorted by path."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LoadError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return files


# ---- finding a phase's files -----------------------------------------------------------------------------------

def _one_model(folder: Path) -> Path:
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    raise LoadError(f"no model in {folder}: expected {' or '.join(MODEL_FILES)} (a phase folder, "
                    "results/<dataset>/<method>/<variant>/p<P>/seed<S>/phase<k>, or a base model's folder, "
                    "results/<dataset>/base/<base>/seed<S>), or a run folder with phase=")


def _base_folder(run: Path) -> tuple[Path, str]:
    """Phase 0 of a run: its base model's folder and memory name, from the run's summary.json."""
    from .grid import base_name, memory_name
    from .config import resolve
    summary = run / "summary.json"
    if not summary.is_file():
        raise LoadError(f"phase 0 of {run}: the run has no summary.json to say which base model it shares; pass "
                        "the base model's folder, results/<dataset>/base/<base>/seed<S>")
    s = load_json(summary)
    cfg = resolve(s["method"], s["config"])
    return run.parents[3] / "base" / base_name(cfg) / f"seed{cfg.seed}", memory_name(cfg)


def _memory_in(folder: Path, memory: str | os.PathLike | None) -> Path | None:
    """memory: a memory.pt, a folder holding one, or the name of a subfolder of a base folder (`herding20`)."""
    if memory is not None:
        p = Path(memory)
        for candidate in (p, p / MEMORY_FILE, folder / p / MEMORY_FILE):
            if candidate.is_file():
                return candidate
        raise LoadError(f"memory={str(memory)!r}: no {MEMORY_FILE} there nor in {folder / p}")
    if (folder / MEMORY_FILE).is_file():
        return folder / MEMORY_FILE
    found = sorted(folder.glob(f"*/{MEMORY_FILE}"))
    if len(found) > 1:
        raise LoadError(f"{folder} holds several memories ({', '.join(p.parent.name for p in found)}): pass "
                        "memory= one of them")
    return found[0] if found else None


def locate(path: str | os.PathLike, phase: int | None = None, memory: str | os.PathLike | None = None) -> Files:
    """A phase's files: `path` is a model file, a phase or base folder, or a run folder with `phase`."""
    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path} does not exist")
    if path.is_file():
        if phase is not None:
            raise LoadError(f"phase={phase} goes with a run folder; {path} is a model file")
        folder, model = path.parent, path
    elif phase is not None:
        if phase < 0:
            raise LoadError(f"phase={phase}: a phase is 0 (the base phase) or more")
        if phase == 0:
            folder, name = _base_folder(path)
            memory = memory if memory is not None else name
        else:
            folder = path / f"phase{phase}"
            if not folder.is_dir():
                have = sorted(p.name for p in path.glob("phase*"))
                raise LoadError(f"phase={phase}: no {folder}; the run has {', '.join(have) or 'no phase folders'}")
        model = _one_model(folder)
    else:
        folder = path
        model = _one_model(folder)
    mem = _memory_in(folder, memory)
    metrics = [mem.parent / m for m in METRICS_FILES if (mem.parent / m).is_file()] if mem is not None else []
    return Files(model, mem, metrics)


def _nme_flip(files: Files, nme_flip: str | bool | None) -> str:
    """The run's `nme_flip` (NME_FLIPS; true and false read as horizontal and none): the argument, else what the
    metrics beside memory.pt record."""
    if nme_flip is None:
        seen = {nme_flip_name(load_json(m)["config"].get("nme_flip")) for m in files.metrics} - {None}
        if len(seen) != 1:
            where = ", ".join(map(str, files.metrics)) or f"no {' or '.join(METRICS_FILES)} beside {files.memory}"
            raise LoadError(f"nme_flip: the run's value is {'ambiguous' if seen else 'not recorded'} ({where}); "
                            f"pass nme_flip= one of {', '.join(NME_FLIPS)} (horizontal: the default)")
        nme_flip = seen.pop()
    name = nme_flip_name(nme_flip)
    if name not in NME_FLIPS:
        raise LoadError(f"nme_flip={nme_flip!r} is not allowed: one of {', '.join(NME_FLIPS)} (or true/false for "
                        "horizontal/none)")
    return name


def _settings(ckpt: dict[str, Any], model: Path) -> dict[str, Any]:
    cfg = ckpt.get("config") or {}
    missing = [k for k in DATA_KEYS if k not in cfg]
    if missing:
        raise LoadError(f"{model} does not record {', '.join(missing)} in its settings (`config`): it was not made "
                        "by the pipeline; load it with nme=False and pass class names yourself")
    return {k: cfg[k] for k in DATA_KEYS}


# ---- load ------------------------------------------------------------------------------------------------------

def load(path: str | os.PathLike, phase: int | None = None, *, memory: str | os.PathLike | None = None,
         root: str | os.PathLike | None = None, nme: bool = True, nme_flip: str | bool | None = None,
         device: str | torch.device = "cpu", batch_size: int = 512) -> Model:
    """One phase's model, ready for inference.

    path: a phase folder (results/<dataset>/<method>/<variant>/p<P>/seed<S>/phase<k>; model_cbf.pt where the run
    finetuned, else model.pt), a base model's folder (results/<dataset>/base/<base>/seed<S>), a model file, or a
    run folder together with `phase` (0: its base model, found through the run's summary.json).
    memory: the exemplars, where more than one memory sits beside the model (a base folder's `herding20`, ...) or
    they lie elsewhere; default: memory.pt beside the model, or the base folder's only memory.
    root: the data folder the run used (the NME means need the exemplars' training images; the class names of a
    format-1 checkpoint of CIFAR-100 or ImageNet need it too). nme=False: the CNN alone, no data read.
    nme_flip: the exemplars' second view the class means also average (ucir.config.NME_FLIPS: horizontal, channels
    or none; true/false read as horizontal/none); default: the run's, from its metrics.json.
    """
    files = locate(path, phase, memory)
    ckpt = load_torch(files.model)
    device = torch.device(device)
    settings = _settings(ckpt, files.model)
    num_seen = ckpt["classes_seen"]
    cfg = RunConfig.from_dict({**settings, "root": None if root is None else str(root)}, check=False)
    net = to_device(model_from_checkpoint(ckpt), cfg, device).eval()        # as the evaluation: channels_last
    if "class_names" not in ckpt and root is None and cfg.source not in ("synthetic", "fashion_mnist"):
        raise LoadError(f"root: {files.model} predates class names in checkpoints; the names of {cfg.source}'s "
                        "classes are read from its data folder: pass the one the run used")
    names = ckpt.get("class_names") or class_names(cfg.source, cfg.root, cfg.num_classes)
    spec = ckpt.get("input") or input_spec(cfg.source)
    order = ckpt["class_order"][:num_seen]
    means = None
    if nme and files.memory is not None:
        mem = load_torch(files.memory)
        if has_exemplars_of_all(mem, num_seen):
            flip = _nme_flip(files, nme_flip)
            if cfg.source != "synthetic" and root is None:
                raise LoadError(f"root: the NME classifier needs the exemplars' training images ({cfg.source}); "
                                "pass the data folder the run used, or nme=False for the CNN alone")
            data = load_run_data(cfg, device, workers=0, test=False)
            means = exemplar_means(net, data, mem, num_seen, flip, batch_size, device)
    return Model(net=net, classes=[names[c] for c in order], class_ids=list(order), mean=tuple(spec["mean"]),
                 std=tuple(spec["std"]), channels=spec["channels"], size=spec["size"], resize=spec["resize"],
                 phase=ckpt["phase"], class_means=means, device=device, files=files, batch_size=batch_size)
