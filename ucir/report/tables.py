"""Tidy tables: one row per run x phase, a summary per setting (mean and std over seeds), and the comparison with
the paper's published CIFAR-100 numbers."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..io import save_json
from ..metrics import average_incremental_accuracy, forgetting

RUN_KEYS = ["dataset", "method", "variant", "phases", "seed"]
SETTING_KEYS = ["dataset", "method", "variant", "phases"]
METRICS = ["cnn_all", "cnn_old", "cnn_new", "nme_all", "nme_old", "nme_new"]

# Average incremental accuracy (%) on CIFAR-100 B50 from the paper (Fig. 5 legends); iCaRL's is its NME number.
PAPER = [
    # (method, classifier, phases, value, label)
    ("lucir", "cnn", 5, 63.42, "Ours-CNN"), ("lucir", "cnn", 10, 60.18, "Ours-CNN"),
    ("lucir", "nme", 5, 63.12, "Ours-NME"), ("lucir", "nme", 10, 60.12, "Ours-NME"),
    ("icarl", "nme", 5, 57.17, "iCaRL"), ("icarl", "nme", 10, 52.57, "iCaRL"),
]


def _nan(x):
    return float("nan") if x is None else x


def phase_rows(metrics: list[dict], identity: dict) -> list[dict]:
    rows = []
    for m in metrics:
        row = {k: identity[k] for k in RUN_KEYS}
        row.update(phase=m["phase"], classes_seen=m["classes_seen"])
        for clf in ("cnn", "nme"):
            for part in ("all", "old", "new"):
                row[f"{clf}_{part}"] = _nan((m.get(clf) or {}).get(part))
        rows.append(row)
    return rows


def run_summary(metrics: list[dict], identity: dict) -> dict[str, Any]:
    """Average incremental accuracy (all phases, base included), final accuracy and forgetting, CNN and NME."""
    metrics = sorted(metrics, key=lambda m: m["phase"])
    out = dict(identity, rows=phase_rows(metrics, identity), config=metrics[-1]["config"],
               provenance=metrics[-1]["provenance"])
    for clf in ("cnn", "nme"):
        accs = [(m.get(clf) or {}).get("all") for m in metrics]
        ok = all(a is not None for a in accs)
        out[f"avg_inc_{clf}"] = average_incremental_accuracy(accs) if ok else float("nan")
        out[f"final_{clf}"] = accs[-1] if ok else float("nan")
        groups = [m.get(f"{clf}_groups") for m in metrics]
        out[f"forgetting_{clf}"] = forgetting(groups) if ok and all(groups) and len(groups) > 1 else float("nan")
    return out


def write_run_outputs(summary: dict, summary_path: str, table_path: str) -> None:
    save_json(summary, summary_path)
    pd.DataFrame(summary["rows"]).to_csv(table_path, index=False)


SUMMARY_COLS = ["avg_inc_cnn", "avg_inc_nme", "final_cnn", "final_nme", "forgetting_cnn", "forgetting_nme"]


def aggregate(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(phases, summary, paper_comparison) tables over all runs."""
    phases = pd.DataFrame([r for s in summaries for r in s["rows"]]).sort_values(RUN_KEYS + ["phase"])
    runs = pd.DataFrame([{k: s[k] for k in RUN_KEYS + SUMMARY_COLS} for s in summaries])
    g = runs.groupby(SETTING_KEYS, sort=True)
    summary = g[SUMMARY_COLS].agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary.insert(0, "seeds", g.size())
    summary = summary.reset_index()
    return phases.reset_index(drop=True), summary, paper_comparison(summary)


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, clf, p, value, label in PAPER:
        sel = summary[(summary.dataset == "cifar100") & (summary.method == method) & (summary.variant == "default")
                      & (summary.phases == p)]
        ours = float(sel[f"avg_inc_{clf}_mean"].iloc[0]) if len(sel) else float("nan")
        std = float(sel[f"avg_inc_{clf}_std"].iloc[0]) if len(sel) else float("nan")
        rows.append({"dataset": "cifar100", "method": method, "classifier": clf, "phases": p, "paper_label": label,
                     "paper": value, "ours_mean": ours, "ours_std": std,
                     "difference": ours - value if not math.isnan(ours) else float("nan")})
    return pd.DataFrame(rows)
