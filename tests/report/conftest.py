"""The report of the small database, written once by the CLI, and its parsed tables."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from filterdb.report import collect


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as a list of rows (cell texts, header first)."""

    def __init__(self, document: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table = self._row = self._cell = None
        self.feed(document)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="session")
def small_report(small_db, tmp_path_factory, cli) -> tuple[Path, str]:
    """``filterdb report small_db -o .../report.html``: (path, the run's stderr)."""
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    result = cli("report", small_db, "-o", path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(path)
    return path, result.stderr


@pytest.fixture(scope="session")
def small_html(small_report) -> str:
    return small_report[0].read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def small_tables(small_html) -> dict[str, list[list[str]]]:
    return Tables(small_html).tables


@pytest.fixture(scope="session")
def small_data(small_db):
    """What the report of the small database shows (same defaults as the CLI)."""
    return collect(small_db)
