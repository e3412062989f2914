"""The tables as one small HTML page, so the Snakemake report shows them inline (it offers CSV files only as
downloads).

Read at a glance at a common width (1,400 px): a table's answer comes before its numbers (the claims table shows
`claim`, `phases`, `answer` first), numbers stay on one line while long text (a claim's statement, the paper's
protocol) wraps in a narrow cell and names break at their underscores, and a table still wider than the window
scrolls on its own."""
from __future__ import annotations

import html
import math
import numbers

import pandas as pd

from .claims import P_DECIMALS

DECIMALS = 2                                # as in the CSVs (ucir.report.tables.write_csv), p-values: P_DECIMALS
LEAD = ("claim", "phases", "answer")        # in a table with an answer: what is asked, where, and the answer first
LONG = 40                                   # characters: a column with a longer value is text that wraps
CSS = ("body{font-family:sans-serif;font-size:12px;margin:1em}h2{font-size:14px}"
       ".scroll{overflow-x:auto;margin-bottom:2em}table{border-collapse:collapse}"
       "th,td{border:1px solid #ccc;padding:2px 3px;text-align:left;font-size:10.5px}th{background:#f0f0f0}"
       "td.num{text-align:right;white-space:nowrap}td.text{min-width:6em;max-width:20em}")


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """The columns as the page shows them: a table with an `answer` column leads with LEAD, the rest keep their
    order; other tables are unchanged."""
    if "answer" not in df.columns:
        return df
    lead = [c for c in LEAD if c in df.columns]
    return df[lead + [c for c in df.columns if c not in lead]]


def _kind(column: pd.Series) -> str:
    """The cell class of a column: num (right-aligned, on one line), word, or text (wrapping in a narrow cell)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return "num"
    return "text" if column.astype(str).str.len().max() > LONG else "word"


def _breakable(text: str) -> str:
    """Escaped, with a line-break opportunity after each underscore, `>` and `:` (names like avg_inc_cnn_mean,
    claim ids like lucir_cnn>icarl_cnn:final)."""
    return html.escape(text).replace("_", "_<wbr>").replace("&gt;", "&gt;<wbr>").replace(":", ":<wbr>")


def _cell(value, decimals: int = DECIMALS) -> str:
    """Numbers with `decimals` decimals (integers as they are), missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:.{decimals}f}"
    return _breakable(str(value))


def table_html(df: pd.DataFrame) -> str:
    df = ordered(df)
    kinds = [_kind(df[c]) for c in df.columns]
    decimals = [P_DECIMALS.get(c, DECIMALS) for c in df.columns]
    head = "".join(f"<th>{_breakable(str(c))}</th>" for c in df.columns)
    rows = ["<tr>" + "".join(f"<td class='{k}'>{_cell(v, d)}</td>" for k, d, v in zip(kinds, decimals, row)) + "</tr>"
            for row in df.itertuples(index=False)]
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def tables_html(tables: dict[str, pd.DataFrame], title: str) -> str:
    """{heading: table} -> one HTML page."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, df in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(table_html(df))
    parts.append("</body></html>")
    return "\n".join(parts)
