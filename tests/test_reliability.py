"""Issue 6: bad configurations stop before any job, interrupted training resumes exactly, non-finite losses stop
with a message naming phase, epoch and term, checkpoints load safely, outputs carry provenance."""
import copy
import csv
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
import ucir.features as features
from ucir.train.loop import NonFiniteLoss, Objective, Preempted, fit
from ucir.train.progress import EpochRecords
from ucir.train.state import StopSignals
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


def _train(cfg, data, idx, state=None, log=lambda s: None, every=1, minutes=0.0):
    torch.manual_seed(0)
    net = build_model("resnet8", "cosine", 2, 3, False)
    g = torch.Generator().manual_seed(5)
    fit(net, Objective(cfg, 0), data.train_loader, idx, cfg.base_train, device=CPU, g=g, log=log, desc="phase 0",
        state_path=state, checkpoint_every=every, checkpoint_minutes=minutes, fingerprint="f")
    return net


class JobLog(list):
    """A job's log as fit sees it: its lines (also in the file `log_path`, when given), and its `record` (the CSV of
    epoch rows beside it, and the log file's text for a resumable state)."""

    def __init__(self, csv_path, then=None, log_path=None):
        super().__init__()
        self.record, self.then, self.log_path = EpochRecords(csv_path, log_path=log_path), then, log_path

    def __call__(self, msg):
        self.append(msg)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(msg + "\n")
        if self.then is not None:
            self.then(msg)

    def rows(self):
        with open(self.record.csv_path, newline="") as f:          # what each epoch computed, not how fast
            return [{k: v for k, v in r.items() if k not in ("img_per_s", "seconds")} for r in csv.DictReader(f)]


def _same_weights(a, b):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


# (signal, the log line it arrives in, where the state is saved: (epoch, batches done in it)). At an epoch's end
# the state is that of the next epoch's start; inside an epoch, the batch in flight finishes, then the save.
SIGNALS = [(signal.SIGTERM, "phase 0 epoch 2/", (2, 0)), (signal.SIGINT, "phase 0 epoch 2/", (2, 0)),
           (signal.SIGTERM, "phase 0: batch 1/3 of epoch 3/", (2, 1)),
           (signal.SIGINT, "phase 0: batch 1/3 of epoch 3/", (2, 1))]


@pytest.mark.parametrize("sig,line,saved_at", SIGNALS, ids=["term-end", "int-end", "term-inside", "int-inside"])
def test_a_signal_saves_state_and_the_rerun_resumes_to_the_same_weights_and_rows(tmp_path, monkeypatch, sig,
                                                                                   line, saved_at):
    """SIGTERM (Slurm's time limit or preemption) and SIGINT (Ctrl-C) alike: the state is saved, the job ends with
    128 + the signal's number, and the resumed job ends with the weights and epoch rows of an uninterrupted one."""
    monkeypatch.setattr(features, "PROGRESS_EVERY", 0.0)             # lines inside epochs, where a signal may land
    torch.set_num_threads(1)
    before = signal.getsignal(signal.SIGINT)     # Python's default, or SIG_IGN in a shell's background job
    cfg, data, idx = _setup()
    reference_log = JobLog(tmp_path / "reference.csv")
    reference = _train(cfg, data, idx, log=reference_log)
    state = tmp_path / "state.pt"

    def send(msg):
        if msg.startswith(line):
            assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler), \
                "no handler"
            os.kill(os.getpid(), sig)
    stopped = JobLog(tmp_path / "train_base.csv", send)
    with pytest.raises(Preempted) as stop:
        _train(cfg, data, idx, state, stopped)
    assert stop.value.code == 128 + sig
    at = "after epoch 2" if saved_at[1] == 0 else "at epoch 3, batch 1"
    assert f"phase 0: {signal.Signals(sig).name} {at}: saving the resumable state, then stopping" in stopped
    st = load_torch(state)
    assert (st["epoch"], st["batches_done"]) == saved_at
    assert signal.getsignal(signal.SIGINT) is before                  # handlers restored, whatever they were
    (tmp_path / "train_base.csv").unlink()                            # Snakemake deletes a job's logs first
    resumed_log = JobLog(tmp_path / "train_base.csv")
    resumed = _train(cfg, data, idx, state, resumed_log)
    assert any(f"resumed at epoch 3, batch {saved_at[1]}" in m for m in resumed_log)
    _same_weights(reference, resumed)
    assert resumed_log.rows() == reference_log.rows()                 # epochs 1-2 kept; epoch 3 whole, not a part
    assert not state.exists()           # removed once training completed


def test_the_class_balance_finetune_resumes_from_its_own_state(tmp_path, monkeypatch):
    """finetune_balanced keeps a resumable state too: SIGTERM inside its second epoch saves it, and the rerun ends
    with the checkpoint of an uninterrupted finetune (BatchNorm counts and all)."""
    from ucir.exemplars import select_exemplars
    from ucir.train.stages import class_balance_finetune, train_base, train_phase
    monkeypatch.setattr(features, "PROGRESS_EVERY", 0.0)
    torch.set_num_threads(1)
    cfg = resolve("lucir", dict(dataset="syn", source="synthetic", num_classes=4, base_classes=2, phases=1,
                                train_per_class=24, test_per_class=4, backbone="resnet8", per_class=8, cbf=True,
                                base_train=dict(epochs=1, batch_size=16), train=dict(epochs=1, batch_size=16),
                                cbf_train=dict(epochs=3, milestones=[2], batch_size=8)))
    data = load_run_data(cfg, CPU)
    quiet = lambda s: None                                                  # noqa: E731
    base = train_base(cfg, data, CPU, quiet)
    memory0 = select_exemplars(cfg, 0, base, None, data, CPU, quiet)
    phase1 = train_phase(cfg, 1, base, memory0, data, CPU, quiet)
    memory = select_exemplars(cfg, 1, phase1, memory0, data, CPU, quiet)

    def cbf(log, state=None):
        return class_balance_finetune(cfg, 1, phase1, base, memory, data, CPU, log, state_path=state)
    reference = cbf(quiet)
    state = tmp_path / "state_cbf.pt"

    def send(msg):
        if msg.startswith("phase 1 cbf: batch 1/") and " of epoch 2/" in msg:
            os.kill(os.getpid(), signal.SIGTERM)
    lines = []
    with pytest.raises(Preempted):
        cbf(lambda m: (lines.append(m), send(m)), state)
    assert "phase 1 cbf: SIGTERM at epoch 2, batch 1: saving the resumable state, then stopping" in lines
    lines.clear()
    resumed = cbf(lines.append, state)
    assert "phase 1 cbf: resumed at epoch 2, batch 1" in lines and not state.exists()
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_a_signal_that_arrives_while_the_state_is_written_is_in_the_state_too(tmp_path, monkeypatch):
    """The saved log says why the job stopped even when SIGTERM came during an epoch-end save: it is saved again."""
    import ucir.train.state as state_module
    cfg, data, idx = _setup()
    kept_logs = []

    def save_then_signal(obj, path):
        kept_logs.append(obj["record"]["log"])
        save_torch(obj, path)
        if len(kept_logs) == 1:
            os.kill(os.getpid(), signal.SIGTERM)                        # as if during the write of the first state
    monkeypatch.setattr(state_module, "save_torch", save_then_signal)
    log = JobLog(tmp_path / "train_base.csv", log_path=tmp_path / "train_base.log")
    with pytest.raises(Preempted):
        _train(cfg, data, idx, tmp_path / "state.pt", log)
    line = "phase 0: SIGTERM after epoch 1: saving the resumable state, then stopping"
    assert len(kept_logs) == 2 and line not in kept_logs[0] and kept_logs[1].endswith(line + "\n")
    st = load_torch(tmp_path / "state.pt")
    assert (st["epoch"], st["batches_done"], st["record"]["log"]) == (1, 0, kept_logs[1])


class Clock:
    """time.monotonic for ucir.train.state: 11 minutes pass between two readings."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 660.0
        return self.t


class Killed(Exception):
    """Stands for SIGKILL: no handler runs."""


@pytest.mark.parametrize("minutes", [10.0, 0.0])
def test_training_saves_its_state_every_checkpoint_minutes(tmp_path, monkeypatch, minutes):
    """With checkpoint_minutes (and no epoch-based saves), a job killed inside its third epoch resumes from a state
    saved inside that epoch, to the weights of an uninterrupted run; with 0 there is nothing to resume from."""
    import ucir.train.state as state_module
    monkeypatch.setattr(features, "PROGRESS_EVERY", 0.0)
    torch.set_num_threads(1)
    cfg, data, idx = _setup()
    reference = _train(cfg, data, idx, every=0)
    monkeypatch.setattr(state_module.time, "monotonic", Clock())
    state = tmp_path / "state.pt"
    lines = []

    def kill(msg):
        lines.append(msg)
        if msg.startswith("phase 0: batch 2/3 of epoch 3/"):
            raise Killed
    with pytest.raises(Killed):
        _train(cfg, data, idx, state, kill, every=0, minutes=minutes)
    if not minutes:
        assert not state.exists() and not any("saving the resumable state" in m for m in lines)
        return
    st = load_torch(state)
    assert (st["epoch"], st["batches_done"]) == (2, 1)               # the last check before the kill
    assert "phase 0: saving the resumable state at epoch 3, batch 1 (every 10 minutes)" in lines
    assert "phase 0: saving the resumable state after epoch 2 (every 10 minutes)" in lines
    resumed = _train(cfg, data, idx, state, every=0, minutes=minutes)
    _same_weights(reference, resumed)


def test_a_second_sigint_stops_at_once():
    """Ctrl-C once: the loop saves and stops after its step; twice: KeyboardInterrupt, as in any Python program."""
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.caught == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_resumed_job_removes_the_temporary_files_of_killed_saves(tmp_path):
    """A save killed between creating its temporary file and renaming it leaves `.state.pt.<random>.tmp`: the next
    attempt removes it before it trains, and nothing else."""
    cfg, data, idx = _setup()
    state = tmp_path / "state.pt"
    stale = [tmp_path / ".state.pt.k3j_x9q1.tmp", tmp_path / ".state.pt.0a1b2c3d4e5f.tmp"]
    other = [tmp_path / ".model.pt.0a1b2c3d4e5f.tmp", tmp_path / ".state.pt.tmp", tmp_path / "state.pt.old"]
    for p in stale + other:
        p.write_bytes(b"partial")
    lines = []
    _train(cfg, data, idx, state, lines.append, every=0)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in other)
    assert [m for m in lines if "removed" in m] == [f"phase 0: removed {p.name}, left by a save that was killed"
                                                   for p in sorted(stale)]


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


# ------------------------------------------------------------------------------------------- shared folders
def _write_each_kind(folder: Path) -> list[Path]:
    """One file of each kind the workflow writes, each through its own writer: models, memories and resumable
    states (save_torch), metrics and summaries (save_json), class lists (save_text), a training job's epoch CSV
    (EpochRecords), the tables (write_csv) and the figures (save: PNG and PDF)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ucir.io import save_json, save_text
    from ucir.report.figures.common import save
    from ucir.report.tables import write_csv
    save_torch({"model": {"w": torch.zeros(2)}}, folder / "model_cbf.pt")
    save_json({"acc": 1.0}, folder / "metrics.json")
    save_text("n01440764\n", folder / "classes.txt")
    records = EpochRecords(folder / "train_phase.csv")
    records.start(0)
    records("phase 1", {"epoch": 1, "loss": 1.0})
    write_csv(pd.DataFrame({"acc": [1.0]}), str(folder / "summary.csv"))
    save(plt.figure(), str(folder / "accuracy.png"), str(folder / "accuracy.pdf"))
    return sorted(folder.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_every_kind_of_output_gets_the_permissions_the_umask_allows(tmp_path, umask):
    """0644 under the usual umask 0022, so that colleagues sharing the project folder read models and metrics;
    0664 under 0002 (group-writable project folders); 0600 under 0077. Atomic writes create their temporary file
    with the umask too (tempfile.mkstemp would give 0600 whatever the umask)."""
    old = os.umask(umask)
    try:
        files = _write_each_kind(tmp_path)
    finally:
        os.umask(old)
    assert [p.name for p in files] == ["accuracy.pdf", "accuracy.png", "classes.txt", "metrics.json",
                                       "model_cbf.pt", "summary.csv", "train_phase.csv"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_a_writer_removes_what_a_killed_writer_of_the_same_file_left(tmp_path):
    """A process killed inside save_torch leaves `.model.pt.<random>.tmp`; the next write of model.pt (the rerun of
    its job) removes it, and leaves the temporaries of other files alone."""
    stale = [tmp_path / ".model.pt.k3j_x9q1.tmp", tmp_path / ".model.pt.0a1b2c3d4e5f.tmp"]
    others = [tmp_path / ".memory.pt.0a1b2c3d4e5f.tmp", tmp_path / ".model.pt.old.0a1b2c3d4e5f.tmp"]
    for p in stale + others:
        p.write_bytes(b"partial")
    save_torch({"w": torch.ones(1)}, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", *(p.name for p in others)])


# ------------------------------------------------------------------------------------------- the Slurm profile
def test_the_slurm_profile_signals_jobs_before_their_time_limit_and_requeues_preempted_ones():
    """SIGTERM (which makes a training job save its state) reaches every job step a while before the time limit
    (no `B:`: the batch shell alone would not pass it on), through a slurm_extra that the plugin accepts, and
    preempted jobs are requeued. tests/test_slurm.py checks both options reach sbatch on a real Slurm."""
    import ast
    from types import SimpleNamespace
    validation = pytest.importorskip("snakemake_executor_plugin_slurm.validation")
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["slurm-requeue"] is True
    extra = ast.literal_eval(profile["default-resources"]["slurm_extra"])     # Snakemake evaluates resources
    m = re.fullmatch(r"--signal=TERM@(\d+)", extra)
    assert m and 60 < int(m[1]) < 600, extra               # Slurm may signal 60 s early; CPU rules run 10 min
    validation.validate_slurm_extra(SimpleNamespace(resources=SimpleNamespace(slurm_extra=extra)))
    from ucir import pipeline                                           # the rules' own resources
    own = {r.name: pipeline.resources_of(r.name) for r in pipeline.RULES} | profile.get("set-resources", {})
    for rule, res in own.items():                                       # a rule's own slurm_extra would replace it
        assert "--signal=TERM@" in res.get("slurm_extra", extra), rule
