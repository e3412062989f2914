"""Sec. 4.4's ablations as average incremental accuracy: Fig. 7(a) the components, Fig. 7(b) the reserved samples
per class, Fig. 8 adaptive vs fixed loss weight. Each draws the mean +- sd over class orders (bars or curves) and,
beside it, what the claims are tested on: each class order's paired difference from the full method (the default
variant: CN+LC+IS, the adaptive weight, the configured memory), with their mean and its 95 % t interval. The
caption gives the claims table's answers (tables/claims.csv), never a verdict of its own."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import OURS
from ..claims import paired_stats
from ..tables import mean_std, run_averages
from .common import (COLUMN, PAGE, color, figure_inputs, grid_values, label, orders_note, phases_title,
                     placeholder, save, style, suptitle as _suptitle, titled, verdict_notes)

COMPONENTS = {"cn": "CN", "cn_lc": "CN+LC", "default": "CN+LC+IS", "cbf": "CN+LC+IS+CBF"}
LAMBDA_RULES = {"code": "adaptive λ (Eq. 7, official code)", "paper": "adaptive λ (Eq. 7 as printed)",
                "fixed": "fixed λ = λ_base"}
GRID_LABELS = {"per_class": "reserved samples per class", "total": "memory size (samples)"}
DIFFERENCE_NOTE = ("each class order's difference from {full} (dots), their mean and its 95 % t interval (bar), "
                   "in points")


def _averages(summaries: list[dict], claims: pd.DataFrame, experiments: dict,
              kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(average incremental accuracy of every run the figure draws, the claims table's rows about the figure)."""
    drawn, claims = figure_inputs(summaries, claims, experiments, kind)
    return (run_averages(drawn) if not drawn.empty else pd.DataFrame()), claims


def _ordered(values, order) -> list:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), str(v)))


def _grouped_bars(ax, stats: pd.DataFrame, bar_col: str, bars: list, names: dict, col: str) -> None:
    """Bars of stats[col + '_mean'] grouped by number of phases, one bar per value of bar_col (colour C<i> in the
    order of `bars`), from 0, with ±1 std over seeds as error bar (none with one seed), the mean (± std) written on
    top and, where the bars average different numbers of seeds, n at the foot of each bar."""
    settings = sorted(stats.phases.unique())
    width = 0.8 / len(bars)
    mixed = stats.seeds.nunique() > 1
    for i, b in enumerate(bars):
        sub = stats[stats[bar_col] == b].set_index("phases").reindex(settings)
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(settings))]
        means, stds = sub[f"{col}_mean"], sub[f"{col}_std"]                 # std NaN (one seed): no error bar
        ax.bar(xs, means, width * 0.92, yerr=stds, capsize=1.5, label=names.get(b, str(b)), color=f"C{i}",
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


def paired_differences(avg: pd.DataFrame, key: str, full, col: str) -> dict[tuple, np.ndarray]:
    """{(method, phases, value of key): every class order's col minus the full method's (the row whose key is
    `full`), over the orders both have, in seed order} for every other value of key."""
    out = {}
    for (method, p), g in avg.groupby(["method", "phases"], sort=True):
        wide = g.pivot_table(index="seed", columns=key, values=col, aggfunc="first")
        if full not in wide.columns:
            continue
        for b in wide.columns:
            pair = wide[[b, full]].dropna()
            if b != full and len(pair):
                out[(method, p, b)] = (pair[b] - pair[full]).to_numpy(float)
    return out


def _difference_points(ax, x: float, d: np.ndarray, c: str | None, spread: float, label: str | None = None) -> None:
    """Each order's difference as a dot around x, and their mean with its 95 % t interval (claims.paired_stats)."""
    st = paired_stats(d)
    xs = x + (np.linspace(-spread, spread, len(d)) if len(d) > 1 else np.zeros(1))
    ax.scatter(xs, d, s=7, color=c, alpha=0.55, lw=0)
    ax.margins(y=0.2)                                                   # room for the numbers above
    lo, hi, mean = st["ci_low"], st["ci_high"], st["diff_mean"]
    yerr = None if math.isnan(lo) else [[mean - lo], [hi - mean]]
    ax.errorbar([x], [mean], yerr=yerr, fmt="_", ms=9, mew=1.2, capsize=2, lw=1, color=c, label=label)
    text = f"{mean:+.1f}" if math.isnan(lo) else f"{mean:+.1f}\n[{lo:+.1f}, {hi:+.1f}]"
    ax.annotate(text, (x, hi if not math.isnan(hi) else mean), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=4.5)


def _difference_bars(ax, diffs: dict[tuple, np.ndarray], bars: list, settings: list) -> None:
    """The paired differences of every bar from the full method's, at the bar's place in the bar chart."""
    width = 0.8 / len(bars)
    for (method, p, b), d in sorted(diffs.items(), key=lambda kv: (kv[0][1], bars.index(kv[0][2]))):
        i = bars.index(b)
        x = settings.index(p) + (i - (len(bars) - 1) / 2) * width
        _difference_points(ax, x, d, f"C{i}", width * 0.3)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(range(len(settings)), [phases_title(p) for p in settings])
    ax.set_xlim(-0.5, len(settings) - 0.5)
    ax.set_ylabel("paired difference (points)")
    ax.grid(axis="y", alpha=0.3)


def _ablation_bars(avg: pd.DataFrame, key: str, full, names: dict, title: str, notes: list[str], png: str,
                   pdf: str):
    """Bars of CNN average incremental accuracy named by `key` in the order of `names` (left) and each order's
    paired difference from the full method (right)."""
    stats = mean_std(avg, ["method", key, "phases"], ["avg_inc_cnn"])
    diffs = paired_differences(avg, key, full, "avg_inc_cnn")
    full_name = names.get(full, str(full))
    order = list(names)
    if stats.method.nunique() > 1:                      # the paper ablates LUCIR only; name others explicitly
        stats[key] = stats.method + "/" + stats[key].astype(str)
        diffs = {(m, p, f"{m}/{b}"): d for (m, p, b), d in diffs.items()}
        full_name += " of the same method"
        order = [f"{m}/{k}" for m in sorted(avg.method.unique()) for k in names]
    bars = _ordered(stats[key], order)
    settings = sorted(stats.phases.unique())
    notes = [orders_note(stats.seeds), "right: " + DIFFERENCE_NOTE.format(full=full_name), *notes]
    with style():
        fig, (ax, right) = plt.subplots(1, 2, figsize=(PAGE, 3.0), layout="constrained")
        _grouped_bars(ax, stats, key, bars, names, "avg_inc_cnn")
        _difference_bars(right, diffs, bars, settings)
        right.set_title(f"each class order minus {full_name}", fontsize=6.5)
        _suptitle(fig, titled(title, notes, width=130))
        return save(fig, png, pdf)


def plot_components(summaries: list[dict], claims: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(a): CNN average incremental accuracy of CN, CN+LC, CN+LC+IS (the default) and +CBF, and each order's
    difference from CN+LC+IS; the caption gives the claims table's answers to Fig. 7(a)'s claims. summaries: the
    drawn runs'; claims: the dataset's claims table (tables/claims.csv)."""
    title = "Effect of each component, CNN (Fig. 7(a))"
    avg, claims = _averages(summaries, claims, experiments, "components")
    if avg.empty:
        return placeholder(png, pdf, title)
    return _ablation_bars(avg, "variant", "default", COMPONENTS, title, verdict_notes(claims), png, pdf)


def plot_adaptive_weight(summaries: list[dict], claims: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 8: CNN average incremental accuracy with the adaptive loss weight (Eq. 7) and with fixed lambda_base,
    and each order's difference from the adaptive weight of the official code (the default); the caption gives the
    claims table's answer to Fig. 8's claim."""
    title = "Adaptive vs fixed loss weight, Ours-CNN (Fig. 8)"
    avg, claims = _averages(summaries, claims, experiments, "adaptive_weight")
    _, values = grid_values(experiments, "adaptive_weight")
    if avg.empty:
        return placeholder(png, pdf, title)
    avg["lambda_rule"] = [values.get((m, v), {}).get("lambda_rule", v) for m, v in zip(avg.method, avg.variant)]
    return _ablation_bars(avg, "lambda_rule", "code", LAMBDA_RULES, title, verdict_notes(claims), png, pdf)


def plot_memory(summaries: list[dict], claims: pd.DataFrame, experiments: dict, png: str, pdf: str):
    """Fig. 7(b): average incremental accuracy against the number of reserved samples per class (the memory grid's
    first key), one line per method and classifier, one panel per number of phases; under each, every order's
    difference from the default variant's memory, per curve. The caption gives the claims table's answers to
    Fig. 7(b)'s claims."""
    title = "Effect of the number of reserved samples (Fig. 7(b))"
    avg, claims = _averages(summaries, claims, experiments, "memory")
    keys, values = grid_values(experiments, "memory")
    if avg.empty or not keys:
        return placeholder(png, pdf, title)
    key = keys[0]
    avg[key] = [values.get((m, v), {}).get(key) for m, v in zip(avg.method, avg.variant)]
    avg = avg.dropna(subset=[key])
    stats = mean_std(avg, ["method", "phases", key], ["avg_inc_cnn", "avg_inc_nme"])
    settings = sorted(stats.phases.unique())
    defaults = {values[mv][key] for mv in values if mv[1] == "default" and key in values[mv]}
    full = defaults.pop() if len(defaults) == 1 else None
    curves = [(m, clf) for m in sorted(stats.method.unique()) for clf in ("cnn", "nme")
              if not stats[stats.method == m][f"avg_inc_{clf}_mean"].isna().all()]
    diffs = {(m, clf): paired_differences(avg[avg.method == m], key, full, f"avg_inc_{clf}") for m, clf in curves}
    where = f"the default memory ({key} {full:g})" if full is not None else "the default memory (not in the grid)"
    notes = [orders_note(stats.seeds, "point", marked=False), "lower row: " + DIFFERENCE_NOTE.format(full=where),
             *verdict_notes(claims)]
    sizes = sorted(stats[key].unique())
    with style():
        fig, axes = plt.subplots(2, len(settings), figsize=(max(COLUMN, 2.4 * len(settings)), 4.6), squeeze=False,
                                 layout="constrained", height_ratios=[3, 2])
        for j, p in enumerate(settings):
            ax, low = axes[0][j], axes[1][j]
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
            ax.set_xticks(sizes)
            ax.set_title(phases_title(p))
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))
            for c, (m, clf) in enumerate(curves):
                for (_, pp, size), d in diffs[(m, clf)].items():
                    if pp == p:
                        x = sizes.index(size) + (c - (len(curves) - 1) / 2) * 0.8 / len(curves)
                        _difference_points(low, x, d, color(m), 0.05)
            low.axhline(0.0, color="black", lw=0.6)
            low.set_xticks(range(len(sizes)), [f"{s:g}" for s in sizes])
            low.set_xlim(-0.5, len(sizes) - 0.5)
            low.set_xlabel(f"{GRID_LABELS.get(key, key)}\n(differences of " +
                           ", ".join(label(m, "default", clf) for m, clf in curves) + ", left to right)", fontsize=5.5)
            low.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel("average incremental accuracy (%)")
        axes[1][0].set_ylabel("difference (points)")
        _suptitle(fig, titled(title, notes, width=40 * len(settings) + 40))
        return save(fig, png, pdf)
