"""Have the training curves flattened? Per method and stage, how far the training accuracy and loss still move over
the last quarter of the epochs, and the final training accuracy. Under a step schedule the last quarter runs at the
smallest learning rate, so a flat last quarter is necessary, not enough: compare the final training accuracy with a
run at twice the epochs (two log folders, one table; docs/results.md, *The budget*).

    python -m ucir.tools.curves logs/fashion_mnist [logs/fashion_mnist_2x ...] [--variants default] [--csv FILE]

Reads every training job's per-epoch rows (train_base.csv, train_phase.csv, finetune_balanced.csv: the `epochs` log
of ucir.train.progress) under the given log folders. A curve's movement is its value at the last epoch minus its
value a quarter of the epochs before (epoch E - E/4, e.g. 15 of 20): training accuracy in points, the loss relative
to its value then. One row per dataset x (base model | method and variant) x stage: the number of curves, the median
final training accuracy, the median and the largest (in size) movement of the accuracy, the median movement of the
loss. Base models are named by their folder (their head and backbone); the runs that share one are those with that
head. A curve shorter than the others of its stage (a job still training) is left out and counted on stderr.
Columns are defined once, in COLUMNS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..pipeline import TRAINING_RULES

STAGES = TRAINING_RULES                 # train_base, train_phase, finetune_balanced: each a <stage>.csv
COLUMNS = ("dataset", "trained", "stage", "curves", "epochs", "final_acc", "acc_move_median", "acc_move_largest",
           "loss_move_median")


def movement(curve: pd.DataFrame) -> dict[str, float]:
    """Final training accuracy; accuracy (points) and loss (relative) at the last epoch minus a quarter before."""
    curve = curve.sort_values("epoch")
    epochs = int(curve["epoch"].iloc[-1])
    then = curve[curve["epoch"] == epochs - max(epochs // 4, 1)]
    if len(curve) != epochs or then.empty:
        raise ValueError(f"expected one row per epoch 1..{epochs}, got epochs {curve['epoch'].tolist()}")
    last, before = curve.iloc[-1], then.iloc[0]
    return {"epochs": epochs, "final_acc": float(last["train_acc"]),
            "acc_move": float(last["train_acc"] - before["train_acc"]),
            "loss_move": float(last["loss"] / before["loss"] - 1.0)}


def what_trained(rel: Path) -> tuple[str, str, str]:
    """(dataset, base model or method/variant, stage) from a CSV's path under logs/."""
    parts, stage = rel.parts, rel.stem
    if stage not in STAGES:
        raise ValueError(f"{rel}: not a training log ({', '.join(s + '.csv' for s in STAGES)})")
    if parts[1] == "base":                       # {dataset}/base/{base}/seed{seed}/train_base.csv
        return parts[0], f"base {parts[2]}", stage
    return parts[0], f"{parts[1]} {parts[2]}", stage     # {dataset}/{method}/{variant}/p{P}/seed{S}/phase{k}/...


def read(folders: list[Path], variants: list[str] = ()) -> pd.DataFrame:
    """One row per training curve: dataset, trained, stage, epochs, final_acc, acc_move, loss_move."""
    rows = []
    for folder in folders:
        found = sorted(p for s in STAGES for p in folder.rglob(f"{s}.csv"))
        if not found:
            raise FileNotFoundError(f"{folder}: no training log ({', '.join(s + '.csv' for s in STAGES)}) under it")
        for path in found:
            dataset, trained, stage = what_trained(path.relative_to(folder.parent))
            if variants and not trained.startswith("base ") and trained.split()[1] not in variants:
                continue
            rows.append({"dataset": dataset, "trained": trained, "stage": stage, **movement(pd.read_csv(path))})
    return pd.DataFrame(rows)


def finished(curves: pd.DataFrame) -> pd.DataFrame:
    """The curves as long as the longest of their dataset x trained x stage: a shorter one is a job still training
    (or stopped), whose rows so far would pass for a shorter budget."""
    longest = curves.groupby(["dataset", "trained", "stage"])["epochs"].transform("max")
    return curves[curves["epochs"] == longest]


def summarize(curves: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x trained x stage: curves, epochs, median final accuracy, median and largest accuracy movement,
    median loss movement (%)."""
    def largest(s: pd.Series) -> float:
        return float(s.loc[s.abs().idxmax()])

    g = curves.groupby(["dataset", "trained", "stage"], sort=True)
    out = g.agg(curves=("acc_move", "size"), epochs=("epochs", "max"), final_acc=("final_acc", "median"),
                acc_move_median=("acc_move", "median"), acc_move_largest=("acc_move", largest),
                loss_move_median=("loss_move", "median")).reset_index()
    out["loss_move_median"] *= 100.0
    return out[list(COLUMNS)].round(2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="log folders, e.g. logs/fashion_mnist")
    ap.add_argument("--variants", nargs="+", default=[], help="only these variants' runs (base models always)")
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    try:
        curves = read(args.folders, args.variants)
    except (OSError, ValueError) as e:
        print(f"ucir.tools.curves: {e}", file=sys.stderr)
        return 1
    done = finished(curves)
    if len(done) < len(curves):
        print(f"ucir.tools.curves: {len(curves) - len(done)} curves shorter than the others of their stage left out "
              "(jobs still training?)", file=sys.stderr)
    table = summarize(done)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
