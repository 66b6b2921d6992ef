"""The datasheet (facts computed, prose provided, the rest open) and the metadata file."""

from __future__ import annotations

import pandas as pd
import pytest

import filterdb
from filterdb.datasheet import cell, compute, render_markdown
from filterdb.errors import DatabaseError
from filterdb.store.export import MetaOnlyDB, export_meta


def test_cells_are_inert():
    assert cell('=HYPERLINK("x")|evil') == "'=HYPERLINK(\"x\")\\|evil"
    assert cell("a\r\nb |c") == "a b \\|c"
    assert [cell(t) for t in ("+1", "-x", "@me", "ok")] == ["'+1", "'-x", "'@me", "ok"]
    assert cell(-3) == "-3" and cell(1234) == "1,234"


def test_compute_answers_from_the_database(publish_build):
    data = compute(filterdb.open(publish_build[0]))
    facts = data["facts"]
    assert data["title"] == "Test filters"
    assert (facts["models"], facts["layers"], facts["filters"]) == (4, 17, {"3x3": 632})
    assert facts["filters_all_shapes"] == {"(3, 3)": 632, "(1, 1)": 35, "(1, 3)": 24}
    assert facts["groupings"]["Task"] == {"Classification": 2, '=HYPERLINK("x")|evil': 1,
                                          "Segmentation": 1}
    assert facts["groupings"]["format"] == {"onnx": 4}
    assert (facts["layers_assessed"], facts["degenerated_layers"]) == (17, 8)
    assert facts["untrained_models"] == ["net-onnx"]
    assert facts["redundancy"][0]["duplicate_filters"] == 0
    answers = {row["key"]: row for rows in data["sections"].values() for row in rows}
    assert answers["purpose"]["answer"] == "To test the datasheet."
    assert answers["purpose"]["source"] == "provided"
    assert answers["creators"]["answer"] == "Ada Lovelace; Alan Turing"
    assert answers["instance_count"]["answer"].startswith(
        "632 filters of shape 3x3, from 4 models and 17 convolution layers")
    assert answers["funding"]["source"] == "open" and "funding" in data["open"]
    assert answers["timeframe"]["source"] == "open"
    assert answers["errors"]["answer"] == (
        "0 group(s) of models with identical conv weights; 3x3: 0 of 632 filters duplicate an "
        "earlier filter exactly (0 all-zero); 0 layers (0 groups) are identical between "
        "models; 8 of 17 assessed layers (47.1%) are degenerated (sparse, low-diversity, "
        "random-like or non-finite); 1 model(s) look untrained: net-onnx.")
    assert answers["mechanisms"]["answer"] == (
        "No model was verified to run: the database was built without --verify-run.")
    assert answers["mechanisms"]["source"] == "computed"
    assert len(data["open"]) == 24  # 41 questions, 16 computed, 1 provided


def test_markdown_has_sections_versions_and_inert_tables(publish_build, cli, tmp_path):
    out = tmp_path / "DATASHEET.md"
    done = cli("datasheet", publish_build[0], "-o", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for section in ("Motivation", "Composition", "Collection process",
                    "Preprocessing/cleaning/labeling", "Uses", "Distribution",
                    "Maintenance", "Versions"):
        assert f"\n## {section}\n" in text
    assert "| '=HYPERLINK(\"x\")\\|evil | 1 |" in text
    assert "No release recorded yet." in text
    assert "*Open: no answer provided.*" in text
    answers = tmp_path / "answers.yaml"
    answers.write_text("answers:\n  funding: The test budget.\n")
    with_answers = render_markdown(compute(filterdb.open(publish_build[0]),
                                           filterdb.store.dataset.read_publication(answers)[1]))
    assert "The test budget." in with_answers and "To test the datasheet." not in with_answers


def test_export_meta_opens_with_the_table_interface(publish_build, cli, tmp_path):
    db = filterdb.open(publish_build[0])
    out = tmp_path / "meta.h5"
    done = cli("export-meta", publish_build[0], "-o", out)
    assert done.returncode == 0, done.stderr
    meta = filterdb.open(out)
    assert isinstance(meta, MetaOnlyDB)
    pd.testing.assert_frame_equal(meta.models, db.models)
    pd.testing.assert_frame_equal(meta.layers, db.layers)
    pd.testing.assert_frame_equal(pd.read_hdf(out, "meta"), db.meta)
    assert meta.filter_count((3, 3)) == 632 and meta.shapes == ((3, 3),)
    assert meta.dataset_info == db.dataset_info
    assert meta.datasheet == render_markdown(compute(db))
    with pytest.raises(DatabaseError, match="holds no filters; open the full database"):
        meta.select(Task="Classification")
    info = cli("info", out)
    assert info.returncode == 0 and "models:    4   layers: 17" in info.stdout
    sheet = cli("datasheet", out)
    assert sheet.returncode == 0 and sheet.stdout == meta.datasheet
    with pytest.raises(DatabaseError, match="name it .h5"):
        export_meta(db, tmp_path / "meta.parquet")
