"""HTML pieces of the report: escaped text, tables, embedded figures, the page.

Everything a database supplies (model names, index fields, group labels) goes
through :func:`text`, which escapes it for HTML and neutralises spreadsheet
formulas, so a hostile name shows as text in the browser and stays text when a
table is copied into a spreadsheet.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Sequence

#: First characters that make a spreadsheet treat a pasted cell as a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem;
       padding: 1rem 2rem 4rem; color: #1d1d1f; background: #fff; }
h1 { margin-bottom: .2rem; }
h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.5rem; }
nav ol { columns: 2; }
.subtitle { color: #57606a; margin-top: 0; }
.reading { background: #f1f8ff; border-left: 4px solid #0969da; padding: .4rem .8rem;
           margin: .6rem 0; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: .2rem .5rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 13px; }
.tables { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
"""


def text(value) -> str:
    """A value as safe HTML text: escaped, and a leading formula character neutralised.

    Examples
    --------
    >>> text("<b>")
    '&lt;b&gt;'
    >>> text("=1+2")
    '&#x27;=1+2'
    """
    value = "" if value is None else str(value)
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    return html.escape(value)


def number(value, digits: int = 3) -> str:
    """A number for a table cell: integers (Python or numpy) with thousands separators,
    floats to ``digits`` significant digits, NaN as an empty cell.

    Examples
    --------
    >>> number(1234567), number(0.123456), number(float("nan"))
    ('1,234,567', '0.123', '')
    """
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    value = float(value)
    return "" if math.isnan(value) else f"{value:.{digits}g}"


def percent(value) -> str:
    """``0.25`` -> ``'25%'``; NaN -> ``''``.

    Examples
    --------
    >>> percent(0.25)
    '25%'
    """
    value = float(value)
    return "" if math.isnan(value) else f"{value:.0%}"


def table(header: Sequence[str], rows: Sequence[Sequence], table_id: str,
          numeric: Sequence[bool] | None = None) -> str:
    """An HTML table. Text cells go through :func:`text`; numeric cells (formatted by
    the caller, so a minus sign is a number, not a formula) are only escaped.

    Examples
    --------
    >>> table(["model", "filters"], [["a", "1,000"]], "t", numeric=[False, True])[:21]
    '<table id="t"><thead>'
    """
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(str(cell))}</td>' if is_num
                         else f"<td>{text(cell)}</td>"
                         for cell, is_num in zip(row, numeric, strict=True)) + "</tr>"
        for row in rows)
    return (f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A PNG embedded as a ``data:`` URI, so the page needs no other file.

    Examples
    --------
    >>> image(b"\\x89PNG...", "chart").startswith("<figure><img")
    True
    """
    data = base64.b64encode(png).decode("ascii")
    caption = f"<figcaption>{text(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{text(alt)}">{caption}</figure>'


def reading(sentence: str) -> str:
    """A plain-words reading of a figure (escaped).

    Examples
    --------
    >>> reading("c0 carries most")
    '<p class="reading">c0 carries most</p>'
    """
    return f'<p class="reading">{text(sentence)}</p>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: inline CSS, a table of contents, one ``<section>`` each.

    Parameters
    ----------
    sections : sequence of (anchor, title, body HTML)

    Examples
    --------
    >>> page("Report", "a database", [("a", "A", "<p>x</p>")]).startswith("<!DOCTYPE html>")
    True
    """
    toc = "".join(f'<li><a href="#{html.escape(anchor)}">{text(heading)}</a></li>'
                  for anchor, heading, _ in sections)
    body = "".join(f'<section id="{html.escape(anchor)}"><h2>{text(heading)}</h2>{content}'
                   "</section>" for anchor, heading, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            # no scripts, styles or images from anywhere but this file
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{text(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{text(title)}</h1><p class=\"subtitle\">{text(subtitle)}</p>"
            f"<nav><ol>{toc}</ol></nav>{body}</body></html>\n")
