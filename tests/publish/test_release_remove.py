"""Releases, pre-release marking, and removing a model (an erratum) atomically."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

import filterdb
from filterdb.build import build
from filterdb.synthetic import make_cnn
from filterdb.verify import verify


def test_release_then_append_marks_a_pre_release(db_copy, cli, tmp_path):
    done = cli("release", db_copy, "--version", "1.0.0", "--comment", "first", "--doi",
               "10.5281/zenodo.1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{db_copy}: released 1.0.0 (DOI 10.5281/zenodo.1)\n"
    info = filterdb.open(db_copy).dataset_info
    assert (info["version"], info["released"], info["doi"]) == ("1.0.0", True, "10.5281/zenodo.1")
    entry = info["changelog"][0]
    assert (entry["version"], entry["comment"], entry["models"], entry["filters"]) == (
        "1.0.0", "first", 4, 632)
    # The same release again (say, after a crash left its outcome unknown) is a no-op.
    master = db_copy.read_bytes()
    same = cli("release", db_copy, "--version", "1.0.0", "--comment", "first", "--doi",
               "10.5281/zenodo.1")
    assert (same.returncode, same.stdout) == (
        0, f"{db_copy}: already released 1.0.0 (DOI 10.5281/zenodo.1)\n")
    assert db_copy.read_bytes() == master
    again = cli("release", db_copy, "--version", "1.0.0", "--comment", "again")
    assert again.returncode == 2
    assert again.stderr == ("filterdb: error: " f"{db_copy}: 1.0.0 is not greater than the "
                            "last release 1.0.0\n")
    assert cli("release", db_copy, "--version", "1.1", "--comment", "x").returncode == 2
    make_cnn(tmp_path / "more" / "extra.onnx", [4, 4], seed=99)
    report = build(tmp_path / "more", db_copy)
    assert report.count("added") == 1
    info = filterdb.open(db_copy).dataset_info
    assert (info["version"], info["released"], len(info["changelog"])) == ("1.0.1-dev", False, 1)
    assert info["title"] == "Test filters"  # carried across the commit


def test_remove_keeps_other_models_intact_and_ids_dense(db_copy, cli):
    before = filterdb.open(db_copy)
    names = list(before.models["model"])
    filters = {name: before.select(model=name).read() for name in names}
    starts = dict(zip(names, before.models["filter_id_start"], strict=True))
    shard = db_copy.with_name(db_copy.name + ".shards") / before.models.loc[1, "shard"]
    done = cli("remove", db_copy, "--model", "net-onnx", "--reason", "licence withdrawn")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{db_copy}: removed model net-onnx (id 1): licence withdrawn; 3x3 ids 13:172 "
        "(inclusive) removed, later ones shifted by -160; later model ids shifted by -1; "
        "version now 0.1.0-dev\n")
    assert not shard.exists()
    after = filterdb.open(db_copy)
    kept = ["depthwise-002", "plain-000", "residual-001"]
    assert list(after.models["model"]) == kept
    assert list(after.models["model_id"]) == [0, 1, 2]
    assert list(after.models["filter_id_start"]) == [0, 13, 121]
    assert [starts[n] - (160 if starts[n] > 13 else 0) for n in kept] == [0, 13, 121]
    assert sorted(after.layers["model_id"].unique()) == [0, 1, 2]
    for name in kept:
        np.testing.assert_array_equal(after.select(model=name).read(), filters[name])
    meta = pd.read_hdf(db_copy, "meta")
    assert len(meta) == 9 and meta.index.get_level_values("model_id").unique().tolist() == [0, 1, 2]
    with h5py.File(db_copy, "r") as handle:
        stored = handle["filters"]
        assert stored.shape == (472, 3, 3)
        for model_id, name in enumerate(kept):
            rows = meta.xs(model_id, level="model_id")["filter_ids"]
            ranges = [tuple(map(int, text.split(":"))) for text in rows]
            read = np.concatenate([stored[a:b + 1] for a, b in ranges])
            np.testing.assert_array_equal(read, filters[name].reshape(-1, 3, 3))
    entry = after.dataset_info["changelog"][-1]
    assert {k: entry[k] for k in ("kind", "version", "model", "model_id",
                                  "removed_filter_ids", "filter_id_shift",
                                  "model_id_shift")} == {
        "kind": "removal", "version": "0.1.0-dev", "model": "net-onnx", "model_id": 1,
        "removed_filter_ids": {"3x3": "13:172"}, "filter_id_shift": {"3x3": -160},
        "model_id_shift": -1}
    assert verify(after).problems == []
    # Running it again (say, after a crash left its outcome unknown) changes nothing.
    master = db_copy.read_bytes()
    again = cli("remove", db_copy, "--model", "net-onnx", "--reason", "again")
    assert (again.returncode, again.stdout) == (
        0, f"{db_copy}: net-onnx already removed (version 0.1.0-dev)\n")
    assert db_copy.read_bytes() == master
    missing = cli("remove", db_copy, "--model", "no-such-model", "--reason", "typo")
    assert (missing.returncode, missing.stderr) == (
        2, f"filterdb: error: {db_copy}: no model named 'no-such-model'\n")
