"""The tables as one small HTML page, so the Snakemake report shows them inline (it offers CSV files only as
downloads)."""
from __future__ import annotations

import html

import pandas as pd

CSS = ("body{font-family:sans-serif;font-size:12px;margin:1em}table{border-collapse:collapse;margin-bottom:2em}"
       "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f0f0f0}"
       "td:nth-child(-n+5){text-align:left}h2{font-size:14px}")


def tables_html(tables: dict[str, pd.DataFrame], title: str) -> str:
    """{heading: table} -> one HTML page; numbers with 2 decimals, missing values empty."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, df in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.2f}", border=0))
    parts.append("</body></html>")
    return "\n".join(parts)
