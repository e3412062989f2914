"""ucir.tools.compare_claims: claims tables' answers side by side, and whether each holds in all of them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ucir.report.claims import CLAIM_COLS
from ucir.tools import compare_claims

DOCS = Path(__file__).resolve().parents[1] / "docs"


def table(path, answers: dict[str, str], dataset: str = "d", a: str = "Ours-CNN", figures: dict[str, str] | None = None):
    rows = []
    for i, (claim, ans) in enumerate(answers.items()):
        row = dict.fromkeys(CLAIM_COLS, 1.0)
        row.update(dataset=dataset, claim=claim, figure=(figures or {}).get(claim, "5"), phases=5, statement="s", metric="average incremental",
                   a=a, b="iCaRL-CNN", relation=">", n=10, seeds="1993", differences="+1", diff_mean=1.5 + i,
                   ci_low=0.5, ci_high=2.5, p_holm=0.01 * (i + 1), answer=ans, answer_unadjusted=ans)
        rows.append(row)
    pd.DataFrame(rows, columns=CLAIM_COLS).to_csv(path, index=False)
    return path


def test_answers_side_by_side_and_whether_they_hold_at_both(tmp_path, capsys):
    a = table(tmp_path / "a.csv", {"x": "yes", "y": "yes", "z": "unclear", "only_a": "no"})
    b = table(tmp_path / "b.csv", {"x": "yes", "y": "unclear", "z": "unclear"}, dataset="d2")
    out = tmp_path / "pairs.csv"
    assert compare_claims.main([str(a), str(b), "--names", "20ep", "40ep", "--csv", str(out)]) == 0
    printed = capsys.readouterr()
    pairs = pd.read_csv(out)
    assert pairs.set_index("claim")["all"].to_dict() == {"x": "yes", "y": "differs", "z": "unclear"}
    assert list(pairs.columns[-3:]) == ["p_holm_40ep", "answer_40ep", "all"]
    assert ("| 5 | Ours-CNN vs iCaRL-CNN | average incremental | +1.50 [+0.50, +2.50] | 0.010 | yes | "
            "+1.50 [+0.50, +2.50] | 0.010 | yes | yes |") in printed.out
    assert "(1 rows not in every table left out)" in printed.err


def test_one_table_is_rendered_and_filtered_by_figure_and_named_by_its_dataset(tmp_path, capsys):
    a = table(tmp_path / "a.csv", {"x": "yes", "y": "no"}, figures={"y": "8"})
    assert compare_claims.main([str(a), "--figures", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| Fig. | A vs B | metric | A − B [95 % CI] (d) | p Holm (d) | answer (d) |")
    assert len(out) == 3 and out[2].startswith("| 8 |") and out[2].endswith("| no |")


def test_rows_that_compare_different_things_are_refused(tmp_path, capsys):
    a = table(tmp_path / "a.csv", {"x": "yes"})
    b = table(tmp_path / "b.csv", {"x": "yes"}, dataset="d2", a="Ours-NME")
    assert compare_claims.main([str(a), str(b)]) == 1
    assert "claim x (5 phases): a is 'Ours-CNN' in d and 'Ours-NME' in d2" in capsys.readouterr().err


def test_two_names_must_differ(tmp_path):
    a = table(tmp_path / "a.csv", {"x": "yes"})
    with pytest.raises(ValueError, match="one different name per table is needed, got A, A"):
        compare_claims.compare([pd.read_csv(a), pd.read_csv(a)], ["A", "A"])


def test_a_file_that_is_not_a_claims_table_is_an_error(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    a = table(tmp_path / "a.csv", {"x": "yes"})
    assert compare_claims.main([str(tmp_path / "x.csv"), str(a)]) == 1
    assert "not a claims table of this version" in capsys.readouterr().err


def test_a_bar_in_a_cell_does_not_split_the_markdown_row(tmp_path, capsys):
    a = table(tmp_path / "a.csv", {"x": "yes"}, a="|predicted - true share|")
    assert compare_claims.main([str(a)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("| 5 | \\|predicted - true share\\| vs iCaRL-CNN |") and row.count(" | ") == 5


@pytest.mark.parametrize("committed, tables, names, paired", [
    ("claims_by_budget.csv", ("fashion_mnist", "fashion_mnist_2x"), ["20_epochs", "40_epochs"], 16),
    ("claims_by_machine.csv", ("fashion_mnist_first_sitting", "fashion_mnist"), ["first_machine", "this_machine"], 16),
])
def test_the_results_page_shows_the_committed_claims_tables_side_by_side(committed, tables, names, paired):
    """docs/results.md's side-by-side claims tables (20 against 40 epochs; the 20-epoch runs of the first sitting
    against those the records keep) are what the tool renders from the claims.csv committed beside them, and the
    committed CSV is that table: every number the page cites there is in a committed table. Every claim of the
    smaller table (the main comparison's 16) has its partner in the larger (with the ablations' claims)."""
    claims = [compare_claims.read_claims(str(DOCS / "tables" / ds / "claims.csv")) for ds in tables]
    rows, unpaired = compare_claims.compare(claims, names)
    assert len(rows) == min(map(len, claims)) == paired
    assert unpaired == abs(len(claims[0]) - len(claims[1]))
    assert compare_claims.markdown(rows, names) in (DOCS / "results.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(DOCS / "tables" / committed), rows.reset_index(drop=True),
                                  check_dtype=False)


def test_the_results_page_shows_the_committed_ablation_claims():
    """docs/results.md's ablation table is the tool's rendering of the committed 20-epoch claims table's rows for
    Figs. 7a, 7b and 8, each answered with at least the 5 orders the study promises."""
    claims = compare_claims.read_claims(str(DOCS / "tables" / "fashion_mnist" / "claims.csv"))
    rows, _ = compare_claims.compare([claims], ["20_epochs"], ["7a", "7b", "8"])
    assert len(rows) == 11 and rows["n_20_epochs"].min() >= 5
    assert compare_claims.markdown(rows, ["20_epochs"]) in (DOCS / "results.md").read_text()
