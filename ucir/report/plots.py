"""Figures from the tidy tables (matplotlib, PNG and PDF, sized for a paper column or page)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LABELS = {"lucir": "Ours", "icarl": "iCaRL", "lwf": "LwF", "finetune": "Finetune", "joint": "Joint"}


def label(method: str, variant: str, clf: str) -> str:
    name = LABELS.get(method, method)
    if variant != "default":
        name += f" [{variant}]"
    return f"{name}-{clf.upper()}"


def select_runs(phases: pd.DataFrame, runs: list[list]) -> pd.DataFrame:
    keys = pd.DataFrame(runs, columns=["method", "variant", "phases", "seed"])
    return phases.merge(keys, on=["method", "variant", "phases", "seed"])


def accuracy_curves(phases: pd.DataFrame, experiments: dict, png: str, pdf: str) -> None:
    """Fig. 5/6: accuracy on all seen classes after each phase, one panel per number of phases, mean over seeds
    with a +-1 std band; the legend gives the average incremental accuracy."""
    runs = [r for e in experiments.values() if e["plot"] == "curves" for r in e["runs"]]
    df = select_runs(phases, runs) if runs else phases.iloc[0:0]
    settings = sorted(df.phases.unique()) or [0]
    fig, axes = plt.subplots(1, len(settings), figsize=(3.4 * len(settings), 3.0), squeeze=False)
    for ax, p in zip(axes[0], settings):
        sub = df[df.phases == p]
        for (method, variant), g in sub.groupby(["method", "variant"], sort=True):
            for clf, style in (("cnn", "-"), ("nme", "--")):
                col = f"{clf}_all"
                if g[col].isna().all():
                    continue
                stats = g.groupby("classes_seen")[col].agg(["mean", "std"]).fillna({"std": 0.0})
                per_seed = g.groupby("seed")[col].mean()                    # average incremental accuracy
                line, = ax.plot(stats.index, stats["mean"], style, marker="o", ms=3,
                                label=f"{label(method, variant, clf)} ({per_seed.mean():.2f})")
                ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(f"{p} phase{'s' if p != 1 else ''}")
        ax.set_xlabel("number of classes")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=200)
    fig.savefig(pdf)
    plt.close(fig)
