"""Sec. 4.4's ablations as average incremental accuracy (mean +- std over seeds): Fig. 7(a) the components,
Fig. 7(b) the reserved samples per class, Fig. 8 adaptive vs fixed loss weight."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from .. import OURS
from ..tables import mean_std, run_averages
from .common import (COLUMN, color, grid_values, label, orders_note, phases_title, placeholder, runs_of_kind,
                     save, select_runs, style, titled)

COMPONENTS = {"cn": "CN", "cn_lc": "CN+LC", "default": "CN+LC+IS", "cbf": "CN+LC+IS+CBF"}
LAMBDA_RULES = {"code": "adaptive λ (Eq. 7, official code)", "paper": "adaptive λ (Eq. 7 as printed)",
                "fixed": "fixed λ = λ_base"}
GRID_LABELS = {"per_class": "reserved samples per class", "total": "memory size (samples)"}


def _averages(phases: pd.DataFrame, experiments: dict, kind: str) -> pd.DataFrame:
    runs = runs_of_kind(experiments, kind)
    return run_averages(select_runs(phases, runs)) if runs else pd.DataFrame()


def _ordered(values, order) -> list:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def _grouped_bars(ax, stats: pd.DataFrame, bar_col: str, order: list, names: dict, col: str) -> None:
    """Bars of stats[col + '_mean'] grouped by number of phases, one bar per value of bar_col, from 0, with ±1 std
    over seeds as error bar (none with one seed), the mean (± std) written on top and, where the bars average
    different numbers of seeds, n at the foot of each bar."""
    settings = sorted(stats.phases.unique())
    bars = _ordered(stats[bar_col], order)
    width = 0.8 / len(bars)
    mixed = stats.seeds.nunique() > 1
    for i, b in enumerate(bars):
        sub = stats[stats[bar_col] == b].set_index("phases").reindex(settings)
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(settings))]
        means, stds = sub[f"{col}_mean"], sub[f"{col}_std"]                 # std NaN (one seed): no error bar
        ax.bar(xs, means, width * 0.92, yerr=stds, capsize=1.5, label=names.get(b, str(b)),
               error_kw={"lw": 0.6})
        for x, m, s, n in zip(xs, means, stds, sub.seeds):
            if math.isnan(m):
                continue
            text = f"{m:.1f}" if math.isnan(s) else f"{m:.1f}\n±{s:.1f}"
            ax.text(x, m + (0.0 if math.isnan(s) else s) + 0.5, text, ha="center", va="bottom", fontsize=5)
            if mixed:
                ax.text(x, 0.5, f"n={int(n)}", ha="center", va="bottom", fontsize=5, color="white")
    ax.set_xticks(range(len(settings)), [phases_title(p) for p in settings])
    top = (stats[f"{col}_mean"] + stats[f"{col}_std"].fillna(0.0)).dropna()
    ax.set_ylim(0.0, top.max() * 1.15 + 1 if len(top) else 100.0)         # from 0: heights compare honestly
    ax.set_ylabel("average incremental accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def _not_above(stats: pd.DataFrame, key: str, pairs: list[tuple[str, str]], names: dict, col: str) -> list[str]:
    """'2 phases: CN+LC 58.2 ≤ CN 59.0' for every setting where bar `hi` of a pair (lo, hi) is not above bar `lo`,
    i.e. where a gain the paper shows is absent."""
    out = []
    for p in sorted(stats.phases.unique()):
        sub = stats[stats.phases == p].set_index(key)[f"{col}_mean"]
        for lo, hi in pairs:
            if lo in sub and hi in sub and sub[hi] <= sub[lo]:
                out.append(f"{phases_title(p)}: {names[hi]} {sub[hi]:.1f} ≤ {names[lo]} {sub[lo]:.1f}")
    return out


def plot_components(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(a): CNN average incremental accuracy of CN, CN+LC, CN+LC+IS (the default) and +CBF. Where a
    component does not add accuracy (the paper's finding), the title says so."""
    title = "Effect of each component, CNN (Fig. 7(a))"
    avg = _averages(phases, experiments, "components")
    if avg.empty:
        return placeholder(png, pdf, title)
    stats = mean_std(avg, ["method", "variant", "phases"], ["avg_inc_cnn"])
    steps = [("cn", "cn_lc"), ("cn_lc", "default")]                  # the paper: each of LC and IS adds accuracy
    absent = _not_above(stats[stats.method == OURS], "variant", steps, COMPONENTS, "avg_inc_cnn")
    notes = [orders_note(stats.seeds)]
    if absent:
        notes.append("unlike the paper's Fig. 7(a), not every component adds accuracy here: " + "; ".join(absent))
    if stats.method.nunique() > 1:                      # the paper ablates LUCIR only; name others explicitly
        stats["variant"] = stats.method + "/" + stats.variant
    return _bar_figure(stats, "variant", COMPONENTS, titled(title, notes), png, pdf)


def _bar_figure(stats: pd.DataFrame, key: str, names: dict, title: str, png: str, pdf: str):
    """One column-wide bar chart of CNN average incremental accuracy, bars named by `key` in the order of `names`."""
    with style():
        fig, ax = plt.subplots(figsize=(COLUMN, 2.8), layout="constrained")
        _grouped_bars(ax, stats, key, list(names), names, "avg_inc_cnn")
        ax.set_title(title, fontsize=6.5)
        return save(fig, png, pdf)


def plot_adaptive_weight(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 8: CNN average incremental accuracy with the adaptive loss weight (Eq. 7) and with fixed lambda_base.
    Where the adaptive weight is not above the fixed one (the paper's finding), the title says so."""
    title = "Adaptive vs fixed loss weight, Ours-CNN (Fig. 8)"
    avg = _averages(phases, experiments, "adaptive_weight")
    _, values = grid_values(experiments, "adaptive_weight")
    if avg.empty:
        return placeholder(png, pdf, title)
    avg["lambda_rule"] = [values.get((m, v), {}).get("lambda_rule", v) for m, v in zip(avg.method, avg.variant)]
    stats = mean_std(avg, ["method", "lambda_rule", "phases"], ["avg_inc_cnn"])
    absent = _not_above(stats[stats.method == OURS], "lambda_rule", [("fixed", "code"), ("fixed", "paper")],
                        {"code": "adaptive", "paper": "adaptive (as printed)", "fixed": "fixed"}, "avg_inc_cnn")
    notes = [orders_note(stats.seeds)]
    if absent:
        notes.append("the paper's Fig. 8 finds the adaptive weight better for long sequences; here it is not "
                     "above the fixed one: " + "; ".join(absent))
    if stats.method.nunique() > 1:
        stats["lambda_rule"] = stats.method + "/" + stats.lambda_rule
    return _bar_figure(stats, "lambda_rule", LAMBDA_RULES, titled(title, notes), png, pdf)


def plot_memory(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(b): average incremental accuracy against the number of reserved samples per class (the memory grid's
    first key), one line per method and classifier, one panel per number of phases. Where a curve falls as the
    memory grows (the paper's curves rise), the title says so."""
    title = "Effect of the number of reserved samples (Fig. 7(b))"
    avg = _averages(phases, experiments, "memory")
    keys, values = grid_values(experiments, "memory")
    if avg.empty or not keys:
        return placeholder(png, pdf, title)
    key = keys[0]
    avg[key] = [values.get((m, v), {}).get(key) for m, v in zip(avg.method, avg.variant)]
    avg = avg.dropna(subset=[key])
    stats = mean_std(avg, ["method", "phases", key], ["avg_inc_cnn", "avg_inc_nme"])
    settings = sorted(stats.phases.unique())
    falls = [f"{label(m, 'default', clf)} ({phases_title(p)}: {drop})"
             for (m, p), g in stats.groupby(["method", "phases"], sort=True) for clf in ("cnn", "nme")
             if (drop := _first_fall(g.set_index(key)[f"avg_inc_{clf}_mean"].dropna().sort_index()))]
    notes = [orders_note(stats.seeds, "point", marked=False)]
    if falls:                                           # the paper: more reserved samples, higher accuracy
        notes.append("accuracy falls as the memory grows for " + ", ".join(falls) + "; in the paper more reserved "
                     "samples help (Sec. 4.4)")
    with style():
        fig, axes = plt.subplots(1, len(settings), figsize=(max(COLUMN, 2.4 * len(settings)), 2.8), squeeze=False,
                                 layout="constrained")
        for ax, p in zip(axes[0], settings):
            for method, g in stats[stats.phases == p].groupby("method", sort=True):
                g = g.sort_values(key)
                for clf, ls, marker in (("cnn", "-", "o"), ("nme", "--", "s")):
                    if g[f"avg_inc_{clf}_mean"].isna().all():
                        continue
                    std = g[f"avg_inc_{clf}_std"]       # all NaN (one seed each): no error bar, none in the legend
                    ax.errorbar(g[key].to_numpy(float), g[f"avg_inc_{clf}_mean"].to_numpy(float),
                                yerr=std.fillna(0.0).to_numpy(float) if std.notna().any() else None,
                                ls=ls, marker=marker, ms=2.5, lw=1, capsize=1.5, color=color(method),
                                label=label(method, "default", clf))
            ax.set_xticks(sorted(stats[key].unique()))
            ax.set_xlabel(GRID_LABELS.get(key, key))
            ax.set_title(phases_title(p))
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        axes[0][0].set_ylabel("average incremental accuracy (%)")
        fig.suptitle(titled(title, notes, width=40 * len(settings) + 40), fontsize=6.5)
        return save(fig, png, pdf)


def _first_fall(curve: pd.Series) -> str | None:
    """"78.7 at 20 -> 78.5 at 50" for the first memory size where the curve goes down, else None."""
    points = list(curve.items())
    for (k0, v0), (k1, v1) in zip(points, points[1:]):
        if v1 < v0:
            return f"{v0:.1f} at {k0:g} \u2192 {v1:.1f} at {k1:g}"
    return None
