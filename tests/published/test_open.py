"""Opening published files in place: detection, derived tables, selections, errors."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.errors import DatabaseError
from filterdb.store import dataset
from filterdb.store.published import PublishedDB
from filterdb.synthetic_published import published_meta, write_published

from .conftest import N_FILTERS, STARTS, stored


def test_detected_and_tables_derived_from_meta(v1_file):
    db = filterdb.open(v1_file)
    assert type(db) is PublishedDB
    assert db.version == "1.0.0"
    assert db.filter_count() == N_FILTERS and db.filter_count((5, 5)) == 0
    # a database's defaults, but no licence or version: the file records neither
    assert db.dataset_info == {**dataset.defaults(), "version": "",
                               "license": {"name": "", "title": "", "url": "",
                                           "attribution": ""}}
    models, layers = db.models, db.layers
    assert models["model_id"].tolist() == list(range(8))
    assert models["model"].tolist() == [f"model-{i:04d}" for i in range(8)]
    assert models["filter_id_start"].tolist() == list(STARTS)
    assert models["filter_id_stop"].tolist() == [*STARTS[1:], N_FILTERS]
    assert db.model_filter_starts().tolist() == list(STARTS)
    assert models["(3, 3) filters"].tolist() == [300, 400, 500, 600, 300, 400, 500, 600]
    assert models["(1, 1) filters"].tolist() == [100 * (i + 1) for i in range(8)]
    assert models["opset"].tolist() == [11, 12, 13, 11, 12, 13, 11, 12]
    assert {"op:Conv", "op:Relu", "op:Add"} <= set(models.columns)
    assert models["op:Conv"].tolist() == [4, 5, 6, 7, 4, 5, 6, 7]
    assert len(layers) == 36
    first = layers[layers["model_id"] == 1]
    assert first["conv_depth"].tolist() == [0, 1, 2, 3]
    assert first["layer"].tolist() == [0, 1, 2, 3]
    assert first["conv_depth_norm"].tolist() == [0, 1 / 3, 2 / 3, 1]
    assert first["filter_id_start"].tolist() == [300, 400, 500, 600]
    assert first["filter_id_stop"].tolist() == [400, 500, 600, 700]
    assert (layers["n_filters"] == 100).all() and (layers[["kh", "kw"]] == 3).all().all()


def test_missing_detail_is_marked_missing(v1_file):
    db = filterdb.open(v1_file)
    for column in ("c_out", "groups", "depthwise", "stride_h", "sparsity", "depth",
                   "variance_entropy_norm", "nan_count"):
        assert db.layers[column].isna().all(), column
    assert (db.layers[["name", "op_type"]] == "").all().all()
    assert (db.layers["verdict"] == "not assessed").all()
    assert (db.models[["Framework", "Precision", "format", "shard"]] == "").all().all()
    assert db.models["n_layers"].isna().all()
    assert len(db.select(depthwise=False)) == 0  # unknown, so not guessed


def test_segmentation_labels_normalised(v1_file):
    db = filterdb.open(v1_file)
    assert db.models["Task"].value_counts().to_dict() == {
        "Classification": 3, "Segmentation": 3, "GAN-Generator": 1, "Object Detection": 1}
    assert sorted(db.meta["Task"].unique()) == [
        "Classification", "GAN-Generator", "Instance Segmentation", "Object Detection",
        "Segmentation", "Semantic Segmentation"]


def test_datatype_alias_and_dtypes(v0_file, v1_file):
    old, new = filterdb.open(v0_file), filterdb.open(v1_file)
    assert old.version == "0.1.0"
    assert "Datatype" not in old.models and "Datatype" in old.meta
    assert old.models["Visual Category"].value_counts().to_dict() == {
        "natural": 5, "handwriting": 1, "faces": 1, "medical xray": 1}
    pd.testing.assert_frame_equal(old.models, new.models)
    pd.testing.assert_frame_equal(old.layers, new.layers)
    a = old.select(**{"Visual Category": "faces"}).read()
    b = new.select(**{"Visual Category": "faces"}).read()
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (600, 3, 3)
    # the same pool: float16 storage rounds it
    np.testing.assert_array_equal(a.astype(np.float16).astype(np.float32), b)


@pytest.mark.parametrize(("conditions", "count", "runs"), [
    ({"Task": "Segmentation"}, 1200, [300, 1800, 2500]),
    ({"conv_depth_norm": (0, 0.1)}, 800, list(STARTS)),
    ({"Task": "Segmentation", "conv_depth_norm": (0.5, 1)}, 700, [500, 1900, 2700]),
    ({"model": ["model-0000", "model-0007"]}, 900, [0, 3000]),
])
def test_select_counts_ids_and_values(v1_file, conditions, count, runs):
    selection = filterdb.open(v1_file).select(**conditions)
    ids = selection.filter_ids
    assert len(selection) == count == len(ids)
    starts = [int(ids[0])] + [int(b) for a, b in zip(ids[:-1], ids[1:], strict=True)
                              if b != a + 1]
    assert starts == runs  # where each contiguous run of ids begins
    values = selection.read()
    assert values.dtype == np.float32 and values.shape == (count, 3, 3)
    np.testing.assert_array_equal(values, stored(v1_file, ids))
    chunks = list(selection.iter_chunks(77))
    assert max(len(c) for c in chunks) == 77
    np.testing.assert_array_equal(np.concatenate(chunks), values)
    again = pickle.loads(pickle.dumps(selection))
    np.testing.assert_array_equal(again.read(), values)


def test_single_depth_model_has_depth_norm_zero(tmp_path):
    meta = published_meta(300, 1).reset_index()
    meta = meta[meta["conv_depth"] == 0].assign(conv_depth_norm=np.nan, filter_ids="0:299")
    path = write_published(tmp_path / "one.h5",
                           meta.set_index(["model_id", "conv_depth", "conv_depth_norm"]), 300)
    layers = filterdb.open(path).layers
    assert layers["conv_depth_norm"].tolist() == [0.0]
    assert layers["n_filters"].tolist() == [300]


def _with_meta(tmp_path, edit) -> str:
    meta = published_meta(1000, 4).reset_index()
    edit(meta)
    path = tmp_path / "bad.h5"
    write_published(path, meta.set_index(["model_id", "conv_depth", "conv_depth_norm"]), 1000)
    return str(path)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m.__setitem__("filter_ids", m["filter_ids"].replace("55:109", "55-109")),
     "/meta filter_ids '55-109' (model_id 0, conv_depth 1) is not 'start:end'"),
    (lambda m: m.__setitem__("filter_ids", m["filter_ids"].replace("55:109", "50:109")),
     "/meta filter_ids overlap: '0:54' (model_id 0, conv_depth 0) and '50:109' "
     "(model_id 0, conv_depth 1)"),
    (lambda m: m.__setitem__("filter_ids", m["filter_ids"].replace("55:109", "109:55")),
     "/meta filter_ids '109:55' (model_id 0, conv_depth 1) ends before it starts"),
    (lambda m: m.__setitem__("filter_ids", m["filter_ids"].replace("935:999", "935:1000")),
     "/meta filter_ids '935:1000' (model_id 3, conv_depth 5) is beyond the 1000 rows of "
     "/filters"),
    (lambda m: m.pop("Task"), "/meta has no column Task"),
])
def test_malformed_meta_is_refused(tmp_path, cli, edit, reason):
    path = _with_meta(tmp_path, edit)
    with pytest.raises(DatabaseError) as error:
        filterdb.open(path)
    assert str(error.value) == f"{path}: {reason}"
    result = cli("info", path)
    assert result.returncode == 2
    assert result.stderr == f"filterdb: error: {path}: {reason}\n"


def test_neither_layout_names_file_and_reason(tmp_path, small_db):
    only_filters = tmp_path / "filters_only.h5"
    with h5py.File(only_filters, "w") as handle:
        handle.create_dataset("filters", data=np.zeros((10, 9), np.float16))
    with pytest.raises(DatabaseError, match=r"filters_only.h5: neither a filterdb database "
                       r"\(no filterdb schema attribute\) nor a published CNN Filter DB file "
                       r"\(no /meta table\)$"):
        filterdb.open(only_filters)
    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as handle:
        handle.create_dataset("filters", data=np.zeros((10, 25), np.float32))
    with pytest.raises(DatabaseError, match=r"\(/filters has shape \(10, 25\), not \(N, 9\) "
                       r"or \(N, 3, 3\)\)$"):
        filterdb.open(wide)
    assert type(filterdb.open(small_db)).__name__ == "FilterDB"


def test_info_on_published_file(v1_file, cli):
    result = cli("info", v1_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == ("layout:    published CNN Filter DB, /meta in 1.0.0 spellings; "
                        "/filters float16 (3600, 9) (read as float32)")
    assert "models:    8   layers: 36" in lines
    assert "runs:      not recorded (the models table has no run columns)" in lines
    assert "      3x3            3,600  /filters" in lines
    task = lines.index("models by Task:")
    assert lines[task + 1:task + 5] == ["      3  Classification", "      3  Segmentation",
                                        "      1  GAN-Generator", "      1  Object Detection"]


def test_verify_of_a_published_or_tables_only_file_says_what_it_is(v1_file, cli, tmp_path):
    result = cli("verify", v1_file)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"filterdb: error: {v1_file}: a published CNN Filter DB file; verify checks filterdb "
        "databases (filterdb convert makes one of it)")
    tables = tmp_path / "tables.h5"
    assert cli("export-meta", v1_file, "-o", tables, "--no-scan").returncode == 0
    result = cli("verify", tables)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"filterdb: error: {tables}: tables without filters "
                                     "(export-meta); verify checks filterdb databases")
