"""ucir.tools.curves: how far the training curves still move over the last quarter of the epochs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ucir.tools import curves


def write_curve(path: Path, acc: list[float], loss: list[float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"stage": "phase 1", "epoch": range(1, len(acc) + 1), "lr": 0.1, "loss": loss, "train_acc": acc,
                  "img_per_s": 400.0, "seconds": 1.0}).to_csv(path, index=False)
    return path


def test_movement_is_the_last_epoch_against_a_quarter_of_the_epochs_before(tmp_path):
    acc = [50, 60, 70, 80, 85, 86, 87, 90]           # 8 epochs: epoch 8 against epoch 6
    loss = [2, 1.5, 1, 0.8, 0.6, 0.5, 0.45, 0.4]
    m = curves.movement(pd.read_csv(write_curve(tmp_path / "c.csv", acc, loss)))
    assert m == {"epochs": 8, "final_acc": 90.0, "acc_move": 4.0, "loss_move": pytest.approx(0.4 / 0.5 - 1)}


def test_a_curve_with_missing_epochs_is_refused(tmp_path):
    df = pd.read_csv(write_curve(tmp_path / "c.csv", [1, 2, 3, 4], [4, 3, 2, 1])).drop(index=1)
    with pytest.raises(ValueError, match=r"one row per epoch 1..4, got epochs \[1, 3, 4\]"):
        curves.movement(df)


def test_rows_per_base_model_and_per_method_and_stage(tmp_path):
    logs = tmp_path / "logs" / "fmnist"
    flat, rising = [80.0] * 20, [60.0 + i for i in range(20)]
    loss = [1.0] * 20
    write_curve(logs / "base/cosine-resnet20/seed1/train_base.csv", rising, loss)
    write_curve(logs / "base/cosine-resnet20/seed2/train_base.csv", flat, loss)
    for seed, k in ((1, 1), (1, 2), (2, 1)):
        write_curve(logs / f"icarl/default/p5/seed{seed}/phase{k}/train_phase.csv", flat, loss)
    write_curve(logs / "lucir/cbf/p5/seed1/phase1/finetune_balanced.csv", rising[:10], loss[:10])
    write_curve(logs / "lucir/cbf/p5/seed1/phase1/train_phase.csv", flat, loss)
    (logs / "lucir/cbf/p5/seed1/phase1/train_phase.log").write_text("not a curve")
    table = curves.summarize(curves.read([logs]))
    assert list(table.columns) == list(curves.COLUMNS)
    rows = {(r.trained, r.stage): r for r in table.itertuples()}
    assert set(rows) == {("base cosine-resnet20", "train_base"), ("icarl default", "train_phase"),
                         ("lucir cbf", "finetune_balanced"), ("lucir cbf", "train_phase")}
    base = rows["base cosine-resnet20", "train_base"]
    assert (base.curves, base.epochs, base.acc_move_median, base.acc_move_largest) == (2, 20, 2.5, 5.0)
    assert rows["icarl default", "train_phase"].curves == 3
    assert rows["lucir cbf", "finetune_balanced"].acc_move_largest == 2.0      # 10 epochs: epoch 10 against 8
    only = curves.summarize(curves.read([logs], variants=["default"]))
    assert set(only["trained"]) == {"base cosine-resnet20", "icarl default"}


def test_the_largest_movement_keeps_its_sign():
    df = pd.DataFrame({"dataset": "d", "trained": "t", "stage": "train_phase", "epochs": 20, "final_acc": 90.0,
                       "acc_move": [0.5, -3.0, 2.0], "loss_move": [0.0, 0.1, -0.1]})
    assert curves.summarize(df)["acc_move_largest"].item() == -3.0


def test_main_prints_the_table_and_a_folder_without_logs_is_an_error(tmp_path, capsys):
    logs = tmp_path / "logs" / "fmnist"
    write_curve(logs / "base/linear-resnet20/seed1/train_base.csv", [80.0] * 4, [1.0] * 4)
    assert curves.main([str(logs), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "base linear-resnet20" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "t.csv")["curves"].tolist() == [1]
    assert curves.main([str(tmp_path / "empty")]) == 1
    assert "no training log (train_base.csv" in capsys.readouterr().err


def test_a_curve_still_training_is_left_out_and_counted(tmp_path, capsys):
    logs = tmp_path / "logs" / "fmnist"
    for seed, acc in ((1, [70.0 + i for i in range(20)]), (2, [80.0] * 20), (3, [50.0 + 5 * i for i in range(8)])):
        write_curve(logs / f"icarl/default/p5/seed{seed}/phase1/train_phase.csv", acc, [1.0] * len(acc))
    assert curves.main([str(logs), "--csv", str(tmp_path / "t.csv")]) == 0
    row = pd.read_csv(tmp_path / "t.csv").iloc[0]
    assert (row.curves, row.epochs, row.acc_move_largest) == (2, 20, 5.0)
    assert "1 curves shorter than the others of their stage left out" in capsys.readouterr().err
