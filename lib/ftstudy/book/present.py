"""Tables as a reader sees them in the book: chosen columns with units in their headers,
rounded, no index, and long ones folded into a collapsed section (HTML <details>, which
Jupyter Book and JupyterLab both render) so the page leads with sentences and figures."""
from __future__ import annotations

import html

import pandas as pd

# column -> header shown (units in brackets); columns not listed keep their name
HEADERS = {
    "train_data": "trained on", "train_size": "examples", "mean_diff": "change", "ci_low": "95% CI low",
    "ci_high": "95% CI high", "p_value": "p", "p_adjusted": "p (Holm)", "significant": "Holm p < 0.05",
    "gain": "gain", "gain_low": "gain CI low", "gain_high": "gain CI high", "n": "items",
    "forgetting": "forgetting [bits/byte]", "difference": "difference [bits/byte]",
    "matched_learning": "matched learning [bits/byte]", "at_step": "at step", "forgetting_task": "retention task",
    "chosen_rate": "chosen rate", "default_rate": "configured rate", "validation_bpb": "validation [bits/byte]",
    "validation_bpb_default": "validation at configured [bits/byte]", "sweep_wall_s": "sweep wall [s]",
    "top_answer_share": "top answer share", "majority_baseline": "majority baseline", "n_items": "items",
}
LIMIT = 12  # rows shown open; longer tables are collapsed


def format_table(df: pd.DataFrame, columns: list[str] | None = None, digits: int = 3) -> pd.DataFrame:
    """The columns a reader needs, renamed with units, numbers rounded to `digits` significant
    places after the point, booleans as yes/no."""
    out = df[[c for c in (columns or list(df.columns)) if c in df.columns]].copy()
    for c in out.columns:
        if out[c].dtype == bool or set(out[c].dropna().unique()) <= {True, False} and out[c].dtype == object:
            out[c] = out[c].map({True: "yes", False: "no"}).fillna("")
        elif pd.api.types.is_float_dtype(out[c]):
            whole = out[c].dropna().apply(float.is_integer).all() if out[c].notna().any() else False
            p_value = c.startswith("p_")
            out[c] = out[c].map(lambda v: _number(v, digits, whole, p_value))
    out = out.rename(columns=HEADERS)
    out.columns.name = None  # a pivot's column-axis name would become a stray header cell
    return out


def _number(v: float, digits: int, whole: bool, p_value: bool) -> str:
    """One cell: blank for missing, p-values as '<0.001' below that, thousands with separators."""
    if pd.isna(v):
        return ""
    if p_value:
        return "<0.001" if v < 0.001 else f"{v:.3f}"
    if whole or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}"


def html_table(df: pd.DataFrame, title: str, columns: list[str] | None = None, digits: int = 3,
               collapsed: bool | None = None) -> str:
    """A formatted table as HTML; collapsed under `title` when longer than LIMIT rows (or when
    `collapsed` says so)."""
    t = format_table(df, columns, digits)
    body = t.to_html(index=False, border=0, classes="ftstudy-table", escape=True, na_rep="")
    fold = len(t) > LIMIT if collapsed is None else collapsed
    if not fold:
        return f"<p><b>{html.escape(title)}</b></p>{body}"
    return (f"<details><summary>{html.escape(title)} ({len(t)} rows; click to show)</summary>"
            f"{body}</details>")


def show(df: pd.DataFrame, title: str, columns: list[str] | None = None, digits: int = 3,
         collapsed: bool | None = None) -> None:
    """Display `html_table` in a notebook."""
    from IPython.display import HTML, display

    if df is None or df.empty:
        return
    display(HTML(html_table(df, title, columns, digits, collapsed)))
