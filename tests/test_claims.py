"""The paper's claims answered with paired statistics (ucir.report.claims), against hand-computed numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ucir.report.claims import CLAIMS, answer, claims_table, evaluate, memory_claims, paired_stats
from ucir.report.tables import head_stats, new_share


def test_paired_stats_by_hand():
    # d = 1..5: mean 3, sd sqrt(2.5); t(0.975, 4) = 2.776445 -> half-width 2.776445 * 1.581139 / sqrt(5) = 1.963243;
    # t = 3 / (1.581139 / sqrt(5)) = 4.242641, two-sided p (4 df) = 0.013236; sign flips: only all-plus and
    # all-minus reach |sum| = 15, so p = 2 / 32
    st = paired_stats(np.array([1.0, 2, 3, 4, 5]))
    assert st["n"] == 5 and st["diff_mean"] == 3 and st["diff_sd"] == pytest.approx(math.sqrt(2.5))
    assert (st["ci_low"], st["ci_high"]) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)
    assert st["p_t"] == pytest.approx(0.013236, abs=1e-5)
    assert st["p_perm"] == 2 / 32
    # d = (1, -1, 2): |sums| of the 8 patterns of (1, 1, 2): 4, 2, 0, 2, 2, 0, 2, 4 -> >= |2| in 6 of 8
    assert paired_stats(np.array([1.0, -1, 2]))["p_perm"] == 6 / 8
    one = paired_stats(np.array([2.5]))
    assert one["n"] == 1 and one["diff_mean"] == 2.5 and math.isnan(one["ci_low"]) and math.isnan(one["p_t"])


@pytest.mark.parametrize("relation,low,high,expected", [
    (">", 0.1, 3, "yes"), (">", -0.1, 3, "unclear"), (">", -3, -0.1, "no"),
    (">=", -1.9, 1, "yes"), (">=", -2.1, 1, "unclear"), (">=", -5, -2.1, "no"),
    ("~", -1.5, 1.5, "yes"), ("~", -2.5, 1, "unclear"), ("~", 2.1, 4, "no"), (">", float("nan"), 1, "unclear"),
])
def test_answers(relation, low, high, expected):
    assert answer(relation, low, high) == expected


def _summary(method, variant, seed, cnn, nme, phases=5, per_class=20, **extra):
    return dict(dataset="d", method=method, variant=variant, phases=phases, seed=seed, avg_inc_cnn=cnn,
                avg_inc_nme=nme, final_cnn=cnn - 10, final_nme=nme - 10, config={"per_class": per_class}, **extra)


def test_a_claim_pairs_the_class_orders_both_sides_have():
    runs = [_summary("lucir", "default", s, c, 0) for s, c in ((1, 70), (2, 60), (3, 65))]
    runs += [_summary("icarl", "default", s, c, 0) for s, c in ((1, 62), (2, 58), (4, 99))]   # seed 4: no pair
    claim = next(c for c in CLAIMS if c.id == "lucir_cnn>icarl_cnn:avg_inc")
    (row,) = evaluate(claim, runs)
    assert row["seeds"] == "1, 2" and row["differences"] == "+8.00, +2.00"
    assert (row["a_mean"], row["b_mean"], row["diff_mean"]) == (65, 60, 5)
    # sd 4.242641, t(0.975, 1) = 12.7062: interval 5 +- 38.1 -> neither above nor below 0
    assert row["ci_low"] == pytest.approx(5 - 12.706205 * 3, abs=1e-4) and row["answer"] == "unclear"


def test_memory_claims_follow_the_grid_points():
    runs = []
    for method, base in (("lucir", 60), ("icarl", 50)):
        for variant, m, bump in (("default_per_class5", 5, -5), ("default", 20, 0), ("default_per_class50", 50, 3)):
            runs += [_summary(method, variant, s, base + bump + s, base + bump + s - 1, per_class=m) for s in (1, 2, 3)]
    ids = [c.id for c in memory_claims(runs)]
    assert ids == ["memory5:lucir>icarl", "memory20:lucir>icarl", "memory50:lucir>icarl",
                   "memory20>5:lucir", "memory20>5:icarl", "memory50>20:lucir", "memory50>20:icarl"]
    table = claims_table(runs)
    rows = table[table.claim.str.startswith("memory")]
    assert set(rows.answer) == {"yes"}                     # every difference is the same in each order: sd 0
    lucir_vs = rows[rows.claim == "memory20:lucir>icarl"].iloc[0]
    assert lucir_vs.diff_mean == pytest.approx(60 - (50 - 1))  # Ours-CNN against iCaRL-NME


def test_head_stats_and_new_share_by_hand():
    m = {"num_old": 2, "head": {"weight_norms": [1.0, 2.0, 4.0], "bias": [0.1, -0.1, 0.5], "sigma": None}}
    assert head_stats(m) == {"norm_old": 1.5, "norm_new": 4.0, "bias_old": 0.0, "bias_new": 0.5}
    cos = {"num_old": 2, "head": {"weight_norms": [1.0, 2.0, 4.0], "bias": None, "sigma": 7.5}}
    assert head_stats(cos)["scale_old"] == head_stats(cos)["scale_new"] == 7.5
    # 3 classes, the last one new: 10 test images of it, 20 old; 14 predicted as the new class
    confusion = [[5, 0, 5], [0, 6, 4], [0, 5, 5]]
    share = new_share(confusion, 2)
    assert share["predicted_new"] == pytest.approx(100 * 14 / 30) and share["true_new"] == pytest.approx(100 / 3)
