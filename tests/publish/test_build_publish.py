"""Duplicate models at build time, stored dataset metadata and answers, verify."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd

import filterdb
from filterdb.verify import verify

from .conftest import HOSTILE_TASK

THREE = {"depthwise-002": 13, "net-onnx": 160, "plain-000": 108, "residual-001": 351}


def test_duplicates_are_skipped_naming_both(publish_build):
    db, report = publish_build
    outcomes = {o.model: (o.status, o.reason) for o in report.outcomes}
    assert outcomes == {
        "depthwise-002": ("added", ""), "net-onnx": ("added", ""),
        "plain-000": ("added", ""), "residual-001": ("added", ""),
        "net-st": ("skipped", "duplicate: net-st has the same conv weights as net-onnx"),
        "renamed": ("skipped", "duplicate: renamed has the same conv weights as plain-000")}
    models = filterdb.open(db).models
    assert dict(zip(models["model"], models["(3, 3) filters"], strict=True)) == THREE
    assert not any(db.with_name(db.name + ".shards").glob("*.tmp"))
    assert len(list(db.with_name(db.name + ".shards").glob("*.h5"))) == 4


def test_datasheet_yaml_beside_the_index_is_stored(publish_build):
    db = filterdb.open(publish_build[0])
    info = db.dataset_info
    assert info["title"] == "Test filters"
    assert info["creators"] == ["Ada Lovelace", "Alan Turing"]
    assert info["contact"] == "filters@example.org"
    assert info["license"]["name"] == "CC BY-SA 4.0"
    assert (info["version"], info["released"], info["changelog"]) == ("0.1.0-dev", False, [])
    assert db.datasheet_answers == {"purpose": "To test the datasheet."}


def test_verify_clean_database(publish_build, tmp_path):
    result = verify(filterdb.open(publish_build[0]), workdir=tmp_path)
    assert result.problems == []
    summary = result.summary
    assert (summary["models"], summary["layers"], summary["filters"]) == (4, 17, {"3x3": 632})
    assert summary["identical_models"] == [] and summary["models_without_checksum"] == []
    assert summary["empty_fields"] == {
        "Name": 1, "Paper": 4, "Framework": 0, "Precision": 0, "Training-Dataset": 1,
        "Pretraining-Dataset": 4, "Visual Category": 1, "Task": 0,
        "Conv Weight Initializer": 1, "Optimizer": 1, "Accessible": 1, "Dataset URL": 4}
    assert summary["redundancy"] == [{
        "shape": "3x3", "filters": 632, "duplicate_filters": 0, "duplicated_values": 0,
        "zero_filters": 0, "buckets": 1, "shared_layers": 0, "shared_layer_groups": 0,
        "shared_layer_examples": []}]
    assert filterdb.open(publish_build[0]).models.loc[1, "Task"] == HOSTILE_TASK


def test_verify_catches_flipped_filter_bytes(db_copy, cli):
    models = filterdb.open(db_copy).models
    shard = db_copy.with_name(db_copy.name + ".shards") / models.loc[2, "shard"]
    with h5py.File(shard, "r+") as handle:
        row = handle["filters"][5]
        row.view(np.uint32)[1, 1] ^= 0x00010000  # one bit of one float
        handle["filters"][5] = row
    done = cli("verify", db_copy, "--no-scan")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{shard}: 3x3 filter data of plain-000 does not match its stored checksum",
        f"{db_copy}: 1 problem(s)"]


def test_verify_catches_a_renamed_database(db_copy, cli):
    """Master and shards folder renamed together: the API still reads them (it finds the
    shards by the master's name), but /filters names the old folder, so the published
    h5py recipe reads NaN: verify says so."""
    renamed = db_copy.with_name("renamed.h5")
    db_copy.rename(renamed)
    db_copy.with_name(db_copy.name + ".shards").rename(renamed.with_name("renamed.h5.shards"))
    with h5py.File(renamed, "r") as handle:
        assert np.isnan(handle["filters"][:10]).all()
    done = cli("verify", renamed, "--no-scan")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{renamed}: /filters reads its rows from {db_copy.name}.shards/, not from "
        f"renamed.h5.shards/: the database was renamed; rename it and its shards folder back "
        f"to {db_copy.name} and {db_copy.name}.shards (h5py reads NaN otherwise)",
        f"{renamed}: 1 problem(s)"]


def test_verify_catches_a_dropped_layer_row(db_copy):
    layers = pd.read_hdf(db_copy, "layers")
    with pd.HDFStore(db_copy, "a") as store:  # row 12 is plain-000's conv1
        store.put("layers", layers.drop(index=12), format="table", track_times=False)
    result = verify(filterdb.open(db_copy), scan=False)
    assert result.problems == [
        f"{db_copy}: plain-000: 108 3x3 filters in /models but 76 in /layers",
        f"{db_copy}: 3x3 filter ids of /layers are not dense 0..599 in layer order",
        f"{db_copy}: /meta has 14 rows, the tables give 13"]


def test_verify_catches_wrong_counts(db_copy):
    models = pd.read_hdf(db_copy, "models")
    models.loc[3, "(3, 3) filters"] += 1
    with pd.HDFStore(db_copy, "a") as store:
        store.put("models", models, format="table", track_times=False)
    with h5py.File(db_copy, "a") as handle:
        handle.attrs["n_models"] = 5
    result = verify(filterdb.open(db_copy), checksums=False, scan=False)
    assert result.problems == [
        f"{db_copy}: n_models attribute 5 but /models has 4 rows",
        f"{db_copy}: residual-001: 352 3x3 filters in /models but 351 in /layers",
        f"{db_copy}: /models filter_id_start/stop disagree with the 3x3 counts",
        f"{db_copy}: /filters has 632 rows but the models count 633"]


def test_a_later_build_skips_a_duplicate_of_a_stored_model(db_copy, tmp_path):
    from filterdb.build import build

    from ..readers import writers_torch
    from ..readers.network import equivalence_network

    (tmp_path / "late").mkdir()
    writers_torch.write(tmp_path / "late" / "late-dup.pt", equivalence_network(), "torchscript")
    report = build(tmp_path / "late", db_copy)
    assert [(o.model, o.status, o.reason) for o in report.outcomes] == [
        ("late-dup", "skipped", "duplicate: late-dup has the same conv weights as net-onnx")]
    assert len(filterdb.open(db_copy).models) == 4


def test_build_reports_empty_fields_of_the_whole_database(publish_build, tmp_path):
    db, report = publish_build
    assert report.completeness["models"] == 4
    assert report.completeness["empty_fields"] == verify(
        filterdb.open(db), workdir=tmp_path).summary["empty_fields"]
    assert report.completeness["shared_layers"] == 0


def test_build_counts_layers_shared_between_models(tmp_path, cli):
    """A copy of a model whose last conv layer was changed: a different model (added),
    whose other layers equal the original's (counted as shared, by name)."""
    import onnx
    from onnx import numpy_helper

    from filterdb.synthetic import make_cnn

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    make_cnn(zoo / "base.onnx", [4, 8, 8], seed=5)
    model = onnx.load(zoo / "base.onnx")
    conv_weights = [node.input[1] for node in model.graph.node if node.op_type == "Conv"]
    for tensor in model.graph.initializer:
        if tensor.name == conv_weights[-1]:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 2,
                                                    tensor.name))
    onnx.save(model, zoo / "tuned.onnx")
    result = cli("build", str(zoo), "-o", str(tmp_path / "db.h5"))
    assert result.returncode == 0, result.stderr
    layers = filterdb.open(tmp_path / "db.h5").layers
    assert len(layers) == 2 * len(conv_weights)
    shared = len(conv_weights) - 1
    assert (f"redundancy: {2 * shared} layers equal a layer of another model ({shared} groups"
            in result.stderr)
    report = json.loads((tmp_path / "db.h5.build.json").read_text())
    assert report["completeness"]["shared_layers"] == 2 * shared
    assert report["completeness"]["shared_layer_groups"] == shared
    first = sorted(layers[layers["model_id"] == 0]["name"])[0]
    assert [f"base/{first}", f"tuned/{first}"] in report["completeness"][
        "shared_layer_examples"]


def test_build_counts_duplicate_filters_on_request(publish_zoo, tmp_path, cli):
    """``--count-duplicates``: the build's counts equal verify's, line and JSON."""
    db = tmp_path / "filters.h5"
    result = cli("build", publish_zoo.parent, "--index", publish_zoo, "-o", db,
                 "--count-duplicates")
    assert result.returncode == 0, result.stderr
    scans = json.loads((tmp_path / "filters.h5.build.json").read_text())[
        "completeness"]["duplicate_filters"]
    expected = verify(filterdb.open(db), workdir=tmp_path).summary["redundancy"]
    keys = ("shape", "filters", "duplicate_filters", "duplicated_values", "zero_filters")
    assert scans == [{key: scan[key] for key in keys} for scan in expected]
    assert scans[0]["filters"] == sum(THREE.values())
    assert (f"redundancy: {scans[0]['duplicate_filters']:,} of {scans[0]['filters']:,} 3x3 "
            "filters repeat an earlier one" in result.stderr)
