"""``datasheet``, ``export-meta``, ``info`` and ``report`` on a published file and on the
metadata-only file exported from it: exact counts, nothing the file lacks invented."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import filterdb
from filterdb.datasheet import compute
from filterdb.store.export import MetaOnlyDB
from filterdb.store.published import PublishedDB

from ..report.conftest import Tables
from .conftest import N_FILTERS

#: Models per Task after the Segmentation normalisation (see conftest's Tasks).
TASKS = {"Classification": 3, "Segmentation": 3, "GAN-Generator": 1, "Object Detection": 1}


@pytest.fixture(scope="module")
def exported(v1_file, cli, tmp_path_factory):
    """``filterdb export-meta v1.h5 -o meta.h5``: the metadata-only file."""
    out = tmp_path_factory.mktemp("exported") / "meta.h5"
    result = cli("export-meta", v1_file, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: {out.stat().st_size:,} bytes\n"
    return out


def test_datasheet_of_a_published_file(v1_file, cli):
    result = cli("datasheet", v1_file)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert (f"{N_FILTERS:,} filters of shape 3x3, from 8 models and 36 convolution layers"
            in text)
    task = text.index("### Models per Task")
    assert text[task:].split("\n\n")[1].splitlines()[2:] == [
        f"| {name} | {n} |" for name, n in TASKS.items()]
    assert "No version is recorded in this file." in text
    # what the file lacks stays open or says so, never a default or a zero
    for question in ("Under which copyright or IP licence and terms of use?",
                     "What mechanisms or procedures were used to collect the data?"):
        assert f"**{question}** *(open)*" in text
    assert "identical models cannot be told (the models table has no conv weights hash)" in text
    assert "layer quality was not assessed" in text
    assert "look untrained" not in text and "CC BY-SA" not in text
    assert f"3x3: 0 of {N_FILTERS:,} filters duplicate an earlier filter exactly" in text


def test_datasheet_facts_of_both_published_versions(v0_file, v1_file):
    facts = [compute(filterdb.open(path))["facts"] for path in (v0_file, v1_file)]
    for fact in facts:
        assert fact["models"] == 8 and fact["layers"] == 36
        assert fact["filters"] == {"3x3": N_FILTERS}
        assert fact["groupings"]["Task"] == TASKS
        assert "runs" not in fact and "untrained_models" not in fact
    assert facts[0]["groupings"]["Visual Category"] == facts[1]["groupings"]["Visual Category"]


def test_export_meta_round_trip(v1_file, exported):
    published, meta = filterdb.open(v1_file), filterdb.open(exported)
    assert isinstance(published, PublishedDB) and isinstance(meta, MetaOnlyDB)
    pd.testing.assert_frame_equal(meta.models, published.models)
    pd.testing.assert_frame_equal(meta.layers, published.layers)
    pd.testing.assert_frame_equal(meta.meta, published.meta)
    assert meta.filter_count((3, 3)) == N_FILTERS
    assert meta.dataset_info == published.dataset_info


def test_info_and_datasheet_of_the_exported_file(v1_file, exported, cli):
    info = cli("info", exported)
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[1] == f"layout:    metadata only (no filters), exported from {v1_file.name}"
    assert "runs:      not recorded (the models table has no run columns)" in lines
    # the export describes the filters, it does not hold them
    assert "filters described (not in this file):" in lines
    assert "      3x3            3,600" in lines
    assert not any("/filters" in line for line in lines)
    sheets = [cli("datasheet", path) for path in (v1_file, exported)]
    assert all(s.returncode == 0 for s in sheets), [s.stderr for s in sheets]
    # the same datasheet (files and duplicate counts carried over), but for its title
    first, *rest = sheets[0].stdout.splitlines()
    assert first == f"# Datasheet: {v1_file.name}"
    assert sheets[1].stdout.splitlines()[1:] == rest
    assert filterdb.open(exported).datasheet == sheets[0].stdout


def test_report_of_a_published_file(v1_file, cli, tmp_path):
    path = tmp_path / "report.html"
    result = cli("report", v1_file, "-o", path, "--group-by", "Task")
    assert result.returncode == 0, result.stderr
    document = path.read_text()
    assert re.findall(r'<section id="([^"]+)"', document) == [
        "composition", "runs", "quality", "eigen-images", "ridges", "drift", "datasheet"]
    assert ("Whether the models run is not recorded in this file (its models table has no "
            "run columns).") in document
    tables = Tables(document).tables
    assert "runs-counts" not in tables
    assert {r[0]: int(r[1]) for r in tables["datasheet-models-task"][1:]} == TASKS
    assert tables["datasheet-filters"][1:] == [["3x3", f"{N_FILTERS:,}"]]
    assert tables["datasheet-redundancy"][1] == ["3x3", f"{N_FILTERS:,}", "0", "0", "0", "0"]
    assert "No licence is recorded in this file; the licence question is open." in document


def test_report_of_the_exported_file(exported, cli, tmp_path):
    """No filters to analyse: tables only, the datasheet with the carried-over counts."""
    path = tmp_path / "report.html"
    result = cli("report", exported, "-o", path)
    assert result.returncode == 0, result.stderr
    document = path.read_text()
    assert re.findall(r'<section id="([^"]+)"', document) == [
        "composition", "runs", "quality", "datasheet"]
    tables = Tables(document).tables
    assert {r[0]: int(r[1]) for r in tables["datasheet-models-task"][1:]} == TASKS
    assert tables["datasheet-redundancy"][1] == ["3x3", f"{N_FILTERS:,}", "0", "0", "0", "0"]
