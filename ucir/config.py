"""Typed run configuration. The workflow resolves config.yaml into one flat dict per run; the package only sees
these dataclasses (it never reads config.yaml or wildcards)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The allowed values of every setting that takes a name: the one list of each (the schema's enums, the workflow's
# wildcard constraints and RunConfig.check all read ENUMS). A new backbone or source is a name here plus its code.
SOURCES = ("cifar100", "fashion_mnist", "imagenet", "imagenet_subset", "synthetic")
BACKBONES = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet18")
HEADS = ("cosine", "linear")
SELECTIONS = ("herding", "herding_official", "random")
ENUMS: dict[str, tuple] = {
    "source": SOURCES, "backbone": BACKBONES, "head": HEADS, "selection": SELECTIONS,
    "distill": ("feature", "cosine_scores", "kd", "none"),
    "lambda_rule": ("code", "paper", "fixed"),
    "cs_loss": ("official", "l1"),
    "mr_reduction": ("pairs", "anchors"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", True, False),
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


@dataclass
class Schedule:
    """SGD schedule of one training stage (Sec. 4.1)."""
    epochs: int = 160
    lr: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [80, 120])
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128


@dataclass
class RunConfig:
    """Everything one run (dataset x method x variant x phases x seed) depends on."""
    # data and protocol
    dataset: str = "synthetic"            # the config's name for the dataset (a path component)
    source: str = "synthetic"             # which loader: one of SOURCES
    root: str | None = None
    download: bool = False
    num_classes: int = 100
    base_classes: int = 50
    phases: int = 5
    seed: int = 1993                      # class order (1993 = the official order) and torch seeding
    train_per_class: int | None = None    # synthetic: images per class; real data: optional subsample
    test_per_class: int | None = None
    # model
    method: str = "lucir"
    backbone: str = "resnet32"
    head: str = "cosine"                  # cosine (Eq. 4) | linear (Eq. 3)
    last_relu: bool = False               # Sec. 4.1: removed under cosine normalisation
    # incremental losses (Sec. 3); every component is a flag so ablations are configurations
    distill: str = "feature"              # feature (Eq. 6) | cosine_scores (Eq. 5) | kd (Eq. 2) | none
    lambda_base: float = 5.0
    lambda_rule: str = "code"             # code: sqrt(old/new) | paper: sqrt(new/old) (Eq. 7 as printed) | fixed
    cs_loss: str = "official"             # Eq. 5 (distill: cosine_scores): official: squared, weight cs_weight |
    #                                     # l1: |difference| as printed, weight adaptive lambda (Eq. 7)
    cs_weight: float = 1.0                # official code's lw_ms (cs_loss: official only)
    kd_T: float = 2.0
    kd_weight: float = 1.0                # official iCaRL code: T^2 * beta = 4 * 0.25
    margin_ranking: bool = True           # Eq. 8
    K: int = 2
    margin: float = 0.5
    mr_reduction: str = "pairs"           # pairs: official code, mean over anchors x K | anchors: Eq. 9
    mr_weight: float = 1.0
    freeze_old: bool = True               # Sec. 3.3: old class embeddings fixed
    imprint: bool = True                  # new embeddings imprinted from feature means
    cbf: bool = False                     # class-balance finetune (Sec. 3.5)
    # memory (Sec. 4.1)
    per_class: int | None = 20            # R_per
    total: int | None = None              # R_total (fixed capacity); overrides per_class when set
    selection: str = "herding"            # herding (never re-picks) | herding_official (the code's loop) | random
    nme_flip: bool = True                 # NME means include horizontally flipped exemplars
    # schedules
    base_train: Schedule = field(default_factory=Schedule)
    train: Schedule = field(default_factory=Schedule)
    cbf_train: Schedule = field(default_factory=lambda: Schedule(epochs=20, lr=0.01, milestones=[10]))
    # execution (does not change the arithmetic on CPU)
    device: str = "auto"                  # auto | cpu | cuda
    deterministic: bool = False
    amp: bool | str = False               # bf16 training: false (fp32, as the official code) | auto (CUDA GPUs of
    #                                     # capability >= 8.0) | true (the CPU too); docs/benchmarks.md: bf16 control
    channels_last: bool = True            # memory format of the network (CUDA and CPU)
    compile: bool = False
    eval_batch_size: int = 512
    checkpoint_every: int = 0             # epochs between resumable states (0: never)
    checkpoint_minutes: float = 10.0      # a resumable state at least every so many minutes of training (0: never)
    workers: int | None = None            # DataLoader workers for folder data (null: the job's threads - 1)
    tensorboard: bool = False             # training curves also as TensorBoard event files (the `tensorboard` extra)

    @classmethod
    def from_dict(cls, d: dict[str, Any], check: bool = True) -> "RunConfig":
        """A RunConfig from plain values. check=False for a job's slice of a configuration the workflow already
        checked whole (ucir.deps.stage_settings): the fields it lacks keep their defaults and are never read."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown run setting(s): {', '.join(unknown)}")
        for key in ("base_train", "train", "cbf_train"):
            if key in d and isinstance(d[key], dict):
                base = dataclasses.asdict(getattr(cls(), key))
                extra = sorted(set(d[key]) - set(base))
                if extra:
                    raise ConfigError(f"unknown key(s) in {key}: {', '.join(extra)}")
                base.update(d[key])
                d[key] = Schedule(**base)
        cfg = cls(**d)
        if check:
            cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- protocol -------------------------------------------------------------------------------------
    @property
    def classes_per_phase(self) -> int:
        return (self.num_classes - self.base_classes) // self.phases

    def classes_seen(self, phase: int) -> int:
        """Number of classes seen after `phase` (phase 0 is the base phase)."""
        return self.base_classes + phase * self.classes_per_phase if phase else self.base_classes

    def check(self) -> None:
        def bad(key, value, allowed):
            raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")
        for key, allowed in {"method": METHODS, **ENUMS}.items():
            value = getattr(self, key)
            if not any(value == a and type(value) is type(a) for a in allowed):    # True is not 1
                bad(key, value, f"one of {', '.join(map(str, allowed))}")
        if self.distill in ("feature", "cosine_scores") and self.head != "cosine":
            bad("distill", self.distill, "feature/cosine_scores distillation needs head: cosine")
        if self.cs_weight < 0:
            bad("cs_weight", self.cs_weight, "non-negative")
        if self.checkpoint_minutes < 0:
            bad("checkpoint_minutes", self.checkpoint_minutes, "non-negative (0: no time-based saves)")
        if self.workers is not None and self.workers < 0:
            bad("workers", self.workers, "a non-negative integer or null")
        if not 0 < self.base_classes < self.num_classes:
            bad("base_classes", self.base_classes, f"between 1 and num_classes-1 ({self.num_classes - 1})")
        if self.phases < 1:
            bad("phases", self.phases, "a positive integer")
        if (self.num_classes - self.base_classes) % self.phases:
            bad("phases", self.phases,
                f"must divide the {self.num_classes - self.base_classes} incremental classes evenly")
        if self.margin_ranking and self.head == "cosine":
            if not 0 < self.margin < 2:
                bad("margin", self.margin, "in (0, 2): cosine scores lie in [-1, 1]")
            if not 1 <= self.K <= self.classes_per_phase:
                bad("K", self.K, f"between 1 and the new classes per phase ({self.classes_per_phase})")
        if self.margin_ranking and self.head != "cosine":
            bad("margin_ranking", True, "margin ranking (Eq. 8) needs head: cosine")
        if self.lambda_base < 0:
            bad("lambda_base", self.lambda_base, "non-negative")
        if self.per_class is not None and self.per_class < 0:
            bad("per_class", self.per_class, "non-negative")
        if self.total is not None and self.total < self.num_classes:
            bad("total", self.total,
                f"at least one exemplar per class: >= num_classes ({self.num_classes})")
        for key in ("base_train", "train", "cbf_train"):
            s: Schedule = getattr(self, key)
            if s.epochs < 0:
                bad(f"{key}.epochs", s.epochs, "non-negative")
            if s.lr <= 0:
                bad(f"{key}.lr", s.lr, "positive")
            if s.batch_size < 1:
                bad(f"{key}.batch_size", s.batch_size, "positive")
        for key in ("train_per_class", "test_per_class"):
            v = getattr(self, key)
            if v is not None and v < 1:
                bad(key, v, "a positive integer or null")

    # ---- memory ---------------------------------------------------------------------------------------
    def memory_per_class(self, classes_seen: int) -> int:
        """Exemplars kept per class once `classes_seen` classes are stored (methods in NO_MEMORY have per_class 0,
        set by `resolve`). A fixed total R_total keeps ceil(R_total / classes_seen) per class, as the official
        code's --fix_budget does (2000 at 60 classes: 34 each, 2,040 in all, slightly over R_total)."""
        if self.total is not None:
            return -(-self.total // classes_seen)                          # ceil
        return self.per_class or 0


# Method presets: what each method means in terms of the flags above. Variants in config.yaml override them.
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "lucir": dict(head="cosine", last_relu=False, distill="feature", margin_ranking=True,
                  freeze_old=True, imprint=True),
    "icarl": dict(head="linear", last_relu=True, distill="kd", margin_ranking=False,
                  freeze_old=False, imprint=False),
    "lwf": dict(head="linear", last_relu=True, distill="kd", margin_ranking=False,
                freeze_old=False, imprint=False),
    "finetune": dict(head="linear", last_relu=True, distill="none", margin_ranking=False,
                     freeze_old=False, imprint=False),
    "joint": dict(head="linear", last_relu=True, distill="none", margin_ranking=False,
                  freeze_old=False, imprint=False),
}


METHODS = tuple(METHOD_PRESETS)

# LwF keeps no exemplars (with them it is iCaRL-CNN, Sec. 4.1); joint training has all the data instead.
NO_MEMORY = ("lwf", "joint")


def resolve(method: str, settings: dict[str, Any]) -> RunConfig:
    """Method preset, then the given settings on top."""
    if method not in METHOD_PRESETS:
        raise ConfigError(f"method={method!r} is not allowed: one of {METHODS}")
    merged = dict(METHOD_PRESETS[method])
    merged.update(settings)
    merged["method"] = method
    if method in NO_MEMORY:
        merged.update(per_class=0, total=None)
    return RunConfig.from_dict(merged)
