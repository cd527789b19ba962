"""A results table as a page of the Snakemake report: rounded, with units in the column names, readable in
the page (the report can only offer a TSV as a download). The TSVs keep full precision."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from morphgen.nifti import atomic_output

# column-name endings -> unit shown in the header
UNITS = {"_ml": "ml", "_mm": "mm", "_s": "s", "_seconds": "s", "_mb": "MB", "_pct": "%"}
NUMBER = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.I)
P_VALUE = re.compile(r"(^|_)p($|_)|p_value|pvalue|bonferroni")
TWO_DECIMALS = re.compile(r"(^|_)(d|r|t|ncc|dice|slope|ratio|r2)($|_)|cohen|pearson|correlation")
STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 8px; }
table { border-collapse: collapse; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
p.note { color: #555; }
"""


def header(column: str) -> str:
    """``ventricles_ml`` -> ``ventricles (ml)``; underscores as spaces."""
    for ending, unit in UNITS.items():
        if column.endswith(ending) and len(column) > len(ending):
            return f"{column[: -len(ending)].replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def format_value(column: str, value) -> str:
    """A cell as a reader wants it: p-values in 2 significant digits (scientific below 0.001), effect sizes
    and correlations in 2 decimals, volumes in 1, other numbers in 3 significant digits; text as it is."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)  # a number in a column that also holds text ("n/a", a reason)
    if not isinstance(value, (float, np.floating)):
        return str(value)
    value = float(value)
    name = column.lower()
    if P_VALUE.search(name):
        return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.2g}"
    if name.endswith("_ml"):
        return f"{value:,.1f}"
    if TWO_DECIMALS.search(name):
        return f"{value:.2f}"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table_page(table: pd.DataFrame, title: str, source: str) -> str:
    """The HTML of one table: a caption, the rounded cells, and where the full-precision TSV is."""
    text_columns = {c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])}
    head = "".join(
        f'<th class="{"text" if c in text_columns else "num"}">{html.escape(header(str(c)))}</th>'
        for c in table.columns
    )
    rows = []
    for _, row in table.iterrows():
        cells = []
        for c in table.columns:
            kind = "text" if c in text_columns else "num"
            cells.append(f'<td class="{kind}">{html.escape(format_value(str(c), row[c]))}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n"
        f"<table><caption>{html.escape(title)} ({len(table)} rows)</caption>\n"
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
        f"<p class='note'>Rounded for reading; full precision in <code>{html.escape(source)}</code>.</p>\n"
        "</body></html>\n"
    )


def write_table_page(tsv: str | Path, out_html: str | Path, title: str, source: str | None = None) -> Path:
    """Write the report page of the table in ``tsv``."""
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False, na_values=["", "nan", "NaN"])
    with atomic_output(out_html) as tmp:
        tmp.write_text(table_page(table, title, source or str(tsv)))
    return Path(out_html)
