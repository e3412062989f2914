"""Figs. 5 and 6: accuracy on all classes seen so far after each phase, one panel per number of phases."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from .common import (COLUMN, PAGE, color, label, phases_title, placeholder, runs_of_kind, save, select_runs, style,
                     titled)

TITLE = "Accuracy after each phase (Figs. 5/6)"
LEGEND_TITLE = "average incremental accuracy (n = class orders averaged)"
BAND = "shaded: ±1 sd over class orders"
BAND_ALPHA = 0.15


def plot_accuracy(phases: pd.DataFrame, experiments: dict, png: str, pdf: str, kind: str = "accuracy"):
    """Mean over seeds with a +-1 std band (where a curve averages more than one seed; the legend says what the
    band is); CNN solid, NME dashed (drawn only where every phase of every run has it); the legend gives each
    curve's average incremental accuracy (mean over seeds of the mean over phases, base phase included). Where
    Ours-CNN is not above both iCaRL curves (the paper's Fig. 5), the caption says so."""
    runs = runs_of_kind(experiments, kind)
    df = select_runs(phases, runs) if runs else phases.iloc[0:0]
    if df.empty:
        return placeholder(png, pdf, TITLE)
    settings = sorted(df.phases.unique())
    width = min(PAGE, max(COLUMN, 2.4 * len(settings)))
    with style():
        fig, axes = plt.subplots(1, len(settings), figsize=(width, 3.2), squeeze=False, layout="constrained")
        legends = []
        for ax, p in zip(axes[0], settings):
            avgs = _panel(ax, df[df.phases == p])
            legends.append(ax.get_legend())
            ax.set_title(titled(phases_title(p), ours_not_above_icarl(avgs), width=50))
        axes[0][0].set_ylabel("top-1 accuracy on all classes seen (%)")
        _fit_legends(fig, legends)
        return save(fig, png, pdf)


def _fit_legends(fig, legends) -> None:
    """Widen the figure so that each panel is at least as wide as the legend under it (long variant names would
    otherwise squeeze the panels to nothing in the constrained layout)."""
    renderer = fig.canvas.get_renderer()
    need = max(leg.get_window_extent(renderer).width for leg in legends) / fig.dpi        # inches
    width = len(legends) * (need + 0.5) + 0.4
    if width > fig.get_figwidth():
        fig.set_figwidth(width)


def ours_not_above_icarl(avgs: dict[str, float]) -> list[str]:
    """A note when Ours-CNN's average incremental accuracy is not above iCaRL-CNN's and iCaRL-NME's (the paper's
    Fig. 5 finding); avgs: {curve label: average incremental accuracy}."""
    ours = avgs.get("Ours-CNN")
    beaten = [f"{k}'s {v:.2f}%" for k, v in avgs.items() if k.startswith("iCaRL-") and ours is not None and v >= ours]
    return [f"unlike the paper's Fig. 5, Ours-CNN's average incremental accuracy {ours:.2f}% is not above "
            f"{' and '.join(beaten)} here"] if beaten else []


def _panel(ax, sub: pd.DataFrame) -> dict[str, float]:
    """Draws the curves of one number of phases; returns {curve label: average incremental accuracy}."""
    avgs = {}
    banded = False
    for (method, variant), g in sub.groupby(["method", "variant"], sort=True):
        for clf, ls, marker in (("cnn", "-", "o"), ("nme", "--", "s")):
            col = f"{clf}_all"
            if g[col].isna().any():                     # e.g. NME without exemplars of every class: no curve
                continue
            stats = g.groupby("classes_seen")[col].agg(["mean", "std"]).fillna({"std": 0.0})
            avg = g.groupby("seed")[col].mean().mean()                 # average incremental accuracy
            c = color(method) if variant == "default" else None            # variants take the next free colour
            avgs[label(method, variant, clf)] = avg
            line, = ax.plot(stats.index, stats["mean"], ls=ls, marker=marker, ms=2.5, lw=1, color=c,
                            label=f"{label(method, variant, clf)}: {avg:.2f}% (n={g.seed.nunique()})")
            if g.seed.nunique() > 1:                    # one seed: no spread, no band
                ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                                color=line.get_color(), alpha=BAND_ALPHA, lw=0)
                banded = True
    ax.set_xticks(sorted(sub.classes_seen.unique()))
    ax.set_xlabel("number of classes")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if banded:                                          # the band explained in the legend, in a neutral grey
        handles.append(Patch(color="gray", alpha=BAND_ALPHA * 2, lw=0))
        labels.append(BAND)
    ax.legend(handles, labels, frameon=False, handlelength=2.2, ncols=2, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), title=LEGEND_TITLE, title_fontsize=6)
    return avgs
