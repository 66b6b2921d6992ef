"""The database as its users see it: the published h5py/pandas recipe, the filterdb API,
kernel shapes, determinism, appending, crash safety and the writer lock."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.errors import DatabaseError
from filterdb.store import layout
from filterdb.store.writer import DatabaseWriter
from filterdb.synthetic import generate_zoo, make_cnn

from ..reference import expand_filter_ids, reference_model

# Per-model 3x3 filter counts of the small zoo (generate_zoo seed=1), in model_id order.
SMALL_ZOO_3X3 = {"depthwise-002": 13, "depthwise-005": 23, "plain-000": 108,
                 "plain-003": 351, "residual-001": 351, "residual-004": 63}


def _recipe(db) -> tuple[np.ndarray, pd.DataFrame]:
    """The published way to read the database: h5py for /filters, pandas for /meta."""
    with h5py.File(db, "r") as handle:
        filters = handle["filters"][...].reshape(-1, 9)
    return filters, pd.read_hdf(db, "meta")


def _index_rows(index: Path) -> dict[str, dict[str, str]]:
    with open(index, newline="") as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def _reference_3x3(zoo: Path, names) -> np.ndarray:
    return np.concatenate([reference_model(zoo / f"{name}.onnx").filters()
                           for name in names]).reshape(-1, 9)


# ---------------------------------------------------------------------------
# the published recipe

def test_recipe_filters_are_all_3x3_filters_in_model_order(small_db, small_zoo):
    filters, _ = _recipe(small_db)
    names = sorted(_index_rows(small_zoo))  # models are committed in name order
    assert names == list(SMALL_ZOO_3X3)
    expected = _reference_3x3(small_zoo.parent, names)
    assert filters.dtype == np.float32
    assert filters.shape == (sum(SMALL_ZOO_3X3.values()), 9) == (909, 9)
    np.testing.assert_array_equal(filters, expected)


def test_recipe_meta_index_and_columns(small_db, small_zoo):
    _, meta = _recipe(small_db)
    assert list(meta.index.names) == ["model_id", "conv_depth", "conv_depth_norm"]
    published = ["model", "producer", "op_set", "depth", "Name", "Paper",
                 "Pretraining-Dataset", "Training-Dataset", "Visual Category", "Task",
                 "Accessible", "Dataset URL", "filter_ids", "total_filters",
                 "3x3_filter_share", "(3, 3) filters", "(1, 1) filters", "Conv", "Relu",
                 "Gemm", "GlobalAveragePool", "Flatten", "Add"]
    missing = [c for c in published if c not in meta.columns]
    assert not missing
    assert not [c for c in meta.columns if c.startswith("op:")]

    rows = _index_rows(small_zoo)
    zoo = small_zoo.parent
    per_model = meta.groupby(level="model_id").first()
    assert list(per_model["model"]) == list(SMALL_ZOO_3X3)
    for model_id, row in per_model.iterrows():
        ref = reference_model(zoo / f"{row['model']}.onnx")
        index_row = rows[row["model"]]
        for column in ("Name", "Task", "Visual Category", "Training-Dataset", "Accessible"):
            assert row[column] == index_row[column], (model_id, column)
        assert row["producer"] == "filterdb-synthetic"
        assert row["op_set"] == 17
        assert row["depth"] == ref.total_depth
        assert row["(3, 3) filters"] == ref.count((3, 3)) == SMALL_ZOO_3X3[row["model"]]
        assert row["(1, 1) filters"] == ref.count((1, 1))
        total = ref.count((3, 3)) + ref.count((1, 1))
        assert row["total_filters"] == total
        assert row["3x3_filter_share"] == pytest.approx(ref.count((3, 3)) / total)
        for op, n in ref.op_counts.items():
            assert row[op] == n, (row["model"], op)
        # one meta row per conv depth that holds 3x3 filters
        depths = {layer.conv_depth for layer in ref.layers if layer.kernel == (3, 3)}
        assert set(meta.loc[model_id].index.get_level_values("conv_depth")) == depths


def test_filter_ids_cover_every_row_once_and_equal_the_weights(small_db, small_zoo):
    filters, meta = _recipe(small_db)
    zoo = small_zoo.parent
    seen = []
    for (_, conv_depth, conv_depth_norm), row in meta.iterrows():
        ids = expand_filter_ids(row["filter_ids"])
        seen.extend(ids)
        ref = reference_model(zoo / f"{row['model']}.onnx")
        levels = max(layer.conv_depth for layer in ref.layers)
        assert conv_depth_norm == pytest.approx(conv_depth / levels)
        expected = ref.filters((3, 3), conv_depth=conv_depth).reshape(-1, 9)
        assert len(expected) == len(ids) > 0
        np.testing.assert_array_equal(filters[ids.start:ids.stop], expected)
    assert sorted(seen) == list(range(len(filters)))


def test_recipe_from_another_working_directory(small_db, tmp_path, monkeypatch):
    expected_filters, expected_meta = _recipe(small_db)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    filters, meta = _recipe(small_db)
    np.testing.assert_array_equal(filters, expected_filters)
    pd.testing.assert_frame_equal(meta, expected_meta)
    assert len(filterdb.open(small_db).select().read()) == 909


def test_recipe_after_copying_db_and_shards(small_db, tmp_path, monkeypatch):
    expected_filters, expected_meta = _recipe(small_db)
    shards = small_db.name + ".shards"
    with h5py.File(small_db, "r") as handle:
        sources = {source.file_name for source in handle["filters"].virtual_sources()}
    assert len(sources) == 6
    assert all(name.startswith(shards + "/") for name in sources)  # relative, not absolute
    # copy to a first folder, copy that on, then delete the first copy: the second
    # copy can only be reading its own shards
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, origin in ((first, small_db.parent), (second, first)):
        folder.mkdir()
        shutil.copy2(origin / small_db.name, folder / small_db.name)
        shutil.copytree(origin / shards, folder / shards)
    shutil.rmtree(first)
    monkeypatch.chdir(tmp_path)
    filters, meta = _recipe(second / small_db.name)
    assert not np.isnan(filters).any()  # a shard not found reads as the NaN fill value
    np.testing.assert_array_equal(filters, expected_filters)
    pd.testing.assert_frame_equal(meta, expected_meta)
    np.testing.assert_array_equal(
        filterdb.open(second / small_db.name).select().read().reshape(-1, 9), expected_filters)


# ---------------------------------------------------------------------------
# filterdb.open

def test_open_tables(small_db, small_zoo):
    db = filterdb.open(small_db)
    refs = {name: reference_model(small_zoo.parent / f"{name}.onnx") for name in SMALL_ZOO_3X3}
    assert len(db.models) == 6
    assert list(db.models["model_id"]) == list(range(6))
    assert list(db.models["model"]) == list(SMALL_ZOO_3X3)
    assert len(db.layers) == sum(len(ref.layers) for ref in refs.values()) == 22
    assert db.filter_count() == 909
    for model_id, name in enumerate(SMALL_ZOO_3X3):
        layers = db.layers[db.layers["model_id"] == model_id]
        ref = refs[name]
        assert list(layers["name"]) == [layer.name for layer in ref.layers]
        assert list(layers["conv_depth"]) == [layer.conv_depth for layer in ref.layers]
        top = max(layer.conv_depth for layer in ref.layers)
        np.testing.assert_allclose(layers["conv_depth_norm"],
                                   [layer.conv_depth / top for layer in ref.layers])
        assert list(layers["n_filters"]) == [int(np.prod(layer.weight.shape[:2]))
                                             for layer in ref.layers]
        assert list(layers["depthwise"]) == [name.startswith("depthwise") and
                                             layer.name.startswith("dw")
                                             for layer in ref.layers]
        # unstored shapes (1x1 here) have no ids
        ones = layers[layers["kh"] == 1]
        assert (ones["filter_id_start"] == -1).all() and (ones["filter_id_stop"] == -1).all()
    assert "FilterDB(" in repr(db) and "models=6" in repr(db)


SELECTIONS = [
    ({"Task": "Classification"}, {"plain-000", "residual-001", "residual-004",
                                  "depthwise-005"}, 545),
    ({"Task": ["Segmentation", "Object Detection"]}, {"depthwise-002", "plain-003"}, 364),
    ({"model": "plain-003"}, {"plain-003"}, 351),
    ({"model": ["plain-000", "residual-004"], "conv_depth_norm": (0.5, 1.0)},
     {"plain-000", "residual-004"}, 96 + 54),
    ({"conv_depth_norm": (0.25, 0.75)}, None, None),
    ({"depthwise": True}, {"depthwise-002", "depthwise-005"}, 2 + 5 + 4 + 7),
    ({"depthwise": False, "Visual Category": "natural", "conv_depth": 0}, None, None),
    ({"layer": (1, 2), "Task": "Classification"}, None, None),
]


@pytest.mark.parametrize(("conditions", "models", "count"), SELECTIONS)
def test_select(small_db, conditions, models, count):
    db = filterdb.open(small_db)
    # expected layers, computed row by row from the tables
    model_of = dict(zip(db.models["model_id"], db.models.to_dict("records"), strict=True))
    expected_ids, expected_models = [], set()
    for layer in db.layers.to_dict("records"):
        if (layer["kh"], layer["kw"]) != (3, 3):
            continue
        values = {**model_of[layer["model_id"]], **layer}
        ok = True
        for column, condition in conditions.items():
            value = values[column]
            if isinstance(condition, tuple):
                ok &= condition[0] <= value <= condition[1]
            elif isinstance(condition, list):
                ok &= value in condition
            else:
                ok &= value == condition
        if ok:
            expected_ids.extend(range(layer["filter_id_start"], layer["filter_id_stop"]))
            expected_models.add(values["model"])

    selection = db.select(**conditions)
    assert len(selection) == len(expected_ids) > 0
    if count is not None:
        assert len(selection) == count
    if models is not None:
        assert expected_models == models
    np.testing.assert_array_equal(selection.filter_ids, sorted(expected_ids))
    with h5py.File(small_db, "r") as handle:
        stored = handle["filters"][...]
    data = selection.read()
    assert data.shape == (len(expected_ids), 3, 3) and data.dtype == np.float32
    np.testing.assert_array_equal(data, stored[sorted(expected_ids)])
    chunks = list(selection.iter_chunks(rows=7))
    assert all(1 <= len(chunk) <= 7 for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), data)


def test_select_unknown_column_names_it(small_db):
    db = filterdb.open(small_db)
    with pytest.raises(ValueError, match="no_such_column"):
        db.select(no_such_column=1)


def test_pickle_round_trip(small_db):
    db = filterdb.open(small_db)
    _ = db.models  # a cached table must not break pickling
    clone = pickle.loads(pickle.dumps(db))
    assert isinstance(clone, filterdb.FilterDB)
    assert clone.path == db.path
    pd.testing.assert_frame_equal(clone.models, db.models)
    np.testing.assert_array_equal(clone.select(Task="Segmentation").read(),
                                  db.select(Task="Segmentation").read())


# ---------------------------------------------------------------------------
# kernel shapes

def test_shapes_store_1x1_and_leave_other_shapes_unstored(small_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo.parent, zoo)
    make_cnn(zoo / "five-stem.onnx", [4, 6], kind="depthwise", seed=7, first_kernel=5)
    db = tmp_path / "db.h5"
    build(zoo, db, options=BuildOptions(shapes=((3, 3), (1, 1))))

    names = sorted(p.stem for p in zoo.glob("*.onnx"))
    refs = {name: reference_model(zoo / f"{name}.onnx") for name in names}
    expected_1x1 = np.concatenate([refs[n].filters((1, 1)) for n in names])
    with h5py.File(db, "r") as handle:
        assert set(handle) >= {"filters", "filters_1x1"}
        assert "filters_5x5" not in handle
        ones = handle["filters_1x1"][...]
        threes = handle["filters"][...]
    assert ones.shape == (sum(r.count((1, 1)) for r in refs.values()), 1, 1) == (136, 1, 1)
    np.testing.assert_array_equal(ones, expected_1x1)
    np.testing.assert_array_equal(threes, np.concatenate([refs[n].filters() for n in names]))

    opened = filterdb.open(db)
    assert set(opened.shapes) == {(3, 3), (1, 1)}
    layers = opened.layers
    five = layers[layers["kh"] == 5]
    assert len(five) == 1 and five["n_filters"].item() == 12
    assert five["filter_id_start"].item() == -1 and five["filter_id_stop"].item() == -1
    stored = layers[layers["kh"] != 5]
    assert (stored["filter_id_start"] >= 0).all()
    model = opened.models.set_index("model")
    assert model.loc["five-stem", "(5, 5) filters"] == 12
    assert model.loc["plain-000", "(5, 5) filters"] == 0
    selection = opened.select((1, 1), model="five-stem")
    np.testing.assert_array_equal(selection.read(), refs["five-stem"].filters((1, 1)))
    assert len(opened.select("1x1")) == 136
    with pytest.raises(ValueError, match="5x5"):
        opened.select((5, 5))


def test_meta_never_names_filters_that_are_not_stored(small_zoo, tmp_path):
    """Without 3x3 among the stored shapes, /meta must not hand out 3x3 id ranges:
    a build may refuse such shapes, or its /meta ranges must all name rows of /filters."""
    db = tmp_path / "db.h5"
    try:
        build(small_zoo.parent, db, options=BuildOptions(shapes=((1, 1),)))
    except (filterdb.FilterDBError, ValueError):
        return
    with h5py.File(db, "r") as handle:
        n_filters = len(handle["filters"]) if "filters" in handle else 0
        assert len(handle["filters_1x1"]) == 112
    meta = pd.read_hdf(db, "meta")
    bad = [(row["model"], row["filter_ids"]) for _, row in meta.iterrows()
           if not (0 <= expand_filter_ids(row["filter_ids"]).start
                   < expand_filter_ids(row["filter_ids"]).stop <= n_filters)]
    assert not bad, bad[:3]


# ---------------------------------------------------------------------------
# determinism, append

def _tables(db):
    opened = filterdb.open(db)
    with h5py.File(db, "r") as handle:
        filters = handle["filters"][...]
    return opened.models, opened.layers, opened.meta, filters


def test_same_result_with_one_and_two_workers(small_zoo, tmp_path):
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    build(small_zoo.parent, one, index=small_zoo, options=BuildOptions(workers=1))
    build(small_zoo.parent, two, index=small_zoo, options=BuildOptions(workers=2))
    models1, layers1, meta1, filters1 = _tables(one)
    models2, layers2, meta2, filters2 = _tables(two)
    # same zoo path: nothing path-dependent differs, so the tables are identical
    pd.testing.assert_frame_equal(models1, models2)
    pd.testing.assert_frame_equal(layers1, layers2)
    pd.testing.assert_frame_equal(meta1, meta2)
    assert filters1.shape == (909, 3, 3)
    assert filters1.tobytes() == filters2.tobytes()


def test_append_keeps_ids_and_adds_new_models(tmp_path):
    zoo = tmp_path / "zoo"
    index = generate_zoo(zoo, n_models=4, widths=(4, 8), depth=3, seed=5)
    db = tmp_path / "db.h5"
    first = build(zoo, db, index=index)
    assert first.count("added") == 4
    before_models, before_layers, _, before_filters = _tables(db)

    # new files sort before and after the old ones; they are appended all the same
    make_cnn(zoo / "aaa-new.onnx", [5, 6], seed=11)
    make_cnn(zoo / "zzz-new.onnx", [3, 4], kind="depthwise", seed=12)
    second = build(zoo, db, index=index)
    statuses = {o.model: o.status for o in second.outcomes}
    assert statuses == {"aaa-new": "added", "zzz-new": "added",
                        **{name: "present" for name in before_models["model"]}}
    assert sorted(second.findings) == sorted([f"{zoo / 'aaa-new.onnx'}: no row in the index",
                                              f"{zoo / 'zzz-new.onnx'}: no row in the index"])
    models, layers, _, filters = _tables(db)
    assert len(models) == 6
    old = models.iloc[:4]
    for column in ("model_id", "model", "Task", "filter_id_start", "filter_id_stop",
                   "(3, 3) filters", "sha256"):
        assert list(old[column]) == list(before_models[column]), column
    pd.testing.assert_frame_equal(layers.iloc[:len(before_layers)], before_layers,
                                  check_dtype=False)
    assert list(models["model"].iloc[4:]) == ["aaa-new", "zzz-new"]
    assert list(models["model_id"].iloc[4:]) == [4, 5]
    assert list(models["Task"].iloc[4:]) == ["", ""]
    n_old = len(before_filters)
    assert filters[:n_old].tobytes() == before_filters.tobytes()
    new = [reference_model(zoo / f"{n}.onnx").filters() for n in ("aaa-new", "zzz-new")]
    np.testing.assert_array_equal(filters[n_old:], np.concatenate(new))
    assert models["filter_id_start"].iloc[4] == n_old

    third = build(zoo, db, index=index)
    assert {o.status for o in third.outcomes} == {"present"}
    assert len(third.outcomes) == 6
    models_after, _, _, filters_after = _tables(db)
    pd.testing.assert_frame_equal(models_after, models)
    assert filters_after.tobytes() == filters.tobytes()


# ---------------------------------------------------------------------------
# crash safety

# ``python -m filterdb`` with a pause before each model is read. Generated models build
# in milliseconds, so without it a build of any affordable zoo ends before the first
# commit (commits are at most once a second); the pause lets the kill land mid-build.
# One BLAS thread, as the CLI sets before numpy's import: the process stays
# single-threaded, so the build forks its workers and they inherit the slowed step.
SLOW_CLI = """
import os, runpy, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import filterdb.extraction as extraction
ordered = extraction.ordered_layers
def slow(record):
    time.sleep(0.12)
    return ordered(record)
extraction.ordered_layers = slow
runpy.run_module("filterdb", run_name="__main__", alter_sys=True)
"""


def _check_whole(db: Path) -> pd.DataFrame:
    """The database opens with h5py and pandas and every committed model is complete."""
    with h5py.File(db, "r") as handle:
        filters = handle["filters"][...]
        n_models = int(handle.attrs["n_models"])
    meta = pd.read_hdf(db, "meta")
    opened = filterdb.open(db)
    models = opened.models
    assert len(models) == n_models
    assert len(filters) == int(models["(3, 3) filters"].sum())
    assert not np.isnan(filters).any()  # a missing shard would read as NaN fill
    for row in models.to_dict("records"):
        got = opened.select(model=row["model"]).read()
        assert len(got) == row["(3, 3) filters"]
        np.testing.assert_array_equal(
            got, filters[row["filter_id_start"]:row["filter_id_stop"]])
    assert set(meta["model"]) == set(models["model"])
    return models


def test_killed_build_leaves_a_whole_database_and_resumes(tmp_path):
    zoo = tmp_path / "zoo"
    index = generate_zoo(zoo, n_models=30, widths=(8, 16, 16), depth=4, seed=2)
    db = tmp_path / "db.h5"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "build", str(zoo),
                             "--index", str(index), "-o", str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not db.exists() and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None, "the build ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    models = _check_whole(db)
    committed = len(models)
    assert 1 <= committed < 30
    assert list(models["model"]) == sorted(models["model"])

    resumed = build(zoo, db, index=index)
    assert resumed.count("present") == committed
    assert resumed.count("added") == 30 - committed
    assert resumed.count("failed") == 0
    final = _check_whole(db)
    assert len(final) == 30

    clean = tmp_path / "clean.h5"
    build(zoo, clean, index=index, options=BuildOptions(workers=2))
    with h5py.File(db, "r") as a, h5py.File(clean, "r") as b:
        assert a["filters"].shape == b["filters"].shape
        assert a["filters"][...].tobytes() == b["filters"][...].tobytes()
    pd.testing.assert_frame_equal(final, filterdb.open(clean).models)
    shards = {p.name for p in db.with_name(db.name + ".shards").iterdir()}
    assert shards == set(final["shard"])  # no orphans, no temporary files
    report = json.loads(db.with_name(db.name + ".build.json").read_text())
    assert report["summary"] == {"added": 30 - committed, "present": committed,
                                 "skipped": 0, "failed": 0}


# ---------------------------------------------------------------------------
# lock

def test_second_writer_is_refused_while_one_holds_the_database(tmp_path):
    db = tmp_path / "db.h5"
    with DatabaseWriter(db) as writer:
        assert writer.shapes == ((3, 3),)
        with pytest.raises(DatabaseError, match="locked"):
            DatabaseWriter(db)
    with DatabaseWriter(db):  # released on exit
        pass


def test_database_without_3x3_filters_opens_with_an_empty_meta(tmp_path):
    """A zoo whose convs are all 1x1 and 5x5: /meta has no rows but exists, so the
    published recipe, the API and `filterdb info` read the database."""
    from ..readers.onnx_builders import random_weight, single_conv

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    single_conv(zoo / "pointwise.onnx", random_weight((8, 4, 1, 1), seed=1))
    single_conv(zoo / "wide.onnx", random_weight((6, 3, 5, 5), seed=2))
    db = tmp_path / "db.h5"
    report = build(zoo, db, options=BuildOptions(workers=0))
    assert report.count("added") == 2
    filters, meta = _recipe(db)
    assert filters.shape == (0, 9)
    assert len(meta) == 0 and {"model", "depth", "filter_ids"} <= set(meta.columns)
    opened = filterdb.open(db)
    assert sorted(opened.models["model"]) == ["pointwise", "wide"]
    assert len(opened.layers) == 2 and len(opened.meta) == 0
    assert len(opened.select(model="wide")) == 0
    info = subprocess.run([sys.executable, "-m", "filterdb", "info", str(db)],
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "Traceback" not in info.stderr


def test_numbers_select_a_text_index_column_as_numbers(small_zoo, tmp_path):
    """Index columns are stored as written (text): a number, a list of numbers or a
    numeric range compares them as numbers; ``--where width=8..16`` too."""
    from filterdb.cli.analyze import parse_where

    with open(small_zoo, newline="") as handle:
        rows = list(csv.DictReader(handle))
    widths = {"plain-000": "8", "residual-001": "16", "depthwise-002": "32",
              "plain-003": "8.0", "residual-004": "n/a", "depthwise-005": "16"}
    index = tmp_path / "index.csv"
    with open(index, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "width"])
        writer.writeheader()
        writer.writerows({**row, "width": widths[row["model"]]} for row in rows)
    db_path = tmp_path / "db.h5"
    build(small_zoo.parent, db_path, index=index, options=BuildOptions(workers=0))
    db = filterdb.open(db_path)
    assert db.models["width"].map(type).eq(str).all()

    def count(names):
        return sum(SMALL_ZOO_3X3[name] for name in names)

    assert len(db.select(width=8)) == count(["plain-000", "plain-003"])
    assert len(db.select(width=(8, 16))) == count(["depthwise-005", "plain-000", "plain-003",
                                                  "residual-001"])
    assert len(db.select(width=[16, 32])) == count(["depthwise-002", "depthwise-005",
                                                   "residual-001"])
    assert len(db.select(width="8")) == count(["plain-000"])  # text compares as text
    assert parse_where(db, ["width=8..16"]) == {"width": (8.0, 16.0)}
    assert parse_where(db, ["width=8"]) == {"width": "8"}


def test_a_deleted_shard_is_written_again_by_the_next_build(small_zoo, tmp_path):
    """A shard deleted by hand: the next build of the zoo reads that model again and
    writes its shard anew (same name, same rows), keeping every id; verify is clean."""
    from filterdb.verify import verify

    db = tmp_path / "db.h5"
    build(small_zoo.parent, db, index=small_zoo, options=BuildOptions(workers=0))
    before = _tables(db)
    models = filterdb.open(db).models
    lost = layout.shards_dir(db) / models.loc[2, "shard"]
    lost.unlink()
    assert not verify(filterdb.open(db), scan=False).ok
    again = build(small_zoo.parent, db, index=small_zoo, options=BuildOptions(workers=1))
    assert again.count("present") == 6 and again.count("added") == 0
    reasons = {o.model: o.reason for o in again.outcomes}
    assert reasons[models.loc[2, "model"]].endswith("; its missing shard was written again")
    assert sum("written again" in r for r in reasons.values()) == 1
    assert lost.is_file()
    assert verify(filterdb.open(db), scan=False).ok
    after = _tables(db)
    for a, b in zip(before, after, strict=True):
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes()
        else:
            pd.testing.assert_frame_equal(a, b)
