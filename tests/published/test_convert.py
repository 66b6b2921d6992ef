"""filterdb convert: same ids, same arrays, same analysis; resumable; refuses what it
cannot keep."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.analysis import analyze
from filterdb.convert import convert
from filterdb.errors import DatabaseError
from filterdb.store import layout
from filterdb.synthetic_published import published_meta, write_published

from .conftest import N_FILTERS, STARTS

SELECTIONS = ({}, {"Task": "Segmentation"}, {"conv_depth_norm": (0.5, 1)},
              {"Visual Category": ["faces", "natural"], "conv_depth_norm": (0, 0.4)})


@pytest.fixture(scope="module")
def converted(v1_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("converted") / "db.h5"
    report = convert(v1_file, path, batch_filters=1000)
    assert (report.added, report.present, report.filters) == (8, 0, N_FILTERS)
    return path


def test_round_trip_keeps_ids_tables_and_arrays(v1_file, converted):
    published, db = filterdb.open(v1_file), filterdb.open(converted)
    assert type(db).__name__ == "FilterDB"
    assert db.filter_count() == N_FILTERS
    assert db.model_filter_starts().tolist() == list(STARTS)
    for column in ("model", "Task", "Visual Category", "producer", "opset", "total_filters",
                   "(1, 1) filters", "(3, 3) filters", "op:Conv", "filter_id_start"):
        assert db.models[column].tolist() == published.models[column].tolist(), column
    for column in ("model_id", "conv_depth", "conv_depth_norm", "filter_id_start",
                   "filter_id_stop", "n_filters"):
        assert db.layers[column].tolist() == published.layers[column].tolist(), column
    assert (db.layers["nan_count"] == 0).all()  # counted while converting
    for conditions in SELECTIONS:
        a, b = published.select(**conditions), db.select(**conditions)
        np.testing.assert_array_equal(a.filter_ids, b.filter_ids)
        np.testing.assert_array_equal(a.read(), b.read())
    # the published /meta view of the converted database names the same ranges
    meta = db.meta.reset_index()
    assert meta["filter_ids"].tolist() == published.meta.reset_index()["filter_ids"].tolist()


@pytest.mark.parametrize("options", [
    {"by": ["Task", "depth", "Visual Category"], "chunk_rows": 500},
    {"by": ["Task"], "balanced": 250, "seed": 4, "where": {"conv_depth_norm": (0, 0.8)}},
])
def test_analysis_identical_on_both(v1_file, converted, options):
    a, b = analyze(v1_file, **options), analyze(converted, **options)
    assert a.n_filters == b.n_filters
    # balanced: models with 3 conv depths keep 2 (200 filters), the others 250
    assert a.n_filters == (N_FILTERS if "balanced" not in options else 2 * 200 + 6 * 250)
    for field in ("mean", "components", "explained_variance_ratio", "coef_min", "coef_max"):
        np.testing.assert_array_equal(getattr(a.basis, field), getattr(b.basis, field))
    for name, grouping in a.groupings.items():
        other = b.groupings[name]
        assert grouping.labels == other.labels
        np.testing.assert_array_equal(grouping.raw_counts, other.raw_counts)
        pd.testing.assert_frame_equal(grouping.drift, other.drift)
        pd.testing.assert_frame_equal(grouping.counts, other.counts)


def test_task_counts_on_published_analysis(v1_file):
    counts = analyze(v1_file, by=["Task"]).groupings["Task"].counts
    assert counts.to_dict("list") == {
        "group": ["Classification", "GAN-Generator", "Object Detection", "Segmentation"],
        "models": [3, 1, 1, 3], "layers": [14, 6, 4, 12],
        "filters": [1400, 600, 400, 1200]}


def test_dask_mode_on_published_equals_local(v1_file):
    options = {"by": ["Task", "depth"], "chunk_rows": 700}
    local = analyze(v1_file, **options)
    remote = analyze(v1_file, scheduler="local:1", **options)
    np.testing.assert_array_equal(local.basis.components, remote.basis.components)
    for name, grouping in local.groupings.items():
        np.testing.assert_array_equal(grouping.raw_counts, remote.groupings[name].raw_counts)
        pd.testing.assert_frame_equal(grouping.drift, remote.groupings[name].drift)


def test_cli_analyze_gives_the_same_files(v1_file, converted, tmp_path, cli):
    for name, path in (("published", v1_file), ("converted", converted)):
        result = cli("analyze", path, "--by", "Task", "--by", "depth", "-o",
                     tmp_path / name, "--no-figures")
        assert result.returncode == 0, result.stderr
    for table in ("drift_task.csv", "drift_depth.csv", "groups_depth.csv", "pca.json"):
        assert (tmp_path / "published" / table).read_bytes() == \
            (tmp_path / "converted" / table).read_bytes()


def test_stopped_conversion_resumes(v1_file, tmp_path):
    path = tmp_path / "db.h5"
    commits = []

    def stop_after_two(models):
        commits.append(models)
        if len(commits) == 2:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        convert(v1_file, path, batch_filters=700, on_commit=stop_after_two)
    assert commits == [2, 4]
    partial = filterdb.open(path)
    assert partial.models["model"].tolist() == [f"model-{i:04d}" for i in range(4)]
    np.testing.assert_array_equal(partial.select().read(),
                                  filterdb.open(v1_file).select(model=list(
                                      partial.models["model"])).read())
    report = convert(v1_file, path, batch_filters=700, on_commit=commits.append)
    assert (report.added, report.present) == (4, 4)
    assert commits == [2, 4, 6, 8]
    np.testing.assert_array_equal(filterdb.open(path).select().read(),
                                  filterdb.open(v1_file).select().read())
    assert len(list(layout.shards_dir(path).glob("*.h5"))) == 8


def test_killed_conversion_resumes_from_the_cli(v1_file, tmp_path, cli):
    path = tmp_path / "db.h5"
    script = textwrap.dedent(f"""
        import os, signal
        from filterdb.convert import convert
        def kill(models):
            if models >= 4:
                os.kill(os.getpid(), signal.SIGKILL)
        convert({str(v1_file)!r}, {str(path)!r}, batch_filters=700, on_commit=kill)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -9
    assert len(filterdb.open(path).models) == 4
    result = cli("convert", v1_file, "-o", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{path}: 4 models converted, 4 already present; 3,600 filters, "
                             f"ids as in {v1_file}\n")
    np.testing.assert_array_equal(filterdb.open(path).select().read(),
                                  filterdb.open(v1_file).select().read())


def _published(tmp_path, edit, name="bad.h5"):
    meta = published_meta(1000, 4).reset_index()
    meta = edit(meta)
    path = tmp_path / name
    write_published(path, meta.set_index(["model_id", "conv_depth", "conv_depth_norm"]), 1000)
    return path


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m.drop(index=1), "rows 55:109 of /filters belong to no /meta row"),
    (lambda m: m.drop(index=0), "rows 0:54 of /filters belong to no /meta row"),
    (lambda m: m.drop(index=17), "rows 935:999 of /filters belong to no /meta row"),
    (lambda m: m.assign(filter_ids=m["filter_ids"].replace(
        {"110:164": "165:219", "165:219": "110:164"})),
     "the ranges of model_id 0 are interleaved with another model's"),
])
def test_ids_that_cannot_be_kept_are_refused(tmp_path, cli, edit, reason):
    path = _published(tmp_path, edit)
    filterdb.open(path)  # readable in place
    with pytest.raises(DatabaseError) as error:
        convert(path, tmp_path / "db.h5")
    assert str(error.value) == f"{path}: cannot keep the published filter ids: {reason}"
    result = cli("convert", path, "-o", tmp_path / "db.h5")
    assert result.returncode == 2
    assert result.stderr == f"filterdb: error: {error.value}\n"
    assert not (tmp_path / "db.h5").exists()


def test_a_filterdb_database_is_not_converted(converted, tmp_path):
    with pytest.raises(DatabaseError, match=r"db.h5: not a published CNN Filter DB file \(it "
                       r"has a schema attribute \(filterdb\)\)$"):
        convert(converted, tmp_path / "again.h5")


def test_output_of_another_file_is_refused(v1_file, tmp_path):
    path = tmp_path / "db.h5"
    other = _published(tmp_path, lambda m: m.assign(model="other-" + m["model"]), "other.h5")
    convert(other, path)
    with pytest.raises(DatabaseError, match=r"db.h5: holds other models than the first 4 of "):
        convert(v1_file, path)
