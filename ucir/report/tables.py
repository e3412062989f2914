"""Tidy tables: one row per run x phase, a summary per setting (mean and std over seeds), and the comparison with
the paper's published CIFAR-100 numbers."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..io import save_json
from ..metrics import average_incremental_accuracy, forgetting

RUN_KEYS = ["dataset", "method", "variant", "phases", "seed"]
SETTING_KEYS = ["dataset", "method", "variant", "phases"]
METRICS = ["cnn_all", "cnn_old", "cnn_new", "nme_all", "nme_old", "nme_new"]
PHASE_COLS = RUN_KEYS + ["phase", "classes_seen"] + METRICS

# Average incremental accuracy (%) on CIFAR-100 B50, R_per = 20, from the legends of the paper's Fig. 5;
# the iCaRL numbers are its NME classifier (iCaRL-NME).
PAPER = [
    # (method, classifier, phases, value, label)
    ("lucir", "cnn", 5, 63.42, "Ours-CNN"), ("lucir", "cnn", 10, 60.18, "Ours-CNN"),
    ("lucir", "nme", 5, 63.12, "Ours-NME"), ("lucir", "nme", 10, 60.12, "Ours-NME"),
    ("icarl", "nme", 5, 57.17, "iCaRL-NME"), ("icarl", "nme", 10, 52.57, "iCaRL-NME"),
]
# the settings a run must have to be compared with those numbers (Sec. 4.1-4.2)
PAPER_PROTOCOL = {"source": "cifar100", "num_classes": 100, "base_classes": 50, "per_class": 20, "total": None,
                  "train_per_class": None, "test_per_class": None}
PAPER_SETTING = "CIFAR-100, B50, R_per = 20, full data"


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


def paper_protocol(settings: dict) -> bool:
    """Whether a run's resolved settings are the paper's CIFAR-100 protocol (PAPER_PROTOCOL)."""
    return all(settings.get(k) == v for k, v in PAPER_PROTOCOL.items())


def mean_std(runs: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof 1; NaN for one seed) over the runs of each `by` group, with the
    number of seeds: columns by + seeds + {col}_mean, {col}_std."""
    g = runs.groupby(by, sort=True)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out.insert(0, "seeds", g.size())
    return out.reset_index()


def aggregate(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(phases, summary, paper_comparison) tables over all runs of one dataset."""
    phases = pd.DataFrame([r for s in summaries for r in s["rows"]], columns=PHASE_COLS)   # columns in this order
    phases = phases.sort_values(RUN_KEYS + ["phase"])
    runs = pd.DataFrame([dict({k: s[k] for k in RUN_KEYS + SUMMARY_COLS}, paper_protocol=paper_protocol(s["config"]))
                         for s in summaries])
    summary = mean_std(runs, SETTING_KEYS, SUMMARY_COLS)
    return phases.reset_index(drop=True), summary, paper_comparison(runs)


def paper_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's average incremental accuracies beside ours (mean and std over seeds of the default-variant runs
    under the paper's protocol) and ours - paper, in percentage points, rounded to 2 decimals."""
    rows = []
    for method, clf, p, value, name in PAPER:
        sel = runs[runs.paper_protocol & (runs.method == method) & (runs.variant == "default") & (runs.phases == p)]
        acc = sel[f"avg_inc_{clf}"]
        mean = float(acc.mean()) if len(acc) else float("nan")
        std = float(acc.std()) if len(acc) > 1 else float("nan")
        rows.append({"method": name, "classifier": clf.upper(), "phases": p, "paper": value,
                     "ours_mean": mean, "ours_std": std, "seeds": len(acc), "difference": mean - value,
                     "setting": PAPER_SETTING if len(acc) else f"no run with the paper's setting ({PAPER_SETTING})"})
    return pd.DataFrame(rows).round({"ours_mean": 2, "ours_std": 2, "difference": 2})


def run_averages(phases: pd.DataFrame) -> pd.DataFrame:
    """Average incremental accuracy of every run from the per-phase table (mean over its phases, base included;
    NaN where a phase has no value): one row per run with avg_inc_cnn and avg_inc_nme."""
    g = phases.groupby(RUN_KEYS, sort=True)[["cnn_all", "nme_all"]]
    out = g.agg(lambda s: s.mean(skipna=False)).reset_index()
    return out.rename(columns={"cnn_all": "avg_inc_cnn", "nme_all": "avg_inc_nme"})
