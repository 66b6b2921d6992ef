"""A meta index whose text cells are all formula-like: the database stores them
verbatim, and every export a spreadsheet may open (Markdown datasheet, HTML report
tables, CSVs, the metadata-only release file's datasheet) shows them inert."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from filterdb.cli import main
from filterdb.store.export import MetaOnlyDB
from filterdb.synthetic import generate_zoo

from .formula import (
    FORMULA_CELLS,
    assert_inert_cells,
    assert_inert_csv,
    html_cells,
    markdown_cells,
)

#: Index columns given formula-like text (all of the generated index's text columns
#: but Framework and Precision, which a build checks against the files).
TEXT_COLUMNS = ("Name", "Task", "Visual Category", "Training-Dataset", "Pretraining-Dataset",
                "Conv Weight Initializer", "Optimizer", "Paper", "Accessible", "Dataset URL")
RENAMED = ("plain-000", "=1+2")  # a model whose file name is a formula too
N = 6


def _formula_index(zoo: Path) -> dict[str, dict[str, str]]:
    """Rewrite the generated index: model i, column j gets FORMULA_CELLS[(i + j) % 5];
    returns the rows by model name."""
    index = zoo / "index.csv"
    rows = list(csv.DictReader(index.open()))
    (zoo / f"{RENAMED[0]}.onnx").rename(zoo / f"{RENAMED[1]}.onnx")
    for i, row in enumerate(rows):
        if row["model"] == RENAMED[0]:
            row["model"] = RENAMED[1]
        row.update({c: FORMULA_CELLS[(i + j) % len(FORMULA_CELLS)]
                    for j, c in enumerate(TEXT_COLUMNS)})
    with index.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {row["model"]: row for row in rows}


@pytest.fixture(scope="module")
def formula_db(tmp_path_factory):
    """(database, zoo, index rows by model) built from the formula-cell index."""
    root = tmp_path_factory.mktemp("formula")
    zoo = root / "zoo"
    index = generate_zoo(zoo, n_models=N, widths=(4, 8), depth=2, seed=3)
    rows = _formula_index(zoo)
    db = root / "db.h5"
    assert main(["build", str(zoo), "--index", str(index), "-o", str(db)]) == 0
    return db, zoo, rows


def _expected_tasks(rows) -> dict[str, int]:
    tasks = pd.Series([row["Task"] for row in rows.values()]).value_counts()
    return {task: int(n) for task, n in tasks.items()}


def test_hdf5_tables_store_the_cells_verbatim(formula_db, tmp_path):
    db, _, rows = formula_db
    out = tmp_path / "meta.h5"
    assert main(["export-meta", str(db), "-o", str(out)]) == 0
    for source in (db, out):
        models = pd.read_hdf(source, "models").set_index("model")
        assert sorted(models.index) == sorted(rows)
        for model, row in rows.items():
            assert models.loc[model, list(TEXT_COLUMNS)].tolist() == [
                row[c] for c in TEXT_COLUMNS]
        meta = pd.read_hdf(source, "meta")
        assert sorted(meta["Task"].unique()) == sorted(_expected_tasks(rows))


def _escaped(cell: str) -> str:
    """How the Markdown datasheet writes a neutralised text cell."""
    return "'" + cell.replace("|", "\\|")


def test_datasheet_tables_are_inert(formula_db, tmp_path):
    db, _, rows = formula_db
    sheet = tmp_path / "DATASHEET.md"
    assert main(["datasheet", str(db), "-o", str(sheet)]) == 0
    text = sheet.read_text()
    cells = assert_inert_cells(markdown_cells(text))
    section = text.split("### Models per Task\n")[1].split("###")[0]
    table = markdown_cells(section)
    assert dict(zip(table[2::2], table[3::2], strict=True)) == {
        _escaped(task): str(n) for task, n in _expected_tasks(rows).items()}
    assert _escaped(FORMULA_CELLS[0]) in cells
    # The datasheet inside the metadata-only release file is the same text.
    out = tmp_path / "meta.h5"
    assert main(["export-meta", str(db), "-o", str(out)]) == 0
    assert_inert_cells(markdown_cells(MetaOnlyDB(out).datasheet))


def test_report_tables_are_inert(formula_db, tmp_path):
    db, _, rows = formula_db
    page = tmp_path / "report.html"
    assert main(["report", str(db), "-o", str(page), "--no-analysis"]) == 0
    cells = assert_inert_cells(html_cells(page.read_text()))
    assert "'" + RENAMED[1] in cells
    assert {"'" + task for task in _expected_tasks(rows)} <= set(cells)


def test_csv_exports_are_inert(formula_db, tmp_path, capsys):
    db, zoo, rows = formula_db
    capsys.readouterr()
    assert main(["layers", str(db), "--csv"]) == 0
    layers = {cell for row in assert_inert_csv(capsys.readouterr().out) for cell in row}
    assert "'" + RENAMED[1] in layers
    assert main(["check", "--format", "csv", str(zoo / f"{RENAMED[1]}.onnx")]) == 0
    assert_inert_csv(capsys.readouterr().out)
    out = tmp_path / "analysis"
    assert main(["analyze", str(db), "-o", str(out), "--no-figures", "--by", "Task"]) == 0
    exported = sorted(out.glob("*.csv"))
    assert exported
    cells = {cell for path in exported for row in assert_inert_csv(path) for cell in row}
    assert {"'" + task for task in _expected_tasks(rows)} <= cells
