"""Typed run configuration. The workflow resolves config.yaml into one flat dict per run; the package only sees
these dataclasses (it never reads config.yaml or wildcards)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# The allowed values of every setting that takes a name: the one list of each (the schema's enums, the workflow's
# wildcard constraints and RunConfig.check all read ENUMS). A new backbone or source is a name here plus its code.
SOURCES = ("cifar100", "fashion_mnist", "imagenet", "imagenet_subset", "synthetic")
FOLDER_SOURCES = ("imagenet", "imagenet_subset")     # JPEG folders, decoded by loader workers; the others live in memory
# the sources read whole into memory, which the workflow prepares once as memory-mapped arrays (ucir.data.prepared)
PREPARED_SOURCES = ("cifar100", "fashion_mnist")
# Every backbone: name -> (its family in ucir.models.BACKBONE_FAMILIES, the family's arguments besides in_channels
# and last_relu). The family builds it, providing what ucir/models/__init__.py says every backbone provides (out_dim);
# no name is parsed.
BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet8": ("cifar_resnet", {"depth": 8}), "resnet14": ("cifar_resnet", {"depth": 14}),
    "resnet20": ("cifar_resnet", {"depth": 20}), "resnet32": ("cifar_resnet", {"depth": 32}),
    "resnet44": ("cifar_resnet", {"depth": 44}), "resnet56": ("cifar_resnet", {"depth": 56}),
    "resnet18": ("resnet18", {}),
}
HEADS = ("cosine", "linear")            # cosine: Eq. 4 | linear: Eq. 3 (ucir.models.build_model)
# Every distillation (Sec. 3): name -> the heads it works with (RunConfig.check refuses any other head). Eq. 6 and
# Eq. 5 compare normalised features and cosine scores, which only the cosine head defines; Eq. 2 compares logits.
DISTILLS: dict[str, tuple[str, ...]] = {
    "feature": ("cosine",), "cosine_scores": ("cosine",), "kd": HEADS, "none": HEADS,
}
SELECTIONS = ("herding", "herding_official", "random")
# NME's second view of each exemplar: a real horizontal flip (the default), the official CIFAR-100 code's reversal of
# the colour channels (its "flipped version" indexes the last axis of H x W x C images), or none. true and false
# are accepted for horizontal and none (configurations written before the channel reversal existed).
NME_FLIPS = ("horizontal", "channels", "none")
NME_FLIP_ALIASES = ((True, "horizontal"), (False, "none"))


def nme_flip_name(value):
    """nme_flip's one spelling: NME_FLIP_ALIASES' name for true or false (`is`: 1 and 0 are no aliases), else the
    value as given (checked with the other enums)."""
    return next((name for alias, name in NME_FLIP_ALIASES if value is alias), value)


ENUMS: dict[str, tuple] = {
    "source": SOURCES, "backbone": tuple(BACKBONES), "head": HEADS, "selection": SELECTIONS,
    "distill": tuple(DISTILLS),
    "lambda_rule": ("code", "paper", "fixed"),
    "cs_loss": ("official", "l1"),
    "mr_reduction": ("pairs", "anchors"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("fp32", "tf32", "bf16"),
    "nme_flip": NME_FLIPS + tuple(alias for alias, _ in NME_FLIP_ALIASES),
}

# Settings that were renamed or replaced: named in the error a configuration that still sets them gets.
REPLACED: dict[str, str] = {
    "amp": "amp was replaced by precision (fp32 | tf32 | bf16, a result setting): amp: false -> precision: fp32, "
           "amp: true -> precision: bf16; amp: auto is gone (it chose bf16 or fp32 from the device, so a grid moved "
           "between devices mixed precisions): pick one precision (docs/method-notes.md, Precision)",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


class SourceImages(NamedTuple):
    """Images per class of a source, known without reading the data."""
    train: float          # training images per class on average (what a pass costs: ucir.tools.plan)
    test: int             # test images per class
    note: str             # where the figures come from
    smallest: int         # training images of the smallest class: the most a per-class count can ask for
    largest: int          # training images of the largest class: the most train_per_class can keep


# The one table of images per class (ucir.tools.plan's costs, RunConfig.review's bounds). Synthetic data: the
# generated counts, train_per_class / test_per_class, defaults as in ucir.data.load_splits.
IMAGES_PER_CLASS: dict[str, SourceImages] = {
    "cifar100": SourceImages(500, 100, "CIFAR-100: 500 training / 100 test images per class", 500, 500),
    "fashion_mnist": SourceImages(6000, 1000, "Fashion-MNIST: 6,000 training / 1,000 test images per class",
                                  6000, 6000),
    "imagenet": SourceImages(1_281_167 / 1000, 50, "ILSVRC-2012: 1,281,167 training images over 1,000 classes, "
                             "i.e. 1,281.2 per class on average (classes hold 732 to 1,300), and 50 validation "
                             "images per class", 732, 1300),
    "imagenet_subset": SourceImages(1_281_167 / 1000, 50, "ILSVRC-2012's average: 1,281.2 training images per "
                                    "class (an average over all 1,000 classes, not the subset's own count) and 50 "
                                    "validation images", 732, 1300),
    "synthetic": SourceImages(500, 100, "generated: train_per_class / test_per_class images per class (default "
                              "500 / 100)", 500, 500),
}


@dataclass(frozen=True)
class Finding:
    """A setting that silently does less than it says (RunConfig.review): refused where no one can mean it, else
    said in one warning line."""
    key: str
    value: Any
    why: str
    refuse: bool

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.why}"


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
    nme_flip: str = "horizontal"          # NME means also over a second view of each exemplar: NME_FLIPS
    # schedules
    base_train: Schedule = field(default_factory=Schedule)
    train: Schedule = field(default_factory=Schedule)
    cbf_train: Schedule = field(default_factory=lambda: Schedule(epochs=20, lr=0.01, milestones=[10]))
    precision: str = "fp32"               # training: fp32 (IEEE, as the official code) | tf32 | bf16 (autocast);
    #                                     # evaluation, herding, imprinting, NME: IEEE fp32 always (ucir.runtime)
    # execution (does not change the arithmetic on CPU)
    device: str = "auto"                  # auto | cpu | cuda
    deterministic: bool = False
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
        if "nme_flip" in d:
            d["nme_flip"] = nme_flip_name(d["nme_flip"])
        names = {f.name for f in dataclasses.fields(cls)}
        replaced = [REPLACED[k] for k in sorted(set(d) & set(REPLACED))]
        if replaced:
            raise ConfigError("; ".join(replaced))
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
        if self.head not in DISTILLS[self.distill]:
            bad("distill", self.distill, f"it needs head: {' or '.join(DISTILLS[self.distill])} (head is {self.head})")
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

    # ---- settings that silently do less than they say ---------------------------------------------------
    def schedules(self) -> tuple[str, ...]:
        """The training stages a run has: base training, the incremental phases, and the CBF finetune when on."""
        return ("base_train", "train", "cbf_train") if self.cbf else ("base_train", "train")

    def fewest_train_images(self) -> int:
        """Training images of the smallest class: the source's (IMAGES_PER_CLASS) capped by train_per_class; for
        synthetic data the generated count."""
        src = IMAGES_PER_CLASS[self.source]
        if self.source == "synthetic":
            return self.train_per_class or src.smallest
        return min(src.smallest, self.train_per_class or src.smallest)

    def stage_images(self, key: str) -> int:
        """Training images one epoch of the stage `key` (a schedule) passes over, in its smallest phase."""
        n = self.fewest_train_images()

        def kept(k):                                                    # exemplars in memory after phase k
            return self.classes_seen(k) * min(self.memory_per_class(self.classes_seen(k)), n)
        if key == "base_train":
            return self.base_classes * n
        phases = range(1, self.phases + 1)
        if key == "cbf_train":                                          # Sec. 3.5: the balanced exemplar set
            return min(kept(k) for k in phases)
        if self.trains_on_all_seen:
            return min(self.classes_seen(k) * n for k in phases)
        return min(self.classes_per_phase * n + kept(k - 1) for k in phases)

    def review(self) -> list[Finding]:
        """Settings that would silently do less than they say, for the workflow's check before any job (check()
        refuses what cannot run at all). Refused: a milestone the rate never reaches, more exemplars per class than
        images. Said: batches larger than a stage's data, a memory budget or a subsample larger than the data, a
        checkpoint interval longer than every stage."""
        out = []
        smallest = self.fewest_train_images()
        images = f"the {smallest} training images per class of {self.source}" + (
            f" (train_per_class {self.train_per_class})" if self.train_per_class and smallest == self.train_per_class
            else " (its smallest class)" if self.source.startswith("imagenet") else "")
        for key in self.schedules():
            s: Schedule = getattr(self, key)
            if not s.epochs:
                continue
            never = [m for m in s.milestones if not 0 < m < s.epochs]
            if never:       # MultiStepLR decays the rate after epoch m: m = 0 and m >= epochs are never reached
                out.append(Finding(f"{key}.milestones", s.milestones, f"with {key}.epochs {s.epochs} the rate decays "
                                   f"only at milestones 1 to {s.epochs - 1}; at {', '.join(map(str, never))} it "
                                   "never would", True))
            n = self.stage_images(key)
            if n == 0:                                                  # cbf_train for LwF or joint
                out.append(Finding("cbf", self.cbf, f"method {self.method} keeps no exemplars: the class-balanced "
                                   "finetune has nothing to train on", False))
            elif s.batch_size > n:
                out.append(Finding(f"{key}.batch_size", s.batch_size, f"larger than the {n} training images of the "
                                   f"stage's smallest phase: one batch of {n} per epoch", False))
        if self.total is None and self.per_class and self.per_class > smallest:
            out.append(Finding("per_class", self.per_class, f"more exemplars per class than {images}: "
                               f"{smallest} would be kept", True))
        if self.total is not None:
            at_end, at_base = (self.memory_per_class(c) for c in (self.num_classes, self.base_classes))
            if at_end > smallest:
                out.append(Finding("total", self.total, f"{at_end} exemplars per class even with all "
                                   f"{self.num_classes} classes seen, more than {images}: the memory never holds "
                                   f"{self.total}", True))
            elif at_base > smallest:
                out.append(Finding("total", self.total, f"{at_base} exemplars per class after the base phase, more "
                                   f"than {images}: the memory holds fewer than {self.total} in the first phases",
                                   False))
        src = IMAGES_PER_CLASS[self.source]
        if self.source != "synthetic":
            for key, most, what in (("train_per_class", src.largest, "training images in its largest class"),
                                    ("test_per_class", src.test, "test images per class")):
                value = getattr(self, key)
                if value is not None and value > most:
                    out.append(Finding(key, value, f"{self.source} has {most} {what}: all are kept", False))
        longest = max(getattr(self, k).epochs for k in self.schedules())
        if self.checkpoint_every and self.checkpoint_every >= longest:
            out.append(Finding("checkpoint_every", self.checkpoint_every, f"no stage trains more than {longest} "
                               f"epoch{'s' * (longest != 1)}, so no resumable state is saved on this schedule (SIGTERM still saves one)",
                               False))
        return out

    # ---- memory and training data -------------------------------------------------------------------------
    def memory_per_class(self, classes_seen: int) -> int:
        """Exemplars kept per class once `classes_seen` classes are stored (a method whose preset keeps no memory
        has per_class 0, set by `resolve`). A fixed total R_total keeps ceil(R_total / classes_seen) per class, as
        the official code's --fix_budget does (2000 at 60 classes: 34 each, 2,040 in all, slightly over R_total)."""
        if self.total is not None:
            return -(-self.total // classes_seen)                          # ceil
        return self.per_class or 0

    @property
    def trains_on_all_seen(self) -> bool:
        """Whether a phase trains on every seen class's full training data (joint training: the upper bound),
        not on the new classes' data and the exemplars (the protocol). A fact of the method (its preset)."""
        return METHOD_PRESETS[self.method].all_seen


@dataclass(frozen=True)
class Method:
    """What a method is. `flags`: RunConfig settings (a variant in config.yaml may override them). The other fields
    are facts of the method that no setting overrides; the pipeline reads them from here, never from its name."""
    flags: dict[str, Any]
    memory: bool = True          # False: no exemplars, whatever per_class / total say
    all_seen: bool = False       # True: a phase trains on every seen class's full data (RunConfig.trains_on_all_seen)


# Method presets: what each method means in terms of the flags above. Variants in config.yaml override the flags.
METHOD_PRESETS: dict[str, Method] = {
    "lucir": Method(dict(head="cosine", last_relu=False, distill="feature", margin_ranking=True,
                         freeze_old=True, imprint=True)),
    "icarl": Method(dict(head="linear", last_relu=True, distill="kd", margin_ranking=False,
                         freeze_old=False, imprint=False)),
    # LwF keeps no exemplars (with them it is iCaRL-CNN, Sec. 4.1)
    "lwf": Method(dict(head="linear", last_relu=True, distill="kd", margin_ranking=False,
                       freeze_old=False, imprint=False), memory=False),
    "finetune": Method(dict(head="linear", last_relu=True, distill="none", margin_ranking=False,
                            freeze_old=False, imprint=False)),
    # joint training has all the data instead of exemplars
    "joint": Method(dict(head="linear", last_relu=True, distill="none", margin_ranking=False,
                         freeze_old=False, imprint=False), memory=False, all_seen=True),
}


METHODS = tuple(METHOD_PRESETS)


def resolve(method: str, settings: dict[str, Any]) -> RunConfig:
    """Method preset, then the given settings on top."""
    if method not in METHOD_PRESETS:
        raise ConfigError(f"method={method!r} is not allowed: one of {', '.join(METHODS)}")
    preset = METHOD_PRESETS[method]
    merged = dict(preset.flags)
    merged.update(settings)
    merged["method"] = method
    if not preset.memory:
        merged.update(per_class=0, total=None)
    return RunConfig.from_dict(merged)
