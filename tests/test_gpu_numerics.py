"""Issue 13 (2, 3), issue 18 (5) and issue 23 (3), on CPU: one training precision (fp32 | tf32 | bf16) in the params
of every stage that trains and in the base model's name; fp32 is IEEE fp32 (torch's fp32_precision flags), tf32 only
inside the training loop, a device without the precision stops the job; `amp` is refused naming its replacement;
everything that makes a decision or a stored statistic runs in IEEE fp32 whatever the precision (bf16 autocast and
TF32 forced on around it, as on a GPU); a training step converts no tensor to a Python value (so on CUDA it never
waits for the GPU); an epoch's data plan goes to the device in one copy."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from ucir import deps, runtime
from ucir import losses as L
from ucir.config import ConfigError, RunConfig, resolve
from ucir.data import load_run_data
from ucir.data.loaders import DeviceArrays
from ucir.evaluate import evaluate_phase
from ucir.exemplars import select_exemplars
from ucir.features import extract
from ucir.grid import BASE_PATTERN, base_name
from ucir.models import build_model
from ucir.runtime import PrecisionError, configure, fp32_precision, set_fp32_precision, training_precision
from ucir.train.loop import Objective, fit
from ucir.train.stages import grow_head
from ucir.validate import check_config, load_schema

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
IEEE = ("ieee",) * 5                       # CUDA matmul, cuDNN conv, all of cuDNN, oneDNN matmul, oneDNN conv
SCHED = dict(epochs=1, milestones=[], batch_size=8)


def _cfg(method="lucir", **kw):
    return resolve(method, dict(dataset="syn", source="synthetic", num_classes=4, base_classes=2, phases=1,
                                 train_per_class=12, test_per_class=3, backbone="resnet8", per_class=3,
                                 base_train=SCHED, train=SCHED, device="cpu", **kw))


class Precision:
    """Records, for every forward of the hooked modules, the output dtype, whether autocast was on and whether
    any fp32 precision flag allowed something else than IEEE fp32."""

    def __init__(self, net):
        self.seen: list[tuple[torch.dtype, bool, bool]] = []
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or m is net.head:
                m.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        self.seen.append((out.dtype, torch.is_autocast_enabled("cpu"), fp32_precision() != IEEE))

    def fp32_only(self) -> bool:
        return bool(self.seen) and all(s == (torch.float32, False, False) for s in self.seen)


def test_the_spy_sees_bf16_training_on_the_cpu_when_the_precision_is_bf16():
    torch.set_num_threads(1)
    cfg = _cfg(precision="bf16")
    data = load_run_data(cfg, CPU)
    net = build_model("resnet8", "cosine", 2, 3, False)
    spy = Precision(net)
    fit(net, Objective(cfg, 0), data.train_loader, data.train_indices(0, 2), cfg.base_train, device=CPU,
        g=torch.Generator().manual_seed(0), log=lambda s: None, desc="phase 0", precision=cfg.precision)
    assert any(dtype == torch.bfloat16 and autocast for dtype, autocast, _ in spy.seen)
    spy.seen.clear()
    fit(net, Objective(cfg, 0), data.train_loader, data.train_indices(0, 2), cfg.base_train, device=CPU,
        g=torch.Generator().manual_seed(0), log=lambda s: None, desc="phase 0", precision="fp32")
    assert spy.fp32_only(), spy.seen[:3]                           # fp32: IEEE, no autocast


def test_evaluation_herding_imprinting_and_nme_are_fp32_whatever_the_precision(monkeypatch):
    import ucir.checkpoint as C
    from ucir.train import train_base
    cfg = _cfg(precision="bf16")
    data = load_run_data(cfg, CPU)
    net = build_model("resnet8", "cosine", 2, 3, False)
    spy = Precision(net)
    before = fp32_precision()
    set_fp32_precision("tf32")                                     # called from inside a tf32 ...
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):          # ... and bf16 region
            feats, logits = extract(net, data.test_loader, data.test_indices(0, 2), 4, CPU, logits=True)
        assert fp32_precision()[:2] == ("tf32", "tf32")            # the caller's flags, as they were
    finally:
        runtime._set(before)
    assert feats.dtype == logits.dtype == torch.float32 and spy.fp32_only(), spy.seen[:3]

    ckpt = train_base(cfg, data, CPU, lambda s: None)
    spies = []
    real_load = C.model_from_checkpoint

    def load(*a, **k):                                              # a spy on every network the stages load
        m = real_load(*a, **k)
        spies.append(Precision(m))
        return m
    monkeypatch.setattr(C, "model_from_checkpoint", load)
    memory = select_exemplars(cfg, 0, ckpt, None, data, CPU, lambda s: None)            # herding features
    evaluate_phase(cfg, 0, ckpt, memory, data, CPU)                                     # logits, NME, class means
    assert len(spies) == 2 and all(p.fp32_only() for p in spies), [p.seen[:2] for p in spies]

    teacher = build_model("resnet8", "cosine", 2, 3, False)
    spy = Precision(teacher)
    grown = build_model("resnet8", "cosine", 2, 3, False)
    grow_head(grown, teacher, cfg, data, 2, 4, CPU)                                      # imprinting
    assert grown.num_classes == 4 and spy.fp32_only()


# ------------------------------------------------------------------------------- 23 (3): one honest precision
def test_precision_takes_fp32_tf32_or_bf16():
    assert RunConfig().precision == "fp32"    # IEEE fp32 by default, as the official code: docs/method-notes.md
    for ok in ("fp32", "tf32", "bf16"):
        assert RunConfig.from_dict({"precision": ok}).precision == ok
    for bad in ("auto", True, False, None, "fp16"):
        with pytest.raises(ConfigError, match="precision="):
            RunConfig.from_dict({"precision": bad})


@pytest.mark.parametrize("precision,suffix", [("fp32", ""), ("tf32", "-tf32"), ("bf16", "-bf16")])
def test_each_precision_is_in_every_training_params_and_the_base_name(precision, suffix):
    cfg = _cfg(precision=precision, cbf=True)
    for stage in ("train_base", "train_phase", "finetune_balanced"):
        assert deps.stage_settings(stage, cfg, 1 if stage != "train_base" else 0)["precision"] == precision
    for stage in ("select_exemplars", "evaluate_phase"):         # IEEE fp32 whatever the precision
        assert "precision" not in deps.stage_settings(stage, cfg, 1)
    assert base_name(cfg) == "cosine-resnet8" + suffix
    assert re.fullmatch(BASE_PATTERN, base_name(cfg))
    for old in ("cosine-resnet8-fp32", "cosine-resnet8-auto"):    # the names of amp's days
        assert not re.fullmatch(BASE_PATTERN, old)


def test_the_demo_train_params_only_rename_amp_to_precision():
    """The demo computes what it did: its training jobs' params say precision: fp32 where they said amp: false, and
    nothing else takes the precision; its base models keep their names."""
    demo = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    runs = check_config(demo, load_schema(REPO / "workflow/schemas/config.schema.yaml"), check_paths=False)
    for run in runs:
        for stage, k in deps.run_stages(run.cfg):
            params = deps.stage_settings(stage, run.cfg, k)
            if stage in ("train_base", "train_phase", "finetune_balanced"):
                assert params["precision"] == "fp32" and "amp" not in params
            else:
                assert "precision" not in params
    assert all(base_name(r.cfg) in ("cosine-resnet8", "linear-resnet8") for r in runs)


def test_fp32_is_ieee_after_configure_on_the_cpu_and_tf32_stops_there():
    before = fp32_precision()
    try:
        set_fp32_precision("tf32")
        for precision in ("fp32", "bf16"):
            configure(CPU, deterministic=False, precision=precision)
            assert fp32_precision() == IEEE
        with pytest.raises(PrecisionError, match="precision: tf32 .*the cpu has no TF32"):
            configure(CPU, deterministic=False, precision="tf32")
        with pytest.raises(PrecisionError, match="tf32"):
            with training_precision(CPU, "tf32"):
                pass
    finally:
        runtime._set(before)


def _gpu(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_tf32_only_inside_the_training_loop_on_a_gpu_that_has_it(monkeypatch, capability):
    _gpu(monkeypatch, capability)
    before = fp32_precision()
    try:
        runtime._set(IEEE)
        with training_precision(CUDA, "tf32"):
            assert fp32_precision() == ("tf32", "tf32", "tf32", "ieee", "ieee")
        assert fp32_precision() == IEEE
        for precision in ("fp32", "bf16"):
            with training_precision(CUDA, precision):
                assert fp32_precision() == IEEE
    finally:
        runtime._set(before)


@pytest.mark.parametrize("capability", [(6, 1), (7, 0), (7, 5)])
def test_bf16_and_tf32_stop_on_a_gpu_without_them(monkeypatch, capability):
    _gpu(monkeypatch, capability)
    for precision in ("bf16", "tf32"):
        with pytest.raises(PrecisionError, match=f"precision: {precision} .*Fake GPU, compute capability "
                                                 f"{capability[0]}.{capability[1]}"):
            with training_precision(CUDA, precision):
                pass
    with training_precision(CUDA, "fp32"):
        pass


def test_a_job_asked_for_bf16_on_a_gpu_without_it_stops_before_any_work(monkeypatch, tmp_path):
    from ucir.jobs import job
    _gpu(monkeypatch, (7, 0))
    monkeypatch.setattr("ucir.jobs.pick_device", lambda name, log=print, **kw: CUDA)
    log = tmp_path / "job.log"
    with pytest.raises(PrecisionError):
        with job({"precision": "bf16"}, {"device": "cuda"}, str(log)):
            raise AssertionError("the job ran")
    assert "precision: bf16 cannot train on this device (Fake GPU, compute capability 7.0" in log.read_text()


def test_a_job_logs_its_training_precision_and_a_job_that_does_not_train_says_so(tmp_path):
    from ucir.jobs import job
    for settings, line in (({"precision": "bf16"}, "training precision bf16, evaluation fp32 (IEEE)"),
                           ({}, "fp32 (IEEE; no training in this job)")):
        with job(settings, {"device": "cpu"}, str(tmp_path / "job.log")) as j:
            assert j.cfg.precision == settings.get("precision", "fp32")
        assert line in (tmp_path / "job.log").read_text()


def test_amp_is_refused_naming_precision(tmp_path):
    with pytest.raises(ConfigError, match="amp: true -> precision: bf16"):
        RunConfig.from_dict({"amp": True})
    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    base = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    places = {"datasets.synthetic.settings.amp": lambda c: c["datasets"]["synthetic"]["settings"],
              "variants.v.amp": lambda c: c.setdefault("variants", {}).setdefault("v", {}),
              "experiments.main.grid.amp": lambda c: c["experiments"]["main"].setdefault("grid", {}),
              "amp": lambda c: c}
    for where, node in places.items():
        cfg = copy.deepcopy(base)
        node(cfg)["amp"] = [True] if "grid" in where else True
        with pytest.raises(ConfigError, match=re.escape(where) + ": amp was replaced by precision"):
            check_config(cfg, schema)


def test_a_config_can_ask_for_fp32_and_bf16_training_side_by_side():
    """What the Fashion-MNIST control (issue 13) needs: a grid over the precision, each value its own named
    variant; configs/fashion_mnist_precision.yaml is that grid."""
    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    cfg = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    cfg["experiments"]["main"]["grid"] = {"precision": ["fp32", "bf16"]}
    runs = check_config(copy.deepcopy(cfg), schema)
    assert sorted(r.cfg.precision for r in runs) == ["bf16", "fp32"]
    assert {r.variant for r in runs} == {"default", "default_precisionbf16"}
    cfg["datasets"]["synthetic"]["settings"]["precision"] = "auto"
    with pytest.raises(ConfigError, match="precision"):
        check_config(cfg, schema)
    control = yaml.safe_load((REPO / "configs/fashion_mnist_precision.yaml").read_text())
    assert control["experiments"]["precision"]["grid"] == {"precision": ["fp32", "bf16"]}


# ------------------------------------------------------------------------------- 18 (5): no host syncs
CONVERSIONS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy", "__array__",
               "__format__")


class Conversions:
    """Counts tensor -> Python conversions while `on` (each one waits for the GPU on CUDA)."""

    def __init__(self, monkeypatch):
        self.on, self.calls = False, []
        for name in CONVERSIONS:
            real = getattr(torch.Tensor, name)

            def spy(t, *a, _real=real, _name=name, **k):
                if self.on:
                    self.calls.append(_name)
                return _real(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, spy)


@pytest.mark.parametrize("method,settings", [("lucir", {}), ("lucir", {"distill": "cosine_scores"}),
                                             ("icarl", {})], ids=["lucir", "cn", "icarl"])
def test_a_training_step_converts_no_tensor_to_a_python_value(monkeypatch, method, settings):
    """Counted from the first step's forward to the scheduler step after the epoch's last one: every step but
    the first batch's fetch, with each incremental objective (LUCIR: CE + less-forget + margin ranking; the CN
    ablation's cosine-score distillation; iCaRL's KD)."""
    torch.set_num_threads(1)
    cfg = _cfg(method, **settings)
    assert (cfg.head, cfg.distill) == {"lucir": ("cosine", settings.get("distill", "feature")),
                                       "icarl": ("linear", "kd")}[method]
    data = load_run_data(cfg, CPU)
    teacher = build_model("resnet8", cfg.head, 2, 3, cfg.last_relu).eval()
    net = build_model("resnet8", cfg.head, 2, 3, cfg.last_relu)
    grow_head(net, teacher, cfg, data, 2, 4, CPU)
    objective = Objective(cfg, 2, 5.0, teacher)
    idx = torch.cat([data.train_indices(2, 4), data.train_indices(0, 1)[:4]])      # 28 images: 4 batches
    conv = Conversions(monkeypatch)
    steps = []
    terms = objective.terms

    def first_forward_opens(*a, **k):
        conv.on = True
        steps.append(1)
        return terms(*a, **k)
    objective.terms = first_forward_opens
    real_step = torch.optim.lr_scheduler.MultiStepLR.step

    def epoch_end_closes(self, *a, **k):
        conv.on = False
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.lr_scheduler.MultiStepLR, "step", epoch_end_closes)
    lines = []
    fit(net, objective, data.train_loader, idx, cfg.train, device=CPU, g=torch.Generator().manual_seed(0),
        log=lines.append, desc="phase 1")
    assert len(steps) == 4 and ("mr" in lines[-1]) is cfg.margin_ranking
    assert conv.calls == [], conv.calls


def test_margin_ranking_makes_no_conversion(monkeypatch):
    cos = torch.rand(6, 7) * 2 - 1
    conv = Conversions(monkeypatch)
    conv.on = True
    L.margin_ranking(cos, torch.tensor([0, 5, 1, 6, 4, 2]), 3)
    L.margin_ranking(cos, torch.tensor([4, 5, 6, 4, 5, 6]), 3)                         # no anchor in the batch
    assert conv.calls == []


def test_an_epoch_goes_to_the_device_in_one_copy(monkeypatch):
    """On the meta device (shapes only, like a GPU a copy away): one host-to-device copy per epoch, not per
    batch."""
    cfg = _cfg()
    split = load_run_data(cfg, CPU).train
    meta = torch.device("meta")
    arrays = DeviceArrays(split, load_run_data(cfg, CPU).spec, meta)
    copies = []
    real_to = torch.Tensor.to

    def to(t, *a, **k):
        out = real_to(t, *a, **k)
        if t.device.type == "cpu" and out.device.type == "meta":
            copies.append(tuple(t.shape))
        return out
    monkeypatch.setattr(torch.Tensor, "to", to)
    for train in (True, False):
        copies.clear()
        n = sum(1 for _ in arrays.batches(torch.arange(len(split)), 5, train, torch.Generator().manual_seed(0)))
        assert n == 10 and copies == [(4 if train else 1, len(split))], copies
