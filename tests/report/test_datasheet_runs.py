"""The report's "Models verified to run" and "Datasheet" sections: their tables equal
``summarize_runs`` and ``datasheet.compute`` of the same database."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd

import filterdb
from filterdb.datasheet import compute, licence_text
from filterdb.report import render
from filterdb.report.sections import datasheet, verification
from filterdb.runs import NOT_VERIFIED

from .conftest import Tables
from .test_report import text_of


def section_text(document: str, anchor: str) -> str:
    body = re.search(rf'<section id="{anchor}">(.*?)</section>', document, re.S)[1]
    return re.sub(r"\s+", " ", text_of(body)).strip()


def counts(rows: list[list[str]]) -> dict[str, int]:
    """A two-column table (header first) as label -> integer."""
    return {label: int(n.replace(",", "")) for label, n in rows[1:]}


def test_runs_of_a_database_built_without_verify_run(small_html, small_tables):
    assert ("No model was verified to run: the database was built without --verify-run."
            in section_text(small_html, "runs"))
    assert counts(small_tables["runs-counts"]) == {"yes": 0, "no": 0, "not run": 6}
    assert counts(small_tables["runs-not-run"]) == {NOT_VERIFIED: 6}
    assert "runs-failed" not in small_tables and "runs-non-finite" not in small_tables


def test_runs_section_lists_failures_and_non_finite_outputs(small_data):
    models = pd.DataFrame({
        "model": ["a", "b", "c", "d", "e"], "runs": ["yes", "no", "not run", "yes", "no"],
        "run_reason": ["", "crashed", "no graph", "", "timed out"],
        "output_shapes": ["1x4", "", "", "1x2;1x3", ""],
        "outputs_finite": ["yes", "", "", "no", ""]})
    document = render(replace(small_data, models=models), [verification])
    tables = Tables(document).tables
    assert section_text(document, "runs").startswith(
        "Models verified to run 2 of 5 models were verified to run; 2 do not: b (crashed), "
        "e (timed out); 1 was not run: no graph (1); 1 of those that run output NaN or Inf.")
    assert counts(tables["runs-counts"]) == {"yes": 2, "no": 2, "not run": 1}
    assert tables["runs-failed"] == [["model", "reason"], ["b", "crashed"], ["e", "timed out"]]
    assert counts(tables["runs-not-run"]) == {"no graph": 1}
    assert tables["runs-non-finite"] == [["model", "output shapes"], ["d", "1x2;1x3"]]


def test_runs_not_recorded(small_data):
    document = render(replace(small_data, models=small_data.models[["model"]]), [verification])
    assert section_text(document, "runs") == (
        "Models verified to run Whether the models run is not recorded in this file (its "
        "models table has no run columns).")
    assert Tables(document).tables == {}


def test_datasheet_section_equals_compute(small_db, small_html, small_tables):
    db = filterdb.open(small_db)
    sheet = compute(db)
    facts = sheet["facts"]
    assert counts(small_tables["datasheet-filters"]) == {"3x3": db.filter_count((3, 3))}
    assert counts(small_tables["datasheet-models-task"]) == \
        db.models["Task"].value_counts().to_dict()
    assert counts(small_tables["datasheet-empty-fields"]) == facts["empty_fields"]
    assert small_tables["datasheet-redundancy"][1:] == [
        [r["shape"], *(f"{r[k]:,}" for k in ("filters", "duplicate_filters", "zero_filters",
                                             "shared_layers", "shared_layer_groups"))]
        for r in facts["redundancy"]]
    assert facts["redundancy"][0]["filters"] == db.filter_count((3, 3))
    questions = small_tables["datasheet-questions"][1:]
    assert len(questions) == sum(len(rows) for rows in sheet["sections"].values()) == 41
    assert [q for _, q, answer, source in questions if source == "open"] == [
        row["question"] for rows in sheet["sections"].values() for row in rows
        if row["key"] in sheet["open"]]
    assert all(answer == "open" for _, _, answer, source in questions if source == "open")
    text = section_text(small_html, "datasheet")
    answered = 41 - len(sheet["open"])
    assert (f"{answered} of 41 datasheet questions are answered ({answered} computed from the "
            f"database, 0 from provided prose); {len(sheet['open'])} are open.") in text
    assert "Version 0.1.0-dev (pre-release: changed since the last release)." in text
    assert "No release recorded yet." in text
    assert licence_text(db.dataset_info["license"]) in text
    assert f"0 of {facts['layers_assessed']} assessed layers" not in text  # some degenerate
    assert (f"{facts['degenerated_layers']} of {facts['layers_assessed']} assessed layers"
            in text)


def test_datasheet_section_says_why_it_is_missing(small_data):
    data = replace(small_data, datasheet=None,
                   datasheet_note="the datasheet could not be computed: x.h5: gone")
    assert section_text(render(data, [datasheet]), "datasheet") == (
        "Datasheet The datasheet could not be computed: x.h5: gone.")


def test_no_analysis_counts_no_duplicates(small_db, tmp_path):
    from filterdb.report import collect

    data = collect(small_db, analysis=False)
    assert "redundancy" not in data.datasheet["facts"]
    assert section_text(render(data, [datasheet]), "datasheet").count(
        "Duplicate filters: not counted: --no-analysis reads no filter.") == 1
    capped = collect(small_db, by=["Task"], max_filters=10)
    stored = filterdb.open(small_db).filter_count((3, 3))
    assert capped.datasheet_note == (
        f"not counted: the database holds {stored:,} filters, more than --max-filters 10 "
        "(filterdb datasheet counts them)")
    assert "redundancy" not in capped.datasheet["facts"]
