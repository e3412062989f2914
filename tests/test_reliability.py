"""Issue 6: bad configurations stop before any job, interrupted training resumes exactly, non-finite losses stop
with a message naming phase, epoch and term, checkpoints load safely, outputs carry provenance."""
import copy
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml

from ucir.checkpoint import CheckpointError, make_checkpoint, model_from_checkpoint
from ucir.config import ConfigError, resolve
from ucir.data import load_run_data
from ucir.io import load_torch, provenance, save_torch
from ucir.models import build_model
from ucir.train.loop import NonFiniteLoss, Objective, Preempted, fit
from ucir.validate import check_config, load_schema

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
TINY = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
CPU = torch.device("cpu")


def _set(cfg, path, value):
    *head, last = path.split(".")
    d = cfg
    for k in head:
        d = d[k]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value
    return cfg


_DELETE = object()
S = "datasets.synthetic"
BAD = [  # (what, edits {path: value}, words the message must contain)
    ("unknown top-level key", {"seedz": [1]}, ["seedz"]),
    ("unknown setting", {f"{S}.settings.lambda_bse": 5}, ["lambda_bse", "lambda_base"]),
    ("wrong type", {"seeds": "1993"}, ["seeds", "1993", "array"]),
    ("wrong type of a setting", {f"{S}.settings.lambda_base": "five"}, ["lambda_base", "five"]),
    ("negative epochs", {f"{S}.settings.train.epochs": -1}, ["epochs", "-1", "minimum"]),
    ("margin above 2", {f"{S}.settings.margin": 2.5}, ["margin", "2.5"]),
    ("margin zero", {f"{S}.settings.margin": 0}, ["margin", "0"]),
    ("K above the new classes per phase", {f"{S}.settings.K": 3}, ["K=3", "new classes per phase (2)"]),
    ("classes that do not divide into phases", {"experiments.main.phases": [3]},
     ["phases=3", "divide the 4 incremental classes"]),
    ("fixed memory below one exemplar per class", {f"{S}.settings.total": 4, f"{S}.settings.per_class": None},
     ["total=4", "num_classes (6)"]),
    ("unknown dataset source", {f"{S}.source": "cifar10"}, ["source", "cifar10", "cifar100"]),
    ("unknown method", {"experiments.main.methods": ["ewc"]}, ["methods", "ewc", "lucir"]),
    ("experiment names an unknown dataset", {"experiments.main.datasets": ["cifar"]}, ["datasets", "'cifar'"]),
    ("experiment names an unknown variant", {"experiments.main.variants": ["cn_lc"]}, ["variants", "'cn_lc'"]),
    ("base classes not below num_classes", {f"{S}.base_classes": 6}, ["base_classes=6"]),
    ("unknown lambda rule", {f"{S}.settings.lambda_rule": "sqrt"}, ["lambda_rule", "sqrt", "code"]),
    ("unknown grid key", {"experiments.main.grid": {"lamda_base": [1.0]}}, ["lamda_base"]),
    ("negative per_class", {f"{S}.settings.per_class": -2}, ["per_class", "-2"]),
    ("distillation that needs a cosine head", {f"{S}.settings.head": "linear"}, ["distill", "cosine"]),
    ("missing dataset folder", {f"{S}.source": "cifar100", f"{S}.root": "/nonexistent/cifar"},
     ["datasets.synthetic.root", "/nonexistent/cifar", "download: true"]),
    ("download where the source cannot", {f"{S}.source": "fashion_mnist", f"{S}.download": True},
     ["download", "fashion_mnist"]),
    ("missing required key", {f"{S}.num_classes": _DELETE}, ["num_classes"]),
    ("empty seed list", {"seeds": []}, ["seeds"]),
    ("unknown backbone", {f"{S}.settings.backbone": "vgg16"}, ["backbone", "vgg16", "resnet32"]),
]


@pytest.mark.parametrize("what,edits,words", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_with_a_message_naming_the_key(what, edits, words):
    cfg = copy.deepcopy(TINY)
    for path, value in edits.items():
        _set(cfg, path, value)
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA)
    for w in words:
        assert w in str(e.value), f"{what}: {w!r} not in {e.value}"


def test_the_tiny_config_itself_is_valid():
    assert len(check_config(copy.deepcopy(TINY), SCHEMA)) == 1


# ---------------------------------------------------------------------------------------------- training loop
SCHED = dict(epochs=4, milestones=[2], batch_size=16)


def _setup():
    cfg = resolve("lucir", dict(dataset="syn", source="synthetic", num_classes=4, base_classes=2, phases=1,
                                train_per_class=24, test_per_class=4, backbone="resnet8", base_train=SCHED))
    data = load_run_data(cfg, CPU)
    return cfg, data, data.train_indices(0, 2)


def _train(cfg, data, idx, state=None, log=lambda s: None):
    torch.manual_seed(0)
    net = build_model("resnet8", "cosine", 2, 3, False)
    g = torch.Generator().manual_seed(5)
    fit(net, Objective(cfg, 0), data.train_loader, idx, cfg.base_train, device=CPU, g=g, log=log, desc="phase 0",
        state_path=state, checkpoint_every=1, fingerprint="f")
    return net


def test_sigterm_saves_state_and_the_rerun_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    cfg, data, idx = _setup()
    reference = _train(cfg, data, idx)
    state = tmp_path / "state.pt"
    lines = []

    def log(msg):                       # SIGTERM arrives during epoch 3, as SLURM sends it before preemption
        lines.append(msg)
        if msg.startswith("phase 0 epoch 2/"):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Preempted):
        _train(cfg, data, idx, state, log)
    assert state.exists()
    st = load_torch(state)
    assert (st["epoch"], st["batches_done"]) == (2, 1)   # the batch in flight finished, then the save
    resumed_lines = []
    resumed = _train(cfg, data, idx, state, resumed_lines.append)
    assert any("resumed at epoch 3, batch 1" in m for m in resumed_lines)
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert not state.exists()           # removed once training completed


def test_state_from_another_configuration_is_ignored(tmp_path):
    cfg, data, idx = _setup()
    state = tmp_path / "state.pt"
    save_torch({"fingerprint": "other", "model": {}, "epoch": 3, "batches_done": 0}, state)
    lines = []
    _train(cfg, data, idx, state, lines.append)
    assert any("ignoring a resumable state" in m for m in lines)


def test_non_finite_loss_stops_naming_phase_epoch_and_term():
    cfg, data, idx = _setup()
    teacher = build_model("resnet8", "cosine", 2, 3, False)
    net = build_model("resnet8", "cosine", 2, 3, False)
    cfg1 = resolve("lucir", dict(cfg.to_dict(), margin_ranking=False))
    with pytest.raises(NonFiniteLoss, match=r"phase 1, epoch 1: loss term 'lf' became NaN or infinite at batch 1$"):
        fit(net, Objective(cfg1, 1, float("nan"), teacher), data.train_loader, idx, cfg.base_train, device=CPU,
            g=torch.Generator().manual_seed(0), log=lambda s: None, desc="phase 1")


# ------------------------------------------------------------------------------------------------ safe loading
def test_checkpoints_refuse_other_configurations_and_unsafe_pickles(tmp_path):
    cfg, _, _ = _setup()
    net = build_model("resnet8", "cosine", 2, 3, False)
    path = tmp_path / "model.pt"
    save_torch(make_checkpoint(net, cfg, 0, 0, config={}), path)
    model_from_checkpoint(load_torch(path), cfg, 0)                         # loads
    other = resolve("lucir", dict(cfg.to_dict(), backbone="resnet14"))
    with pytest.raises(CheckpointError, match="backbone"):
        model_from_checkpoint(load_torch(path), other, 0)
    more = resolve("lucir", dict(cfg.to_dict(), num_classes=6, base_classes=4))
    with pytest.raises(CheckpointError, match="num_classes"):
        model_from_checkpoint(load_torch(path), more, 0)
    torch.save({"evil": Path("/")}, tmp_path / "pickle.pt")                  # arbitrary objects are refused
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_torch(tmp_path / "pickle.pt")


def test_the_code_loads_torch_files_only_weights_only_and_yaml_only_safely():
    for f in list((REPO / "ucir").rglob("*.py")) + list((REPO / "workflow").rglob("*.py")):
        text = f.read_text()
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call, f"{f}: torch.load({call})"
        assert not re.search(r"yaml\.load\(", text), f"{f}: use yaml.safe_load"
        assert not re.search(r"\bpickle\.loads?\(", text) or f.name == "sources.py", f


def test_provenance_records_versions_commit_and_device():
    p = provenance(CPU)
    for key in ("ucir_version", "git_commit", "git_dirty", "torch", "torchvision", "device", "python"):
        assert key in p
    assert p["device"] == "cpu" and p["torch"] == torch.__version__


def test_a_failed_write_leaves_neither_the_output_nor_a_temporary_file(tmp_path, monkeypatch):
    """A full disk (ENOSPC) in the middle of saving: the output path never exists half-written."""
    import errno

    import ucir.io as io

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_torch({"x": torch.zeros(1)}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_compile_flag_keeps_checkpoint_keys():
    from ucir.checkpoint import to_device
    cfg, _, _ = _setup()
    net = build_model("resnet8", "cosine", 2, 3, False)
    keys = list(net.state_dict())
    compiled = to_device(net, resolve("lucir", dict(cfg.to_dict(), compile=True)), CPU)
    assert list(compiled.state_dict()) == keys
