"""Watching a run (issue 15): ETA and lines inside long epochs in the training log, one CSV row per epoch beside it,
TensorBoard event files when asked (read back with TensorBoard's own event reader, no server), evaluation saying how
far it is."""
from __future__ import annotations

import csv
import re

import pytest
import torch

import ucir.features as features
from ucir.config import resolve
from ucir.data import load_run_data
from ucir.evaluate import evaluate_phase
from ucir.exemplars import empty_memory
from ucir.models import build_model
from ucir.train.loop import Objective, fit
from ucir.train.progress import EpochRecords, clock

CPU = torch.device("cpu")


def _setup(epochs=3):
    cfg = resolve("lucir", dict(dataset="s", source="synthetic", num_classes=4, base_classes=2, phases=1, K=1,
                                train_per_class=10, test_per_class=4, backbone="resnet8",
                                base_train=dict(epochs=epochs, milestones=[2], batch_size=8)))
    data = load_run_data(cfg, CPU)
    return cfg, data, data.train_indices(0, 2)                          # 20 images: 3 batches of 8, 8, 4


class Log(list):
    """A job's log as fit sees it: lines, and the epoch rows kept by `record`."""

    def __init__(self, record=None):
        super().__init__()
        self.record = record

    def __call__(self, msg):
        self.append(msg)


def _fit(cfg, data, idx, log, **kw):
    torch.manual_seed(0)
    net = build_model("resnet8", "cosine", 2, 3, False)
    fit(net, Objective(cfg, 0), data.train_loader, idx, cfg.base_train, device=CPU,
        g=torch.Generator().manual_seed(1), log=log, desc="phase 0", **kw)
    return net


def test_epoch_lines_give_the_time_and_the_eta_of_the_job():
    cfg, data, idx = _setup()
    log = Log()
    _fit(cfg, data, idx, log)
    epochs = [line for line in log if line.startswith("phase 0 epoch ")]
    assert len(epochs) == 3
    for k, line in enumerate(epochs, 1):
        assert re.fullmatch(rf"phase 0 epoch {k}/3 lr \S+ loss \S+ ce \S+ acc \S+ img/s \d+ \d+\.\ds eta "
                            r"\d+:\d\d:\d\d", line), line
    assert epochs[-1].endswith("eta 0:00:00")                        # nothing left after the last epoch


def test_long_epochs_get_progress_lines_between_epoch_lines(monkeypatch):
    cfg, data, idx = _setup(epochs=2)
    monkeypatch.setattr(features, "PROGRESS_EVERY", 0.0)             # "long": every batch is past the interval
    log = Log()
    _fit(cfg, data, idx, log)
    inner = [line for line in log if " batch " in line]
    # batches 1 and 2 of each epoch (the last batch of an epoch is reported by the epoch line itself)
    assert [re.match(r"phase 0: batch (\d)/3 of epoch (\d)/2, \d+ img/s, eta (\S+)$", m).groups()[:2]
            for m in inner] == [("1", "1"), ("2", "1"), ("1", "2"), ("2", "2")], inner
    assert all(not m.startswith("phase 0 epoch") for m in inner)      # never read as an epoch's end


def test_every_epoch_is_a_csv_row(tmp_path):
    cfg, data, idx = _setup()
    records = EpochRecords(tmp_path / "train_base.csv")
    log = Log(records)
    _fit(cfg, data, idx, log)
    with open(tmp_path / "train_base.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["stage", "epoch", "lr", "loss", "ce", "train_acc", "img_per_s", "seconds"]
    assert [r["lr"] for r in rows] == ["0.1", "0.1", "0.01"]                         # milestone at epoch 2, no float noise
    lines = [m for m in log if m.startswith("phase 0 epoch ")]
    for r, line in zip(rows, lines):                                  # the numbers the log line shows
        assert f"loss {float(r['loss']):.4f}" in line and f"acc {float(r['train_acc']):.2f}" in line
        assert r["stage"] == "phase 0" and float(r["seconds"]) > 0 and float(r["img_per_s"]) > 0


def test_a_resumed_job_keeps_the_rows_before_its_resume_point(tmp_path):
    path = tmp_path / "train_phase.csv"
    first = EpochRecords(path)
    first.start(0)
    for e in (1, 2, 3):                                               # epoch 3 done, state saved after epoch 2
        first("phase 1", {"epoch": e, "lr": 0.1, "loss": 1.0 / e})
    again = EpochRecords(path)
    again.start(2)
    again("phase 1", {"epoch": 3, "lr": 0.1, "loss": 0.25})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "1.0"), ("2", "0.5"), ("3", "0.25")]


def test_a_resumable_state_keeps_the_log_and_rows_and_the_resumed_job_writes_them_back(tmp_path, capsys):
    """kept() goes into the resumable state; Snakemake then deletes the job's log and CSV before rerunning it, and
    restore() in the resumed job writes the log's text to its stdout (the new log) and the rows to the CSV."""
    log, path = tmp_path / "train_phase.log", tmp_path / "train_phase.csv"
    log.write_text("[10:00:00 +    1.0s] device cpu\n[10:00:09 +    9.0s] phase 1 epoch 1/3 lr 0.1\n")
    first = EpochRecords(path, log_path=log)
    first.start(0)
    first("phase 1", {"epoch": 1, "lr": 0.1, "loss": 1.0})
    first("phase 1", {"epoch": 2, "lr": 0.1, "loss": 0.5})
    kept = first.kept()
    torch.save(kept, tmp_path / "state.pt")
    kept = torch.load(tmp_path / "state.pt", weights_only=True)         # plain builtins: loads weights-only
    log.unlink()
    path.unlink()
    capsys.readouterr()
    again = EpochRecords(path, log_path=log)
    again.restore(kept)
    assert capsys.readouterr().out == ("[10:00:00 +    1.0s] device cpu\n"
                                       "[10:00:09 +    9.0s] phase 1 epoch 1/3 lr 0.1\n")
    again.start(2)
    again("phase 1", {"epoch": 3, "lr": 0.01, "loss": 0.25})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["lr"], r["loss"]) for r in rows] == [("1", "0.1", "1.0"), ("2", "0.1", "0.5"),
                                                                 ("3", "0.01", "0.25")]


def test_a_state_saved_inside_the_first_epoch_keeps_no_rows(tmp_path):
    records = EpochRecords(tmp_path / "train_base.csv")
    records.start(0)
    assert records.kept() == {"rows": [], "log": None}
    records.restore(records.kept())
    records.start(0)
    records("phase 0", {"epoch": 1, "loss": 1.0})
    assert (tmp_path / "train_base.csv").read_bytes() == b"stage,epoch,loss\r\nphase 0,1,1.0\r\n"   # as csv writes it


def test_tensorboard_event_files_hold_every_epoch(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg, data, idx = _setup()
    records = EpochRecords(tmp_path / "train_base.csv", tmp_path / "train_base")
    _fit(cfg, data, idx, Log(records))
    records.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "train_base"))
    acc.Reload()
    assert {"phase 0/loss", "phase 0/ce", "phase 0/lr", "phase 0/train_acc"} <= set(acc.Tags()["scalars"])
    with open(tmp_path / "train_base.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    events = acc.Scalars("phase 0/loss")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)


def test_evaluation_says_what_it_extracts():
    cfg, data, _ = _setup()
    torch.manual_seed(0)
    ckpt_net = build_model("resnet8", "cosine", 2, 3, False)
    from ucir.checkpoint import make_checkpoint
    ckpt = make_checkpoint(ckpt_net, cfg, 0, 0, config={})
    log = Log()
    evaluate_phase(cfg, 0, ckpt, empty_memory(), data, CPU, log)
    assert log == [log[0]] and re.fullmatch(r"features of 8 test images in \d+\.\ds", log[0]), log


def test_clock():
    assert (clock(0), clock(59.6), clock(3725)) == ("0:00:00", "0:01:00", "1:02:05")
