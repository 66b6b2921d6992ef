"""CSV exports a spreadsheet cannot execute: formula-like text cells are escaped.

Index fields come from hand-kept CSV files and model names from file names, so a
cell such as ``=cmd|' /C calc'!A0`` can reach an export. Spreadsheets run cells
that start with ``=``, ``+``, ``-``, ``@``, tab or carriage return; such text cells
get a leading apostrophe (the OWASP CSV-injection advice). The database itself
stores the text verbatim.
"""

from __future__ import annotations

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert(value):
    """``value`` with a leading ``'`` if it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _inert_index(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex):
        return index.set_levels([level.map(inert) for level in index.levels])
    return index.map(inert)


def to_csv(frame: pd.DataFrame, target=None, index: bool = True):
    """``frame.to_csv(target, index=index)`` with every text cell, index label and
    column name made inert; returns the text when ``target`` is None."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(inert)
    safe.columns = _inert_index(safe.columns)
    if index:
        safe.index = _inert_index(safe.index)
    return safe.to_csv(target, index=index)
