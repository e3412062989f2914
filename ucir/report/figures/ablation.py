"""Sec. 4.4's ablations as average incremental accuracy (mean +- std over seeds): Fig. 7(a) the components,
Fig. 7(b) the reserved samples per class, Fig. 8 adaptive vs fixed loss weight."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from ..tables import mean_std, run_averages
from .common import (COLUMN, color, grid_values, label, phases_title, placeholder, runs_of_kind, save,
                     select_runs, style)

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
    """Bars of stats[col + '_mean'] grouped by number of phases, one bar per value of bar_col, std as error bar
    and the mean written on top."""
    settings = sorted(stats.phases.unique())
    bars = _ordered(stats[bar_col], order)
    width = 0.8 / len(bars)
    for i, b in enumerate(bars):
        sub = stats[stats[bar_col] == b].set_index("phases").reindex(settings)
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(settings))]
        means, stds = sub[f"{col}_mean"], sub[f"{col}_std"]                 # std NaN (one seed): no error bar
        ax.bar(xs, means, width * 0.92, yerr=stds, capsize=1.5, label=names.get(b, str(b)),
               error_kw={"lw": 0.6})
        for x, m, s in zip(xs, means, stds.fillna(0.0)):
            if not math.isnan(m):
                ax.text(x, m + s + 0.3, f"{m:.1f}", ha="center", va="bottom", fontsize=5)
    ax.set_xticks(range(len(settings)), [phases_title(p) for p in settings])
    top = (stats[f"{col}_mean"] + stats[f"{col}_std"].fillna(0.0)).dropna()
    low = stats[f"{col}_mean"].dropna()
    ax.set_ylim(max(0.0, math.floor(low.min() / 5) * 5 - 10), top.max() + 0.1 * (top.max() - low.min()) + 2)
    ax.set_ylabel("average incremental accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def components_bars(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(a): CNN average incremental accuracy of CN, CN+LC, CN+LC+IS (the default) and +CBF."""
    title = "Effect of each component, CNN (Fig. 7(a))"
    avg = _averages(phases, experiments, "components")
    if avg.empty:
        return placeholder(png, pdf, title)
    stats = mean_std(avg, ["method", "variant", "phases"], ["avg_inc_cnn"])
    if stats.method.nunique() > 1:                      # the paper ablates LUCIR only; name others explicitly
        stats["variant"] = stats.method + "/" + stats.variant
    return _bar_figure(stats, "variant", COMPONENTS, title, png, pdf)


def _bar_figure(stats: pd.DataFrame, key: str, names: dict, title: str, png: str, pdf: str):
    """One column-wide bar chart of CNN average incremental accuracy, bars named by `key` in the order of `names`."""
    with style():
        fig, ax = plt.subplots(figsize=(COLUMN, 2.6), layout="constrained")
        _grouped_bars(ax, stats, key, list(names), names, "avg_inc_cnn")
        ax.set_title(title)
        return save(fig, png, pdf)


def lambda_bars(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 8: CNN average incremental accuracy with the adaptive loss weight (Eq. 7) and with fixed lambda_base."""
    title = "Adaptive vs fixed loss weight, Ours-CNN (Fig. 8)"
    avg = _averages(phases, experiments, "lambda")
    _, values = grid_values(experiments, "lambda")
    if avg.empty:
        return placeholder(png, pdf, title)
    avg["lambda_rule"] = [values.get((m, v), {}).get("lambda_rule", v) for m, v in zip(avg.method, avg.variant)]
    if avg.method.nunique() > 1:
        avg["lambda_rule"] = avg.method + "/" + avg.lambda_rule
    stats = mean_std(avg, ["lambda_rule", "phases"], ["avg_inc_cnn"])
    return _bar_figure(stats, "lambda_rule", LAMBDA_RULES, title, png, pdf)


def memory_curves(phases: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(b): average incremental accuracy against the number of reserved samples per class (the memory grid's
    first key), one line per method and classifier, one panel per number of phases."""
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
    with style():
        fig, axes = plt.subplots(1, len(settings), figsize=(max(COLUMN, 2.4 * len(settings)), 2.8), squeeze=False,
                                 layout="constrained")
        for ax, p in zip(axes[0], settings):
            for method, g in stats[stats.phases == p].groupby("method", sort=True):
                g = g.sort_values(key)
                for clf, ls, marker in (("cnn", "-", "o"), ("nme", "--", "s")):
                    if g[f"avg_inc_{clf}_mean"].isna().all():
                        continue
                    ax.errorbar(g[key].to_numpy(float), g[f"avg_inc_{clf}_mean"].to_numpy(float),
                                yerr=g[f"avg_inc_{clf}_std"].fillna(0.0).to_numpy(float),
                                ls=ls, marker=marker, ms=2.5, lw=1, capsize=1.5, color=color(method),
                                label=label(method, "default", clf))
            ax.set_xticks(sorted(stats[key].unique()))
            ax.set_xlabel(GRID_LABELS.get(key, key))
            ax.set_title(phases_title(p))
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        axes[0][0].set_ylabel("average incremental accuracy (%)")
        fig.suptitle(title, fontsize=7.5)
        return save(fig, png, pdf)
