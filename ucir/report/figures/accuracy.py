"""Figs. 5 and 6: accuracy on all classes seen so far after each phase, one panel per number of phases; the caption
gives the claims table's answers to Fig. 5's claims on average incremental accuracy (never a verdict of its own)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from .common import (COLUMN, PAGE, color, figure_inputs, label, phases_title, placeholder, save, style, suptitle,
                     titled, verdict_notes)

TITLE = "Accuracy after each phase (Figs. 5/6)"
LEGEND_TITLE = "average incremental accuracy (n = class orders averaged)"
BAND = "shaded: ±1 sd over class orders"
BAND_ALPHA = 0.15
METRIC = "average incremental accuracy"                    # the claims a panel answers (ucir.report.claims)


def plot_accuracy(summaries: list[dict], claims: pd.DataFrame, experiments: dict, png: str, pdf: str,
                  kind: str = "accuracy"):
    """Mean over seeds with a +-1 std band (where a curve averages more than one seed; the legend says what the
    band is); CNN solid, NME dashed (drawn only where every phase of every run has it); the legend gives each
    curve's average incremental accuracy (mean over seeds of the mean over phases, base phase included).
    summaries: the drawn runs'; claims: the dataset's claims table (tables/claims.csv), whose answers to Fig. 5's
    claims on average incremental accuracy the caption gives (final accuracy: in the table)."""
    df, claims = figure_inputs(summaries, claims, experiments, kind)
    if df.empty:
        return placeholder(png, pdf, TITLE)
    claims = claims[claims.metric == METRIC]
    settings = sorted(df.phases.unique())
    width = min(PAGE, max(COLUMN, 2.4 * len(settings)))
    with style():
        fig, axes = plt.subplots(1, len(settings), figsize=(width, 3.2), squeeze=False, layout="constrained")
        legends = []
        for ax, p in zip(axes[0], settings):
            _panel(ax, df[df.phases == p])
            legends.append(ax.get_legend())
            ax.set_title(phases_title(p))
        axes[0][0].set_ylabel("top-1 accuracy on all classes seen (%)")
        _fit_legends(fig, legends)
        if not claims.empty:
            notes = verdict_notes(claims)
            notes[0] += f"; on {METRIC} (final accuracy: in the table)"
            suptitle(fig, titled(TITLE, notes, width=int(17 * fig.get_figwidth())), fontsize=7)
        return save(fig, png, pdf)


def _fit_legends(fig, legends) -> None:
    """Widen the figure so that each panel is at least as wide as the legend under it (long variant names would
    otherwise squeeze the panels to nothing in the constrained layout)."""
    renderer = fig.canvas.get_renderer()
    need = max(leg.get_window_extent(renderer).width for leg in legends) / fig.dpi        # inches
    width = len(legends) * (need + 0.5) + 0.4
    if width > fig.get_figwidth():
        fig.set_figwidth(width)


def _panel(ax, sub: pd.DataFrame) -> None:
    """Draws the curves of one number of phases."""
    banded = False
    for (method, variant), g in sub.groupby(["method", "variant"], sort=True):
        for clf, ls, marker in (("cnn", "-", "o"), ("nme", "--", "s")):
            col = f"{clf}_all"
            if g[col].isna().any():                     # e.g. NME without exemplars of every class: no curve
                continue
            stats = g.groupby("classes_seen")[col].agg(["mean", "std"]).fillna({"std": 0.0})
            avg = g.groupby("seed")[col].mean().mean()                 # average incremental accuracy
            c = color(method) if variant == "default" else None            # variants take the next free colour
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
