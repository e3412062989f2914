"""Tidy tables: one row per run x phase, the accuracy matrix (one row per run x phase x class group x classifier), a
summary per setting (mean and std over seeds), and the comparison with the paper's published CIFAR-100 numbers.
Every float in them is a percentage (or percentage points); the CSVs round them to 2 decimals (write_csv), while
metrics.json and summary.json keep full precision."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..io import save_json
from ..metrics import average_incremental_accuracy, backward_transfer, forgetting, mean_defined
from . import ICARL, OURS

RUN_KEYS = ["dataset", "method", "variant", "phases", "seed"]
SETTING_KEYS = ["dataset", "method", "variant", "phases"]
CLASSIFIERS = ["cnn", "nme"]
METRICS = [f"{clf}_{part}" for clf in CLASSIFIERS for part in ("all", "old", "new", "top5")]
PHASE_COLS = RUN_KEYS + ["phase", "classes_seen"] + METRICS
MATRIX_COLS = RUN_KEYS + ["phase", "group", "classifier", "accuracy"]
DECIMALS = 2                                    # of every percentage in a CSV

# Average incremental accuracy (%) on CIFAR-100 B50, R_per = 20, from the legends of the paper's Fig. 5;
# the iCaRL numbers are its NME classifier (iCaRL-NME).
PAPER = [
    # (method, classifier, phases, value, label)
    (OURS, "cnn", 5, 63.42, "Ours-CNN"), (OURS, "cnn", 10, 60.18, "Ours-CNN"),
    (OURS, "nme", 5, 63.12, "Ours-NME"), (OURS, "nme", 10, 60.12, "Ours-NME"),
    (ICARL, "nme", 5, 57.17, "iCaRL-NME"), (ICARL, "nme", 10, 52.57, "iCaRL-NME"),
]
# the settings a run must have to be compared with those numbers (Sec. 4.1-4.2)
PAPER_PROTOCOL = {"source": "cifar100", "num_classes": 100, "base_classes": 50, "per_class": 20, "total": None,
                  "train_per_class": None, "test_per_class": None}
PAPER_SETTING = "CIFAR-100, B50, R_per = 20, full data"
# what the paper says about the runs behind each Fig. 5 number (caption: "three runs"; Sec. 4.1: "the classes are
# arranged in a fixed random order"; the official code's order is np.random.seed(1993))
PAPER_RUNS = 3
PAPER_ORDERS = "not stated: 3 runs (Fig. 5 caption) of 'a fixed random order' (Sec. 4.1); official code: seed 1993"


def write_csv(df: pd.DataFrame, path: str, decimals: dict[str, int] | None = None) -> None:
    """Every table's CSV writer: floats (percentages) rounded to DECIMALS, so float32 noise such as
    57.499998807907104 is written as 57.5; `decimals` for columns that are not percentages (p-values)."""
    df.round({c: (decimals or {}).get(c, DECIMALS) for c in df.columns}).to_csv(path, index=False)


def _nan(x):
    return float("nan") if x is None else x


def phase_rows(metrics: list[dict], identity: dict) -> list[dict]:
    rows = []
    for m in metrics:
        row = {k: identity[k] for k in RUN_KEYS}
        row.update(phase=m["phase"], classes_seen=m["classes_seen"])
        for clf in CLASSIFIERS:
            for part in ("all", "old", "new"):
                row[f"{clf}_{part}"] = _nan((m.get(clf) or {}).get(part))
            row[f"{clf}_top5"] = _nan(m.get(f"{clf}_top5"))           # None with 5 classes or fewer
        rows.append(row)
    return rows


def matrix_rows(metrics: list[dict], identity: dict) -> list[dict]:
    """The accuracy matrix in long form: after each phase, the accuracy on each class group learned so far
    (group 0 = base classes, group j = the classes of phase j), per classifier."""
    rows = []
    for m in metrics:
        for clf in CLASSIFIERS:
            for g, acc in enumerate(m.get(f"{clf}_groups") or []):
                rows.append(dict({k: identity[k] for k in RUN_KEYS}, phase=m["phase"], group=g, classifier=clf,
                                 accuracy=_nan(acc)))
    return rows


def run_summary(metrics: list[dict], identity: dict, settings: dict) -> dict[str, Any]:
    """Per classifier (CNN, NME): average incremental accuracy (all phases, base included), final accuracy,
    forgetting and backward transfer (over the class groups), and the average top-5 accuracy over the phases with
    more than 5 classes seen. NaN where some phase lacks the classifier (e.g. NME without exemplars).
    settings: what the run's results depend on (ucir.deps.run_settings), recorded as its `config`."""
    metrics = sorted(metrics, key=lambda m: m["phase"])
    out = dict(identity, rows=phase_rows(metrics, identity), matrix=matrix_rows(metrics, identity),
               config=settings, provenance=metrics[-1]["provenance"])
    nan = float("nan")
    for clf in CLASSIFIERS:
        accs = [(m.get(clf) or {}).get("all") for m in metrics]
        ok = all(a is not None for a in accs)
        out[f"avg_inc_{clf}"] = average_incremental_accuracy(accs) if ok else nan
        out[f"final_{clf}"] = accs[-1] if ok else nan
        groups = [m.get(f"{clf}_groups") for m in metrics]
        full = ok and all(groups) and len(groups) > 1
        out[f"forgetting_{clf}"] = forgetting(groups) if full else nan
        out[f"bwt_{clf}"] = backward_transfer(groups) if full else nan
        out[f"avg_inc_top5_{clf}"] = mean_defined([m.get(f"{clf}_top5") for m in metrics]) if ok else nan
    first = next((m for m in metrics if m["phase"] == 1 and "head" in m), None)
    out["head_phase1"] = head_stats(first) if first is not None else None
    last = metrics[-1]
    out["prediction_share"] = {clf: new_share(last.get(f"confusion_{clf}"), last.get("num_old", 0))
                               for clf in CLASSIFIERS} if last["phase"] > 0 else None
    return out


def head_stats(m: dict) -> dict[str, float]:
    """Fig. 3's numbers after a phase: mean weight norm and bias of the old and the new classes' rows; for a cosine
    head the scale each class's logit gets, eta x the norm of its normalised row (= eta for every class)."""
    h, old = m["head"], m["num_old"]
    norms, bias, eta = h["weight_norms"], h.get("bias"), h.get("sigma")
    out = {"norm_old": mean_defined(norms[:old]), "norm_new": mean_defined(norms[old:])}
    if bias is not None:
        out.update(bias_old=mean_defined(bias[:old]), bias_new=mean_defined(bias[old:]))
    if eta is not None:
        out.update(scale_old=eta, scale_new=eta)
    return out


def new_share(confusion: list[list[int]] | None, num_old: int) -> dict[str, float] | None:
    """Of the test images (%), the share predicted as one of the phase's new classes and their true share (Fig. 9's
    bias towards new classes). confusion: rows true class, columns predicted."""
    if confusion is None:
        return None
    total = sum(map(sum, confusion))
    predicted = sum(sum(row[num_old:]) for row in confusion)
    true = sum(sum(row) for row in confusion[num_old:])
    return {"predicted_new": 100 * predicted / total, "true_new": 100 * true / total}


def write_run_outputs(summary: dict, summary_path: str, table_path: str) -> None:
    save_json(summary, summary_path)
    write_csv(pd.DataFrame(summary["rows"], columns=PHASE_COLS), table_path)


SUMMARY_COLS = [f"{name}_{clf}" for name in ("avg_inc", "final", "forgetting", "bwt", "avg_inc_top5")
                for clf in CLASSIFIERS]


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
    phases = phase_table(summaries)
    runs = pd.DataFrame([dict({k: s[k] for k in RUN_KEYS + SUMMARY_COLS}, paper_protocol=paper_protocol(s["config"]))
                         for s in summaries])
    summary = mean_std(runs, SETTING_KEYS, SUMMARY_COLS)
    return phases, summary, paper_comparison(runs)


def phase_table(summaries: list[dict]) -> pd.DataFrame:
    """Every run x phase of the runs' summaries (summary.json, full precision), sorted: tables/phases.csv and the
    figures' input."""
    phases = pd.DataFrame([r for s in summaries for r in s["rows"]], columns=PHASE_COLS)   # columns in this order
    return phases.sort_values(RUN_KEYS + ["phase"]).reset_index(drop=True)


def accuracy_matrix(summaries: list[dict]) -> pd.DataFrame:
    """The accuracy matrices of all runs of one dataset, long form (MATRIX_COLS), from the runs' summaries."""
    rows = [r for s in summaries for r in s.get("matrix", [])]
    df = pd.DataFrame(rows, columns=MATRIX_COLS).sort_values(RUN_KEYS + ["phase", "group", "classifier"])
    return df.reset_index(drop=True)


def accuracy_matrix_wide(matrix: pd.DataFrame) -> pd.DataFrame:
    """The same matrix for reading: one row per run x classifier x phase, one column per class group."""
    wide = matrix.pivot_table(index=RUN_KEYS + ["classifier", "phase"], columns="group", values="accuracy",
                              aggfunc="first", dropna=False)
    wide.columns = [f"group {g}" for g in wide.columns]
    return wide.dropna(how="all").reset_index()


def paper_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's average incremental accuracies beside ours (mean and std over seeds of the default-variant runs
    under the paper's protocol) and ours - paper, in percentage points, with the runs / class orders behind each
    side: the paper's as it states them (PAPER_ORDERS), ours as the seeds averaged (a seed is a class order)."""
    rows = []
    for method, clf, p, value, name in PAPER:
        sel = runs[runs.paper_protocol & (runs.method == method) & (runs.variant == "default") & (runs.phases == p)]
        acc = sel[f"avg_inc_{clf}"]
        mean = float(acc.mean()) if len(acc) else float("nan")
        std = float(acc.std()) if len(acc) > 1 else float("nan")
        rows.append({"method": name, "classifier": clf.upper(), "phases": p, "paper": value,
                     "paper_runs": PAPER_RUNS, "paper_class_orders": PAPER_ORDERS,
                     "ours_mean": mean, "ours_std": std, "seeds": len(acc),
                     "ours_class_orders": ", ".join(str(s) for s in sorted(sel.seed)), "difference": mean - value,
                     "setting": PAPER_SETTING if len(acc) else f"no run with the paper's setting ({PAPER_SETTING})"})
    return pd.DataFrame(rows)


def run_averages(phases: pd.DataFrame) -> pd.DataFrame:
    """Average incremental accuracy of every run from the per-phase table (mean over its phases, base included;
    NaN where a phase has no value): one row per run with avg_inc_cnn and avg_inc_nme."""
    g = phases.groupby(RUN_KEYS, sort=True)[["cnn_all", "nme_all"]]
    out = g.agg(lambda s: s.mean(skipna=False)).reset_index()
    return out.rename(columns={"cnn_all": "avg_inc_cnn", "nme_all": "avg_inc_nme"})

