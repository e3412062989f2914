"""Report tables (values recomputed by hand) and every figure function on small hand-made inputs."""
from __future__ import annotations

import json
import math

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
import pandas as pd
import pytest

from ucir.config import METHOD_PRESETS, METHODS
from ucir.report import CONFUSION_RUNS, HEAD_RUNS, plots
from ucir.report.claims import claims_table, read_claims
from ucir.report.figures.common import NO_RUNS, caption_of, grid_values, runs_of_kind
from ucir.report.tables import PAPER, aggregate, paper_comparison, run_averages, run_summary

PAPER_CFG = {"source": "cifar100", "num_classes": 100, "base_classes": 50, "per_class": 20, "total": None,
             "train_per_class": None, "test_per_class": None}


# ---- tables ---------------------------------------------------------------------------------------------------
def _metrics(cnn_all, groups, nme_all=None, cfg=None, top5=None):
    """Per-phase metrics dicts with the fields the tables read (3 classes per phase after 4 base classes)."""
    out = []
    for k, (acc, g) in enumerate(zip(cnn_all, groups)):
        nme = None if nme_all is None or nme_all[k] is None else {"all": nme_all[k], "old": None, "new": None}
        out.append({"phase": k, "classes_seen": 4 + 3 * k, "cnn": {"all": acc, "old": None, "new": acc},
                    "cnn_groups": g, "nme": nme, "nme_groups": g if nme else None,
                    "cnn_top5": top5[k] if top5 else None, "nme_top5": top5[k] if top5 and nme else None,
                    "config": cfg or {"source": "synthetic"}, "provenance": {}})
    return out


SETTINGS = {"source": "synthetic"}                 # what a run's summary records as its settings


def _identity(method="lucir", variant="default", phases=2, seed=1, dataset="d"):
    return {"dataset": dataset, "method": method, "variant": variant, "phases": phases, "seed": seed}


def test_run_summary_average_final_forgetting():
    s = run_summary(_metrics([80, 60, 50], [[80], [70, 50], [60, 40, 50]], nme_all=[70, None, 40]), _identity(),
                    SETTINGS)
    assert s["avg_inc_cnn"] == pytest.approx((80 + 60 + 50) / 3)
    assert s["final_cnn"] == 50
    # group 0: best 80 -> 60 (20); group 1: best 50 -> 40 (10); the last group is not counted
    assert s["forgetting_cnn"] == pytest.approx(15)
    assert math.isnan(s["avg_inc_nme"]) and math.isnan(s["forgetting_nme"])     # a phase without NME
    assert [r["cnn_all"] for r in s["rows"]] == [80, 60, 50]
    assert math.isnan(s["rows"][1]["nme_all"])


def test_run_summary_bwt_top5_and_accuracy_matrix():
    groups = [[80], [85, 50], [60, 40, 50]]
    s = run_summary(_metrics([80, 60, 50], groups, nme_all=[80, 60, 50], top5=[None, 90, 85]), _identity(), SETTINGS)
    # forgetting: group 0 best 85 -> 60 (25), group 1 best 50 -> 40 (10): 17.5
    # BWT: group 0 60 - 80 (right after the base phase) = -20, group 1 40 - 50 = -10: -15
    assert s["forgetting_cnn"] == pytest.approx(17.5) and s["bwt_cnn"] == pytest.approx(-15)
    assert s["bwt_nme"] == pytest.approx(-15)
    # top-5 averaged over the phases with more than 5 classes (phase 0 has 4): (90 + 85) / 2
    assert s["avg_inc_top5_cnn"] == pytest.approx(87.5) and s["avg_inc_top5_nme"] == pytest.approx(87.5)
    assert [r["cnn_top5"] for r in s["rows"]][1:] == [90, 85] and math.isnan(s["rows"][0]["cnn_top5"])
    # the matrix, long form: one row per phase x group x classifier
    m = pd.DataFrame(s["matrix"])
    assert list(m.columns) == ["dataset", "method", "variant", "phases", "seed", "phase", "group", "classifier",
                               "accuracy"]
    assert len(m) == 2 * (1 + 2 + 3)
    cnn = m[m.classifier == "cnn"]
    assert [(r.phase, r.group, r.accuracy) for r in cnn.itertuples()] == [
        (0, 0, 80), (1, 0, 85), (1, 1, 50), (2, 0, 60), (2, 1, 40), (2, 2, 50)]
    # without NME in some phase: no NME BWT / top-5
    s = run_summary(_metrics([80, 60, 50], groups, nme_all=[80, None, 50], top5=[None, 90, 85]), _identity(), SETTINGS)
    assert math.isnan(s["bwt_nme"]) and math.isnan(s["avg_inc_top5_nme"]) and s["bwt_cnn"] == pytest.approx(-15)


def test_csvs_round_percentages_json_keeps_full_precision(tmp_path):
    from ucir.report.tables import write_run_outputs
    s = run_summary(_metrics([57.499998807907104, 60.12345], [[57.499998807907104], [61.0, 59.24]]), _identity(),
                    SETTINGS)
    write_run_outputs(s, str(tmp_path / "summary.json"), str(tmp_path / "phases.csv"))
    text = (tmp_path / "phases.csv").read_text()
    assert ",57.5," in text and ",60.12," in text and "57.4999" not in text and "60.123" not in text
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["cnn_all"] == 57.499998807907104


def test_aggregate_tables_round_in_csv(tmp_path):
    from ucir.report.tables import accuracy_matrix, write_csv
    summaries = [_summary(1, [57.499998807907104, 40.0, 30.0]), _summary(2, [57.5, 40.0, 30.0])]
    phases, summary, comparison = aggregate(summaries)
    for name, df in (("phases", phases), ("summary", summary), ("comparison", comparison),
                     ("matrix", accuracy_matrix(summaries))):
        write_csv(df, str(tmp_path / f"{name}.csv"))
        text = (tmp_path / f"{name}.csv").read_text()
        assert "57.4999" not in text and "0000000" not in text, name
    back = pd.read_csv(tmp_path / "summary.csv")
    assert back.avg_inc_cnn_mean[0] == pytest.approx(42.5) and back.avg_inc_cnn_std[0] == 0.0
    assert "57.5" in (tmp_path / "matrix.csv").read_text()


def test_accuracy_matrix_tables():
    from ucir.report.tables import accuracy_matrix, accuracy_matrix_wide
    summaries = [_summary(1, [80, 60, 40]), _summary(1, [50, 30], method="icarl", phases=1)]
    long = accuracy_matrix(summaries)
    assert len(long) == 2 * 6 + 2 * 3                                       # lucir 3 phases, icarl 2, CNN and NME
    wide = accuracy_matrix_wide(long)
    row = wide[(wide.method == "lucir") & (wide.classifier == "cnn") & (wide.phase == 2)].iloc[0]
    assert (row["group 0"], row["group 1"], row["group 2"]) == (40, 40, 40)
    first = wide[(wide.method == "icarl") & (wide.phase == 0)].iloc[0]
    assert first["group 0"] == 50 and math.isnan(first["group 1"])           # group 1 not learned yet
    assert len(wide) == 2 * 3 + 2 * 2


def _summary(seed, accs, method="lucir", variant="default", phases=2, cfg=None):
    groups = [[a] * (k + 1) for k, a in enumerate(accs)]
    return run_summary(_metrics(accs, groups, nme_all=accs), _identity(method, variant, phases, seed),
                       cfg or {"source": "synthetic"})


def test_aggregate_mean_and_std_over_seeds():
    summaries = [_summary(1, [80, 60, 40]), _summary(2, [90, 70, 50]), _summary(1, [50, 30, 20], method="icarl")]
    summaries = json.loads(json.dumps(summaries, sort_keys=True))               # as summary.json stores them
    phases, summary, _ = aggregate(summaries)
    assert len(phases) == 9 and list(phases.columns) == [
        "dataset", "method", "variant", "phases", "seed", "phase", "classes_seen",
        "cnn_all", "cnn_old", "cnn_new", "cnn_top5", "nme_all", "nme_old", "nme_new", "nme_top5"]
    row = summary[summary.method == "lucir"].iloc[0]
    a, b = 60.0, 70.0                                                           # the two seeds' averages
    assert row.seeds == 2
    assert row.avg_inc_cnn_mean == pytest.approx((a + b) / 2)
    assert row.avg_inc_cnn_std == pytest.approx(abs(a - b) / math.sqrt(2))      # sample std (ddof 1)
    assert row.final_cnn_mean == pytest.approx(45)
    one = summary[summary.method == "icarl"].iloc[0]
    assert one.seeds == 1 and math.isnan(one.avg_inc_cnn_std)                   # no spread from one seed


def test_paper_comparison_uses_paper_protocol_runs_only():
    runs = pd.DataFrame([
        dict(method="lucir", variant="default", phases=5, seed=1, avg_inc_cnn=60.0, avg_inc_nme=59.0,
             paper_protocol=True),
        dict(method="lucir", variant="default", phases=5, seed=2, avg_inc_cnn=62.0, avg_inc_nme=61.0,
             paper_protocol=True),
        dict(method="lucir", variant="default", phases=5, seed=3, avg_inc_cnn=10.0, avg_inc_nme=10.0,
             paper_protocol=False),                                             # e.g. R_per = 5: not compared
        dict(method="icarl", variant="cbf", phases=10, seed=1, avg_inc_cnn=10.0, avg_inc_nme=10.0,
             paper_protocol=True),                                              # not the default variant
    ])
    t = paper_comparison(runs)
    assert len(t) == len(PAPER)
    assert list(t.paper) == [63.42, 60.18, 63.12, 60.12, 57.17, 52.57]
    cnn5 = t[(t.method == "Ours-CNN") & (t.phases == 5)].iloc[0]
    assert (cnn5.ours_mean, cnn5.seeds) == (61.0, 2) and cnn5.difference == pytest.approx(61.0 - 63.42)
    assert cnn5.ours_std == pytest.approx(math.sqrt(2))
    # both sides name their runs: the paper's three runs (Fig. 5 caption), ours the seeds (class orders) averaged
    assert cnn5.ours_class_orders == "1, 2" and cnn5.paper_runs == 3
    assert "Fig. 5" in cnn5.paper_class_orders and "1993" in cnn5.paper_class_orders
    nme5 = t[(t.method == "Ours-NME") & (t.phases == 5)].iloc[0]
    assert nme5.difference == pytest.approx(60.0 - 63.12)
    missing = t[t.method == "iCaRL-NME"]
    assert missing.ours_mean.isna().all() and (missing.seeds == 0).all()
    assert missing.setting.str.startswith("no ").all() and (missing.ours_class_orders == "").all()


def test_aggregate_marks_paper_protocol_from_config():
    s = [_summary(1, [60, 60, 60], phases=5, cfg=PAPER_CFG), _summary(2, [70, 70, 70], phases=5)]
    _, _, t = aggregate(s)
    row = t[(t.method == "Ours-CNN") & (t.phases == 5)].iloc[0]
    assert row.ours_mean == 60.0 and row.seeds == 1                             # the synthetic run is left out


def _phases(spec):
    """spec: {(method, variant, phases, seed): [cnn_all per phase] or ([cnn], [nme])} -> the tidy phases table."""
    rows = []
    for (m, v, p, s), accs in spec.items():
        cnn, nme = accs if isinstance(accs, tuple) else (accs, [float("nan")] * len(accs))
        for k in range(p + 1):
            rows.append(dict(dataset="d", method=m, variant=v, phases=p, seed=s, phase=k, classes_seen=4 + 2 * k,
                             cnn_all=cnn[k], cnn_old=np.nan, cnn_new=np.nan, nme_all=nme[k], nme_old=np.nan,
                             nme_new=np.nan))
    return pd.DataFrame(rows)


def test_run_averages():
    t = run_averages(_phases({("lucir", "default", 2, 1): ([90, 60, 30], [80, 70, 60]),
                              ("icarl", "default", 2, 1): [50, 40, 30]}))
    t = t.set_index("method")
    assert t.loc["lucir", "avg_inc_cnn"] == pytest.approx(60) and t.loc["lucir", "avg_inc_nme"] == pytest.approx(70)
    assert t.loc["icarl", "avg_inc_cnn"] == pytest.approx(40) and math.isnan(t.loc["icarl", "avg_inc_nme"])


def test_experiment_helpers():
    exps = {"a": {"plot": "memory", "runs": [["icarl", "default", 2, 1]], "grid": {"icarl/default": {"per_class": 20}}},
            "b": {"plot": "memory", "runs": [["icarl", "default", 2, 1], ["icarl", "default_per_class5", 2, 1]],
                  "grid": {"icarl/default_per_class5": {"per_class": 5}}},
            "c": {"plot": "accuracy", "runs": [["lucir", "default", 2, 1]], "grid": {}}}
    assert runs_of_kind(exps, "memory") == [["icarl", "default", 2, 1], ["icarl", "default_per_class5", 2, 1]]
    keys, values = grid_values(exps, "memory")
    assert keys == ["per_class"]
    assert values == {("icarl", "default"): {"per_class": 20}, ("icarl", "default_per_class5"): {"per_class": 5}}


# ---- figures --------------------------------------------------------------------------------------------------
def _out(tmp_path, name):
    return str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}.pdf")


def _written(png, pdf):
    from pathlib import Path
    for p in (png, pdf):
        assert Path(p).stat().st_size > 1000
    assert Path(png).read_bytes()[:4] == b"\x89PNG" and Path(pdf).read_bytes()[:4] == b"%PDF"


def _said(fig) -> str:
    """The caption under a figure (where the notes of its titles go), lines joined."""
    return caption_of(fig).replace("\n", " ")


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts + [ax.title]] + \
        ([fig._suptitle.get_text()] if fig._suptitle else []) + [t.get_text() for t in fig.texts]


def _runs(spec, per_class=None):
    """spec: {(method, variant, phases, seed): [cnn_all per phase] or ([cnn], [nme])} -> the runs' summaries (3
    classes per phase after 4 base classes); per_class: {(method, variant): R_per} recorded in their settings."""
    out = []
    for (m, v, p, s), accs in spec.items():
        cnn, nme = accs if isinstance(accs, tuple) else (accs, None)
        groups = [[a] * (k + 1) for k, a in enumerate(cnn)]
        cfg = {**SETTINGS, "per_class": (per_class or {}).get((m, v), 20)}
        out.append(run_summary(_metrics(cnn, groups, nme_all=nme), _identity(m, v, p, s), cfg))
    return json.loads(json.dumps(out))                                  # as summary.json stores them


NO_CLAIMS = read_claims(None)                       # a figure without runs: no table to read


def _fig(kind, runs, exps, out):
    """An experiment figure drawn from `runs` with the claims table of the same runs (claims.csv)."""
    return getattr(plots, f"plot_{kind}")(runs, claims_table(runs), exps, *out)


def _title(fig):
    """The figure's title and the caption under it (where save() moves the title's notes), lines joined."""
    return " ".join([fig._suptitle.get_text() if fig._suptitle else "", caption_of(fig)]).replace("\n", " ")


def test_accuracy_panels_stay_as_wide_as_their_legends(tmp_path):
    # long variant names (a grid over several settings) make a wide legend; the panel above it must not shrink
    spec = {(m, f"default_lambda_rulefixed_per_class{k}_margin0.{k}", 2, 1): ([80, 70, 60], [78, 68, 58])
            for m in ("lucir", "icarl") for k in (1, 2, 3)}
    exps = {"main": {"plot": "accuracy", "runs": [list(k) for k in spec]}}
    fig = _fig("accuracy", _runs(spec), exps, _out(tmp_path, "wide"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()                  # the figure was closed once saved
    ax = fig.axes[0]
    assert ax.get_window_extent(renderer).width >= ax.get_legend().get_window_extent(renderer).width


def test_accuracy_curves_means_and_legend(tmp_path):
    nan = float("nan")
    spec = {("lucir", "default", 2, 1): ([80, 70, 60], [78, 68, 58]),
            ("lucir", "default", 2, 2): ([90, 80, 70], [88, 78, 68]),
            ("icarl", "default", 2, 1): ([80, 50, 40], [70, nan, nan]),            # NME incomplete: no curve
            ("joint", "default", 2, 1): [99, 99, 99]}
    exps = {"main": {"plot": "accuracy", "runs": [list(k) for k in spec if k[0] != "joint"]},
            "other": {"plot": "none", "runs": [["joint", "default", 2, 1]]}}
    fig = _fig("accuracy", _runs(spec), exps, _out(tmp_path, "acc"))
    _written(*_out(tmp_path, "acc"))
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ours = "Ours-CNN: 75.00% (n=2)"
    assert set(lines) == {ours, "Ours-NME: 73.00% (n=2)", "iCaRL-CNN: 56.67% (n=1)"}   # joint: not a curves run
    # the legend says what its numbers are
    assert ax.get_legend().get_title().get_text() == "average incremental accuracy (n = class orders averaged)"
    np.testing.assert_allclose(lines[ours].get_ydata(), [85, 75, 65])
    np.testing.assert_allclose(lines[ours].get_xdata(), [4, 7, 10])
    # one class order has both: the claims table's answer, never a comparison of the means (75 > 56.67)
    assert ax.get_title() == "2 phases"
    title = _title(fig)
    assert "Ours-CNN > iCaRL-CNN: too few orders (n = 1)" in title
    assert "Ours-CNN ≥ Ours-NME: too few orders (n = 2)" in title
    assert "iCaRL-NME" not in title                                             # its NME is incomplete: no row


def _claims_of(summaries, figure):
    t = claims_table(summaries)
    return t[t.figure == figure]


def test_every_figure_shows_the_claims_tables_answers(tmp_path):
    """One judge: each figure's caption holds, word for word, the verdict of every claims.csv row about its figure,
    whatever its own means say; the figure draws some runs and reads the table aggregate wrote over all of them."""
    from ucir.report.claims import P_DECIMALS
    from ucir.report.figures.common import verdict
    from ucir.report.tables import write_csv
    seeds = (1, 2, 3, 4)
    spec = {}
    for s in seeds:
        for m, base in (("lucir", 60), ("icarl", 55), ("finetune", 40)):
            spec[(m, "default", 2, s)] = ([base + s] * 3, [base - 2 + s % 2] * 3)
        for v, a in (("cn", 57), ("cn_lc", 61), ("cbf", 60), ("default_lambda_rulefixed", 59 + s % 3)):
            spec[("lucir", v, 2, s)] = ([a + s] * 3, [a] * 3)
        for m, base in (("lucir", 50), ("icarl", 52)):
            spec[(m, "default_per_class5", 2, s)] = ([base + (s % 2)] * 3, [base + 1] * 3)
    per_class = {(m, "default_per_class5"): 5 for m in ("lucir", "icarl")}
    runs = _runs(spec, per_class)
    write_csv(claims_table(runs), str(tmp_path / "claims.csv"), P_DECIMALS)
    table = read_claims(str(tmp_path / "claims.csv"))                      # as the plot rules read it
    grid = {f"{m}/{v}": g for (m, v), g in {("lucir", "default"): {"per_class": 20, "lambda_rule": "code"},
                                             ("icarl", "default"): {"per_class": 20},
                                             ("lucir", "default_per_class5"): {"per_class": 5},
                                             ("icarl", "default_per_class5"): {"per_class": 5},
                                             ("lucir", "default_lambda_rulefixed"): {"lambda_rule": "fixed"}}.items()}

    def exp(kind, variants, methods=("lucir",), seeds=seeds[:3]):            # the ablations draw 3 of the 4
        keys = [[m, v, 2, s] for m in methods for v in variants for s in seeds]
        return {kind: {"plot": kind, "runs": keys, "grid": {k: grid[k] for k in grid
                                                             if k.split("/")[1] in variants}}}
    figures = {"accuracy": ("5", exp("accuracy", ["default"], ("lucir", "icarl", "finetune"), seeds)),
               "components": ("7a", exp("components", ["cn", "cn_lc", "default", "cbf"])),
               "memory": ("7b", exp("memory", ["default", "default_per_class5"], ("lucir", "icarl"))),
               "adaptive_weight": ("8", exp("adaptive_weight", ["default", "default_lambda_rulefixed"]))}
    for kind, (figure, exps) in figures.items():
        rows = table[table.figure == figure]
        assert len(rows) and (rows.n == 4).any(), kind                     # the table pairs all 4 orders
        drawn = {tuple(r) for r in exps[kind]["runs"]}
        mine = [s for s in runs if (s["method"], s["variant"], s["phases"], s["seed"]) in drawn]
        fig = getattr(plots, f"plot_{kind}")(mine, table, exps, *_out(tmp_path, kind))
        text = " ".join(t.replace("\n", " ") for t in _texts(fig))
        if kind == "accuracy":
            rows = rows[rows.metric == "average incremental accuracy"]
        for r in rows.itertuples():
            assert verdict(r) in text, (kind, verdict(r))
        assert "unlike the paper" not in text and "falls as the memory grows" not in text
    assert "Holm over all claims of the dataset's table" in text


def test_components_bars_and_paired_differences(tmp_path):
    spec = {("lucir", v, 2, s): [a + s * (1 + (v == "cn"))] * 3
            for v, a in (("cbf", 64), ("cn", 50), ("default", 62), ("cn_lc", 58)) for s in (0, 2)}
    exps = {"components": {"plot": "components", "runs": [list(k) for k in spec]}}
    fig = _fig("components", _runs(spec), exps, _out(tmp_path, "comp"))
    _written(*_out(tmp_path, "comp"))
    ax, right = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([52, 59, 63, 65])                           # CN, CN+LC, CN+LC+IS, +CBF
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CN", "CN+LC", "CN+LC+IS", "CN+LC+IS+CBF"]
    # from 0, with the spread over the two seeds as error bars, and the title says how many runs a bar is
    assert ax.get_ylim()[0] == 0
    errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    spans = [seg[1][1] - seg[0][1] for c in errs for seg in c.lines[2][0].get_segments()]
    assert spans == pytest.approx([4 * math.sqrt(2), 2 * math.sqrt(2), 2 * math.sqrt(2), 2 * math.sqrt(2)])
    assert "each bar: mean over 2 class orders (seeds), error bar ±1 sd" in _title(fig)
    # right: every order's difference from CN+LC+IS (dots) and their mean with its 95 % t interval
    dots = sorted(tuple(np.round(c.get_offsets()[:, 1], 6)) for c in right.collections
                  if isinstance(c, PathCollection))
    assert dots == [(-12.0, -10.0), (-4.0, -4.0), (2.0, 2.0)]                  # CN: 50-62, 54-64; CN+LC; +CBF
    means = sorted(float(c.lines[0].get_ydata()[0]) for c in right.containers if isinstance(c, ErrorbarContainer))
    assert means == pytest.approx([-11, -4, 2])
    cn = next(c for c in right.containers if isinstance(c, ErrorbarContainer) and c.lines[0].get_ydata()[0] == -11)
    (seg,) = cn.lines[2][0].get_segments()                                    # t(0.975, 1) x sd sqrt(2) / sqrt(2)
    assert (seg[0][1], seg[1][1]) == pytest.approx((-11 - 12.706205, -11 + 12.706205), abs=1e-4)
    assert right.get_title() == "each class order minus CN+LC+IS"
    assert "CN+LC > CN: too few orders (n = 2)" in _title(fig)                  # the table's answer, not the means'


def test_adaptive_weight_bars_and_answer(tmp_path):
    # fixed lambda above the adaptive one; seeds 1 and 2 for the adaptive bar, 1 for the fixed: n at each bar
    spec = {("lucir", "default", 2, 1): [50] * 3, ("lucir", "default", 2, 2): [52] * 3,
            ("lucir", "default_lambda_rulefixed", 2, 1): [55] * 3}
    grid = {"lucir/default": {"lambda_rule": "code"}, "lucir/default_lambda_rulefixed": {"lambda_rule": "fixed"}}
    exps = {"adaptive_weight": {"plot": "adaptive_weight", "runs": [list(k) for k in spec], "grid": grid}}
    fig = _fig("adaptive_weight", _runs(spec), exps, _out(tmp_path, "lam"))
    ax = fig.axes[0]
    title = _title(fig)
    assert "n = 1-2 class orders" in title and "adaptive lambda > fixed lambda: too few orders (n = 1)" in title
    assert "difference from adaptive λ (Eq. 7, official code)" in title
    assert sorted(t.get_text() for t in ax.texts if t.get_text().startswith("n=")) == ["n=1", "n=2"]
    assert ax.get_ylim()[0] == 0


def test_memory_curves_against_per_class(tmp_path):
    spec = {("lucir", "default", 2, 1): ([60] * 3, [59] * 3), ("lucir", "default_per_class5", 2, 1): ([50] * 3,
                                                                                                         [49] * 3),
            ("icarl", "default", 2, 1): ([40] * 3, [45] * 3), ("icarl", "default_per_class5", 2, 1): ([30] * 3,
                                                                                                         [35] * 3)}
    per_class = {(m, v): 5 if v.endswith("5") else 20 for m, v, _, _ in spec}
    grid = {f"{m}/{v}": {"per_class": r} for (m, v), r in per_class.items()}
    exps = {"memory": {"plot": "memory", "runs": [list(k) for k in spec], "grid": grid}}
    fig = _fig("memory", _runs(spec, per_class), exps, _out(tmp_path, "mem"))
    _written(*_out(tmp_path, "mem"))
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}       # one errorbar per curve
    assert set(lines) == {"Ours-CNN", "Ours-NME", "iCaRL-CNN", "iCaRL-NME"}
    np.testing.assert_allclose(lines["Ours-CNN"].get_xdata(), [5, 20])
    np.testing.assert_allclose(lines["Ours-CNN"].get_ydata(), [50, 60])
    np.testing.assert_allclose(lines["iCaRL-NME"].get_ydata(), [35, 45])
    # lower row: each curve's difference at R_per 5 from the default memory (20), one order: no interval
    low = fig.axes[1]
    means = [float(c.lines[0].get_ydata()[0]) for c in low.containers]
    assert means == pytest.approx([-10, -10, -10, -10])                         # iCaRL CNN, NME, Ours CNN, NME
    title = _title(fig)
    assert "default memory (per_class 20)" in title
    assert "Ours-CNN, R_per 20 > Ours-CNN, R_per 5: too few orders (n = 1)" in title


def test_lambda_bars(tmp_path):
    spec = {("lucir", "default", p, 1): [60 + p] * (p + 1) for p in (1, 2)}
    spec.update({("lucir", "default_lambda_rulefixed", p, 1): [55 + p] * (p + 1) for p in (1, 2)})
    grid = {"lucir/default": {"lambda_rule": "code"}, "lucir/default_lambda_rulefixed": {"lambda_rule": "fixed"}}
    exps = {"adaptive_weight": {"plot": "adaptive_weight", "runs": [list(k) for k in spec], "grid": grid}}
    fig = _fig("adaptive_weight", _runs(spec), exps, _out(tmp_path, "lam"))
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([61, 62, 56, 57])   # adaptive (1, 2), fixed (1, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 phase", "2 phases"]


def _head_metrics(method, norms, bias, num_old, sigma=None):
    return {"run": _identity(method, phases=1), "phase": 1, "num_old": num_old, "classes_seen": len(norms),
            "head": {"weight_norms": norms, "bias": bias, "sigma": sigma}}


def test_weight_norms_panels(tmp_path):
    linear = _head_metrics("icarl", [1.0, 1.1, 2.0, 2.2], [0.1, 0.0, 0.5, 0.6], num_old=2)
    cosine = _head_metrics("lucir", [0.9, 0.95, 0.92, 0.93], None, num_old=2, sigma=3.0)
    fig = plots.plot_weight_norms(linear, cosine, NO_CLAIMS, *_out(tmp_path, "norms"))
    _written(*_out(tmp_path, "norms"))
    assert len(fig.axes) == 3
    old, new = [c for c in fig.axes[1].collections if isinstance(c, PathCollection)]  # the linear head's biases
    np.testing.assert_allclose(old.get_offsets(), [[0, 0.1], [1, 0.0]])
    np.testing.assert_allclose(new.get_offsets(), [[2, 0.5], [3, 0.6]])
    assert "η = 3.00" in fig.axes[2].get_title()                               # the paper's symbol only
    assert not any("σ" in t for t in _texts(fig))
    assert fig._suptitle is None                                                # no claims read: no verdict
    # the cosine panel shows what enters the logits, eta * ||normalised row|| = sigma for every class ...
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[2].collections if isinstance(c, PathCollection)])
    np.testing.assert_allclose(offsets[:, 1], [3.0] * 4)
    # ... and names the stored norms it normalises away
    assert "Ours (cosine head, η = 3.00) η‖θ̄‖, 1 phase, seed 1, phase 1: stored ‖θ‖ old 0.93, new 0.93" in _said(fig)
    only_cosine = plots.plot_weight_norms(None, cosine, NO_CLAIMS, *_out(tmp_path, "norms1"))
    assert len(only_cosine.axes) == 1


def _with(summary: dict, **extra) -> dict:
    return {**summary, **extra}


def test_weight_norms_give_the_claims_tables_answers(tmp_path):
    """The drawn run's new rows are shorter (mean 1 < 2), but the figure does not judge: over the 3 class orders the
    table pairs, the new norms are larger (yes), the biases not (no), both words for word in the caption."""
    from ucir.report.figures.common import verdict
    linear = _head_metrics("icarl", [2.0, 2.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5], num_old=2)
    runs = [_with(_summary(s, [50, 40, 30], method="icarl"), head_phase1={
        "norm_old": 1.0 + s / 10, "norm_new": 2.0 + s / 5, "bias_old": 0.5 + s / 100, "bias_new": 0.1 - s / 100})
        for s in (1, 2, 3)]
    fig = plots.plot_weight_norms(linear, None, claims_table(runs), *_out(tmp_path, "norms"))
    title = _title(fig)
    rows = _claims_of(runs, "3").set_index("claim")
    assert list(rows.answer[["linear_norms", "linear_biases"]]) == ["yes", "no"]
    for r in rows.itertuples():
        assert verdict(r) in title
    assert not any("absent" in t for t in _texts(fig))


def test_confusion_gives_the_claims_tables_answers(tmp_path):
    from ucir.report.figures.common import verdict

    def m(method, conf_cnn, conf_nme):
        return {"run": _identity(method, phases=1), "config": {"base_classes": 1}, "num_old": 1,
                "classes_seen": 2, "cnn": {"all": 50.0}, "confusion_cnn": conf_cnn, "nme": {"all": 50.0},
                "confusion_nme": conf_nme}
    biased, even = [[1, 9], [0, 10]], [[8, 2], [3, 7]]                 # 95 % / 45 % of predictions new
    runs = [_with(_summary(s, [50, 40], method=meth, phases=1), prediction_share={
        "cnn": {"predicted_new": 50 + gap + s, "true_new": 50.0}, "nme": None})
        for s in (1, 2) for meth, gap in (("icarl", 30), ("lucir", 2))]
    fig = plots.plot_confusion({"icarl": m("icarl", even, even), "lucir": m("lucir", biased, even)},
                               claims_table(runs), *_out(tmp_path, "conf"))
    assert fig.axes[2].get_title().endswith("95% predicted new (true 50%)")
    title = _title(fig)
    rows = _claims_of(runs, "9")
    assert set(rows.answer) == {"too few orders"}                      # 2 orders; the drawn panels say nothing
    for r in rows.itertuples():
        assert verdict(r) in title
    assert "unlike" not in title


def test_confusion_matrices_log_and_accuracy(tmp_path):
    conf = [[5, 1, 0], [0, 3, 2], [1, 0, 8]]
    m = {"run": _identity("lucir", phases=1), "config": {"base_classes": 2}, "num_old": 2, "classes_seen": 3,
         "cnn": {"all": 80.0}, "confusion_cnn": conf, "nme": {"all": 75.5}, "confusion_nme": conf}
    fig = plots.plot_confusion({"icarl": None, "lucir": m}, NO_CLAIMS, *_out(tmp_path, "conf"))
    _written(*_out(tmp_path, "conf"))
    titles = [ax.get_title() for ax in fig.axes[:4]]
    # top-1 named; new = the last class (index >= num_old): predicted 10 of 20, true 9 of 20
    assert titles == ["iCaRL-CNN", "iCaRL-NME", "Ours-CNN (top-1 80.00%)\n50% predicted new (true 45%)",
                      "Ours-NME (top-1 75.50%)\n50% predicted new (true 45%)"]
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), np.log1p(np.array(conf, dtype=float)))


@pytest.mark.parametrize("name", ["plot_accuracy", "plot_components", "plot_memory", "plot_adaptive_weight"])
def test_table_figures_without_runs_say_so(tmp_path, name):
    runs = _runs({("lucir", "default", 1, 1): [50, 40]})
    exps = {"main": {"plot": "none", "runs": [["lucir", "default", 1, 1]], "grid": {}}}
    fig = getattr(plots, name)(runs, claims_table(runs), exps, *_out(tmp_path, name))
    _written(*_out(tmp_path, name))
    assert NO_RUNS in _texts(fig)


def test_run_figures_without_runs_say_so(tmp_path):
    for name, fig in (("norms", plots.plot_weight_norms(None, None, NO_CLAIMS, *_out(tmp_path, "norms"))),
                      ("conf", plots.plot_confusion({"icarl": None, "lucir": None}, NO_CLAIMS,
                                                    *_out(tmp_path, "conf")))):
        _written(*_out(tmp_path, name))
        assert NO_RUNS in _texts(fig)


def test_figure_runs_one_setting_for_all_panels():
    from ucir.report.select import figure_runs
    runs = [("icarl", 2, 1994), ("icarl", 5, 1993), ("lucir", 5, 1993), ("lucir", 2, 1994), ("lucir", 1, 1993),
            ("finetune", 1, 1993), ("lucir", 2, 1993)]
    # 1 phase lacks iCaRL; of the settings with both, the fewest phases, then the seed listed first
    assert figure_runs(runs, [["icarl"], ["lucir"]], [1994, 1993]) == [("icarl", 2, 1994), ("lucir", 2, 1994)]
    assert figure_runs(runs, [["icarl", "finetune"], ["lucir"]], [1993]) == [("finetune", 1, 1993),
                                                                             ("lucir", 1, 1993)]
    assert figure_runs(runs, [["lwf"]], [1993]) == [None]
    assert figure_runs([], [["icarl"], ["lucir"]], [1993]) == [None, None]


def test_tables_html_shows_every_table():
    from ucir.report.html import tables_html
    page = tables_html({"A <b>": pd.DataFrame({"method": ["lucir"], "acc": [61.2345]}),
                        "B": pd.DataFrame({"x": [float("nan")]})}, "T")
    assert page.count("<table") == 2 and "61.23" in page and "61.2345" not in page
    assert "A &lt;b&gt;" in page and "NaN" not in page and "nan" not in page


def test_the_reports_method_roles_name_methods_with_the_heads_they_draw():
    # renaming a preset must not leave a figure silently without its runs
    for panels in (HEAD_RUNS, CONFUSION_RUNS):
        assert {m for prefs in panels.values() for m in prefs} <= set(METHODS), panels
    for head, prefs in HEAD_RUNS.items():                        # Fig. 3: a panel draws the head it is named after
        assert {METHOD_PRESETS[m].flags["head"] for m in prefs} == {head}, (head, prefs)
