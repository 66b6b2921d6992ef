"""Formula-like text for CSV-injection tests, and the check that an export is inert.

Reusable by any test of an export: put :data:`FORMULA_CELLS` into index fields,
export, then :func:`assert_inert_csv` (CSV), or :func:`assert_inert_cells` over
:func:`markdown_cells` (Markdown tables) or :func:`html_cells` (HTML tables).
"""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

from filterdb.csvsafe import FORMULA_START

#: Cells a spreadsheet would evaluate if exported as they are.
FORMULA_CELLS = ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1,1)",
                 '=HYPERLINK("http://x.invalid","y")')


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def assert_inert_csv(source: str | Path) -> list[list[str]]:
    """Every cell of the CSV (a path or its text) is safe to open in a spreadsheet:
    none but plain numbers starts with a formula character. Returns the rows."""
    text = source.read_text() if isinstance(source, Path) else source
    rows = list(csv.reader(io.StringIO(text)))
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_START) or _is_number(cell), (
                f"formula-like cell {cell!r}")
    return rows


def assert_inert_cells(cells) -> list[str]:
    """Every cell is inert, as in :func:`assert_inert_csv`; returns the cells."""
    cells = list(cells)
    for cell in cells:
        assert not cell.startswith(FORMULA_START) or _is_number(cell), (
            f"formula-like cell {cell!r}")
    return cells


def markdown_cells(text: str) -> list[str]:
    """The cells of every Markdown table row in ``text`` (separator rows left out),
    split at unescaped ``|`` and stripped."""
    cells = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(-+\|)+", line):
            cells += [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    return cells


def html_cells(document: str) -> list[str]:
    """The text of every ``<td>``/``<th>`` of an HTML document, unescaped: what a
    spreadsheet receives when a table is copied into it."""
    return [html.unescape(re.sub(r"<[^>]*>", "", cell))
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", document, flags=re.S)]
