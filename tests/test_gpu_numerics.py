"""Issue 13 (2, 3) and issue 18 (5), on CPU: everything that makes a decision or a stored statistic runs in fp32
whatever `amp` says (bf16 autocast forced on, as it would be on a GPU); `amp` takes auto/true/false; a training step
converts no tensor to a Python value (so on CUDA it never waits for the GPU); an epoch's data plan goes to the
device in one copy."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from ucir import losses as L
from ucir.config import ConfigError, RunConfig, resolve
from ucir.data import load_run_data
from ucir.data.loaders import DeviceArrays
from ucir.evaluate import evaluate_phase
from ucir.exemplars import select_exemplars
from ucir.features import extract
from ucir.models import build_model
from ucir.train.loop import Objective, fit
from ucir.train.stages import grow_head
from ucir.validate import check_config, load_schema

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SCHED = dict(epochs=1, milestones=[], batch_size=8)


def _cfg(method="lucir", **kw):
    return resolve(method, dict(dataset="syn", source="synthetic", num_classes=4, base_classes=2, phases=1,
                                 train_per_class=12, test_per_class=3, backbone="resnet8", per_class=3,
                                 base_train=SCHED, train=SCHED, device="cpu", **kw))


class Precision:
    """Records, for every forward of the hooked modules, the output dtype, whether autocast was on and whether
    TF32 was allowed."""

    def __init__(self, net):
        self.seen: list[tuple[torch.dtype, bool, bool]] = []
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or m is net.head:
                m.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        self.seen.append((out.dtype, torch.is_autocast_enabled("cpu"),
                          torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32))

    def fp32_only(self) -> bool:
        return bool(self.seen) and all(s == (torch.float32, False, False) for s in self.seen)


def test_the_spy_sees_bf16_training_on_the_cpu_when_amp_is_true():
    torch.set_num_threads(1)
    cfg = _cfg(amp=True)
    data = load_run_data(cfg, CPU)
    net = build_model("resnet8", "cosine", 2, 3, False)
    spy = Precision(net)
    fit(net, Objective(cfg, 0), data.train_loader, data.train_indices(0, 2), cfg.base_train, device=CPU,
        g=torch.Generator().manual_seed(0), log=lambda s: None, desc="phase 0", amp=cfg.amp)
    assert any(dtype == torch.bfloat16 and autocast for dtype, autocast, _ in spy.seen)


@pytest.mark.parametrize("amp", [True, "auto"])
def test_evaluation_herding_imprinting_and_nme_are_fp32_whatever_amp_says(amp, monkeypatch):
    import ucir.checkpoint as C
    from ucir.train import train_base
    cfg = _cfg(amp=amp)
    data = load_run_data(cfg, CPU)
    net = build_model("resnet8", "cosine", 2, 3, False)
    spy = Precision(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):              # called from inside a bf16 region
        feats, logits = extract(net, data.test_loader, data.test_indices(0, 2), 4, CPU, logits=True)
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


def test_amp_takes_auto_true_or_false():
    assert RunConfig().amp is False          # fp32 by default: the bf16 control (docs/benchmarks.md)
    for ok in ("auto", True, False):
        assert RunConfig.from_dict({"amp": ok}).amp == ok
    for bad in ("yes", 1, None, "bf16"):
        with pytest.raises(ConfigError, match="amp="):
            RunConfig.from_dict({"amp": bad})


def test_a_config_can_ask_for_fp32_and_bf16_training_side_by_side():
    """What the Fashion-MNIST control (issue 13) needs: a grid over amp, each value its own named variant."""
    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    cfg = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    cfg["experiments"]["main"]["grid"] = {"amp": [False, True]}
    runs = check_config(copy.deepcopy(cfg), schema)
    assert sorted(r.cfg.amp for r in runs) == [False, True]
    assert len({r.variant for r in runs}) == 2
    cfg["datasets"]["synthetic"]["settings"]["amp"] = "bf16"
    with pytest.raises(ConfigError, match="amp"):
        check_config(cfg, schema)


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
