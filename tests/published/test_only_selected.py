"""build --only-selected: the index's Selection column decides what is built."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.errors import IndexFileError
from filterdb.store import layout


@pytest.fixture
def selected_index(small_zoo, tmp_path):
    """The small zoo's index with Selection 1, 0, 1, 1, 0, 0 (as the published pipeline)."""
    index = pd.read_csv(small_zoo, dtype=str, keep_default_na=False)
    index["Selection"] = ["1", "0", "1", "1", "0", "0"]
    path = tmp_path / "index.csv"
    index.to_csv(path, index=False)
    return path, index["model"].tolist()


def test_only_selected_rows_are_built(small_zoo, selected_index, tmp_path):
    path, names = selected_index
    report = build(small_zoo.parent, tmp_path / "db.h5", index=path,
                   options=BuildOptions(only_selected=True))
    assert (report.count("added"), report.count("not selected"), report.count("failed"),
            report.planned) == (3, 3, 0, 3)
    assert sorted(o.model for o in report.outcomes if o.status == "not selected") == \
        sorted([names[1], names[4], names[5]])
    models = filterdb.open(tmp_path / "db.h5").models
    assert sorted(models["model"]) == sorted([names[0], names[2], names[3]])
    assert models["Selection"].tolist() == ["1", "1", "1"]
    saved = json.loads(layout.report_path(tmp_path / "db.h5").read_text())
    assert saved["summary"] == {"added": 3, "present": 0, "skipped": 0, "failed": 0,
                                "not selected": 3}


def test_without_the_option_every_row_is_built(small_zoo, selected_index, tmp_path):
    path, _ = selected_index
    report = build(small_zoo.parent, tmp_path / "db.h5", index=path)
    assert (report.count("added"), report.count("not selected")) == (6, 0)


def test_cli_summary_and_strict(small_zoo, selected_index, tmp_path, cli):
    path, _ = selected_index
    result = cli("build", small_zoo.parent, "--index", path, "-o", tmp_path / "db.h5",
                 "--only-selected", "--strict", "--no-quality")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(
        f"{tmp_path / 'db.h5'}: 3 added, 0 already present, 0 skipped, 0 failed, "
        "3 not selected; ")
    # not failures: counted in the summary (and listed in the JSON report), not logged
    assert result.stderr.count("added: ") == 3 and "selected" not in result.stderr


def test_only_selected_needs_the_column(small_zoo, tmp_path):
    with pytest.raises(IndexFileError, match=r"index.csv: --only-selected needs a meta index "
                       r"with a Selection column$"):
        build(small_zoo.parent, tmp_path / "db.h5", index=small_zoo,
              options=BuildOptions(only_selected=True))
    assert not (tmp_path / "db.h5").exists()


def test_selection_spellings():
    from filterdb.index import is_selected

    for value in ("1", "1.0", "true", "True", "yes", "Yes", "y", " 1 "):
        assert is_selected({"Selection": value}), value
    for value in ("0", "", "no", "false", "2", "maybe"):
        assert not is_selected({"Selection": value}), value
    assert not is_selected({})
