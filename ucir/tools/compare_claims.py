"""Claims tables side by side: does each answer hold in every study (e.g. two training budgets)?

    python -m ucir.tools.compare_claims A/claims.csv [B/claims.csv ...] [--names A B ...] [--figures 7a 7b ...]
                                        [--csv FILE]

Reads claims tables as the workflow writes them (tables/claims.csv, ucir.report.claims) and pairs their rows by claim
and number of phases; a row some table lacks is left out (and counted on stderr). Per claim and table: the mean
difference with its 95 % interval, the Holm-adjusted p and the answer; with two tables or more, `all`: the answer
when every table gives it, "differs" when they do not. Tables are named by their dataset (--names: otherwise);
--figures keeps the claims of those figures. Prints a Markdown table (the rows of docs/results.md); --csv also
writes the tidy one.
"""
from __future__ import annotations

import argparse
import sys
from functools import reduce
from pathlib import Path

import pandas as pd

from ..report.claims import read_claims

KEY = ["claim", "phases"]
SHARED = ["figure", "metric", "a", "b", "relation"]                  # what a claim compares: the same in every table
PER_TABLE = ["n", "diff_mean", "ci_low", "ci_high", "p_holm", "answer"]
DIFFERS = "differs"


def compare(tables: list[pd.DataFrame], names: list[str], figures: list[str] = ()) -> tuple[pd.DataFrame, int]:
    """The claims every table answers (columns: KEY, SHARED, PER_TABLE suffixed `_<name>` per table, and `all`
    with two tables or more), in the first table's order, and how many rows had no partner."""
    if len(set(names)) != len(names) or len(names) != len(tables):
        raise ValueError(f"--names: one different name per table is needed, got {', '.join(names)}")
    if figures:
        tables = [t[t.figure.isin(figures)] for t in tables]
    parts = [t[KEY + SHARED + PER_TABLE].rename(columns={c: f"{c}_{n}" for c in SHARED + PER_TABLE})
             for t, n in zip(tables, names)]
    rows = reduce(lambda x, y: x.merge(y, on=KEY, validate="one_to_one"), parts)
    first = names[0]
    for col in SHARED:
        for n in names[1:]:
            clash = rows[rows[f"{col}_{first}"] != rows[f"{col}_{n}"]]
            if not clash.empty:
                r = clash.iloc[0]
                raise ValueError(f"claim {r.claim} ({r.phases} phases): {col} is {r[f'{col}_{first}']!r} in "
                                 f"{first} and {r[f'{col}_{n}']!r} in {n}: not the same comparison")
        rows = rows.rename(columns={f"{col}_{first}": col}).drop(columns=[f"{col}_{n}" for n in names[1:]])
    cols = KEY + SHARED + [f"{c}_{n}" for n in names for c in PER_TABLE]
    if len(names) > 1:
        answers = rows[[f"answer_{n}" for n in names]]
        rows["all"] = answers.iloc[:, 0].where(answers.nunique(axis=1) == 1, DIFFERS)
        cols.append("all")
    unpaired = sum(len(t) for t in tables) - len(tables) * len(rows)
    return rows[cols], unpaired


def _interval(r, n: str) -> str:
    mean = f"{r[f'diff_mean_{n}']:+.2f}"
    return mean if pd.isna(r[f"ci_low_{n}"]) else f"{mean} [{r[f'ci_low_{n}']:+.2f}, {r[f'ci_high_{n}']:+.2f}]"


def markdown(rows: pd.DataFrame, names: list[str]) -> str:
    head = ["Fig.", "A vs B", "metric", *(f"{w} ({n})" for n in names for w in ("A − B [95 % CI]", "p Holm",
                                                                              "answer"))]
    head += ["at all"] if "all" in rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = [str(r.figure), f"{r.a} vs {r.b}", r.metric]
        for n in names:
            p = r[f"p_holm_{n}"]
            cells += [_interval(r, n), "" if pd.isna(p) else f"{p:.3f}", r[f"answer_{n}"]]
        cells += [r["all"]] if "all" in rows else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", type=Path, help="claims.csv files")
    ap.add_argument("--names", nargs="+", help="what each table is (default: its dataset)")
    ap.add_argument("--figures", nargs="+", default=[], help="only these figures' claims, e.g. 7a 7b 8")
    ap.add_argument("--csv", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    try:
        tables = [read_claims(str(p)) for p in args.tables]
        names = args.names or [str(t.dataset.iloc[0]) if len(t) else p.stem for t, p in zip(tables, args.tables)]
        rows, unpaired = compare(tables, names, args.figures)
    except (OSError, ValueError) as e:
        print(f"ucir.tools.compare_claims: {e}", file=sys.stderr)
        return 1
    if args.csv:
        rows.to_csv(args.csv, index=False)
    print(markdown(rows, names))
    if unpaired:
        print(f"({unpaired} rows not in every table left out)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
