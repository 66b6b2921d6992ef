"""Formula-like text for CSV-injection tests, and the check that an export is inert.

Reusable by any test of a CSV export (datasheets, reports): put
:data:`FORMULA_CELLS` into index fields, export, then :func:`assert_inert_csv`.
"""

from __future__ import annotations

import csv
import io
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
