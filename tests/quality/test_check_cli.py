"""``filterdb check MODEL`` in its three formats, and the quality columns a build stores."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

import filterdb
from filterdb.synthetic import make_cnn

MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
KEYS = ["name", "shape", "groups", "n", "sparsity", "variance_entropy", "variance_entropy_norm",
        "variance_entropy_clean", "variance_entropy_clean_norm", "orthogonality", "verdict",
        "reason"]
FLOATS = ["sparsity", "variance_entropy", "variance_entropy_norm", "variance_entropy_clean",
          "variance_entropy_clean_norm", "orthogonality"]
STORED = FLOATS + ["weight_l1", "weight_l2", "weight_max"]


def strict_json(text: str):
    """json.loads refusing NaN and Infinity, which are not JSON (RFC 8259)."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def assert_same_rows(records: list[dict], expected: pd.DataFrame) -> None:
    assert len(records) == len(expected)
    for record, (_, row) in zip(records, expected.iterrows(), strict=True):
        for key in ("name", "shape", "verdict", "reason"):
            assert record[key] == row[key], (row["name"], key)
        for key in ("groups", "n"):
            assert int(record[key]) == row[key], (row["name"], key)
        for key in FLOATS:
            assert float(record[key]) == pytest.approx(row[key], rel=1e-12, abs=1e-15), (
                row["name"], key)


@pytest.fixture(scope="module")
def model(rapidocr_models):
    return rapidocr_models / MODEL


@pytest.fixture(scope="module")
def expected(model) -> pd.DataFrame:
    return filterdb.quality(model)


def test_check_json(cli, model, expected):
    result = cli("check", model, "--format", "json")
    assert result.returncode == 0, result.stderr
    records = strict_json(result.stdout)
    assert isinstance(records, list)
    assert len(records) == 53
    for record in records:
        assert list(record) == KEYS
    assert_same_rows(records, expected)
    assert sum(r["verdict"] == "random-like" for r in records) == round(
        expected.attrs["summary"]["random_like_share"] * 53)


def test_check_csv(cli, model, expected):
    result = cli("check", model, "--format", "csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout), keep_default_na=False)
    assert list(table.columns) == KEYS
    assert_same_rows(table.to_dict("records"), expected)


def test_check_table_ends_with_the_model_summary(cli, model, expected):
    result = cli("check", model)
    assert result.returncode == 0, result.stderr
    assert "\033[" not in result.stdout   # no colours when stdout is not a terminal
    lines = result.stdout.rstrip("\n").splitlines()
    summary = expected.attrs["summary"]
    assert lines[-1] == (f"{model}: {summary['verdict']}; 53 conv layers, "
                         f"{summary['degenerated_share']:.0%} degenerated, "
                         f"{summary['random_like_share']:.0%} random-like")
    assert lines[-2] == ""
    header, rows = lines[0].split(), lines[1:-2]
    assert header[:4] == ["name", "shape", "groups", "n"]
    assert header[-1] == "verdict"
    assert len(rows) == 53
    for line, (_, row) in zip(rows, expected.iterrows(), strict=True):
        fields = line.split()
        assert fields[:3] == [row["name"], row["shape"], str(row["groups"])]
        assert float(fields[4]) == pytest.approx(row["sparsity"], abs=5e-4 + 1e-9)
        assert float(fields[6]) == pytest.approx(row["variance_entropy_norm"], abs=5e-4 + 1e-9)
        assert row["verdict"] in fields
        if row["reason"]:
            assert line.endswith(row["reason"])


def test_check_json_is_valid_for_non_finite_layers(cli, tmp_path):
    path = make_cnn(tmp_path / "nan.onnx", [4, 8], seed=1)
    graph = onnx.load(path)
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values[0, 0, 0, 0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save_model(graph, path)
    assert filterdb.quality(path).loc[0, "verdict"] == "non-finite"
    result = cli("check", path, "--format", "json")
    assert result.returncode == 0, result.stderr
    records = strict_json(result.stdout)
    assert records[0]["verdict"] == "non-finite"
    assert records[0]["variance_entropy"] is None


def test_build_stores_the_quality_of_each_layer(small_db):
    db = filterdb.open(small_db)
    assert len(db.models) == 6
    for _, model in db.models.iterrows():
        expected = filterdb.quality(model["source_path"])
        layers = db.layers[db.layers["model_id"] == model["model_id"]].sort_values("layer")
        assert list(layers["name"]) == list(expected["name"])
        assert list(layers["verdict"]) == list(expected["verdict"])
        assert list(layers["reason"]) == list(expected["reason"])
        assert list(layers["n_filters"]) == list(expected["n"])
        for key in FLOATS:
            np.testing.assert_allclose(layers[key], expected[key], rtol=1e-12, atol=1e-15,
                                       err_msg=key)
        record = filterdb.api.model_record(model["source_path"])
        weights = [layer.weight for layer in filterdb.extraction.ordered_layers(record)]
        direct = filterdb.layer_quality.layer_metrics(weights)
        for key in STORED:
            np.testing.assert_allclose(layers[key], [row[key] for row in direct], rtol=1e-12,
                                       err_msg=key)
        summary = expected.attrs["summary"]
        assert model["quality_verdict"] == summary["verdict"]
        assert model["degenerated_share"] == pytest.approx(summary["degenerated_share"])
        assert model["random_like_share"] == pytest.approx(summary["random_like_share"])


def test_quality_of_a_model_id_reads_the_build(small_db):
    db = filterdb.open(small_db)
    for _, model in db.models.iterrows():
        expected = filterdb.quality(model["source_path"])
        for source in (small_db, str(small_db), db):
            stored = filterdb.quality(int(model["model_id"]), db=source)
            assert list(stored.columns) == KEYS
            assert_same_rows(stored.to_dict("records"), expected)
            assert stored.attrs["summary"] == expected.attrs["summary"]


def test_quality_of_a_model_id_needs_a_known_id_and_a_db(small_db):
    with pytest.raises(filterdb.FilterDBError):
        filterdb.quality(0)
    with pytest.raises(filterdb.FilterDBError):
        filterdb.quality(999, db=small_db)


class _Aborts:
    """Unpickling this object aborts the process, as a crash in a native library would."""

    def __reduce__(self):
        import os

        return os.abort, ()


class _Sleeps:
    """Unpickling this object blocks for ten minutes, as a hang in a native library would."""

    def __reduce__(self):
        import time

        return time.sleep, (600,)


@pytest.mark.parametrize(("payload", "options", "reason"), [
    (_Aborts(), [], "reading it killed the worker process (a crash in a native library, "
                    "e.g. on a damaged file)"),
    (_Sleeps(), ["--model-timeout", "2"], "still being read after 2 s (stopped)"),
])
def test_check_of_a_model_that_crashes_or_hangs_is_one_line(cli, tmp_path, payload, options,
                                                            reason):
    """The model is read in a worker process, as in a build: its crash or hang ends in
    one line naming the file, not in a dead or stuck command."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3), "payload": payload}, path)
    result = cli("check", path, "--allow-unsafe-pickle", *options)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"filterdb: error: {path}: {reason}"]


def test_check_errors_of_the_reader_come_back_whole(cli, tmp_path):
    """A reader's refusal, raised in the worker, is the same one line here."""
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    result = cli("check", path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"filterdb: error: {path}: empty file (0 bytes)"]


def _reader_bug(*args, **kwargs):
    """Stands in for a reader that fails with an exception of its own (a bug)."""
    raise AttributeError("'ConvReLU2d' object has no attribute '_modules'")


def test_check_reports_a_readers_bug_in_one_line(tmp_path, monkeypatch, capsys):
    """An exception that is not a refusal (a reader's bug on an unusual file) is one line
    naming the file, as a build reports it, not a traceback. The worker is forked from
    this process, so it runs the stand-in."""
    from filterdb import api
    from filterdb.cli import main

    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3)}, path)
    monkeypatch.setattr(api, "quality", _reader_bug)
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"filterdb: error: {path}: unexpected AttributeError: 'ConvReLU2d' object has no "
        "attribute '_modules'"]


@pytest.mark.parametrize("delay", [0.2, 0.5, 0.8, 1.1, 1.4])
def test_ctrl_c_on_check_ends_it_whenever_it_comes(tmp_path, delay):
    """SIGINT at any moment (the worker process may be starting) ends the command with
    'interrupted' or its result; it never waits for ever for the worker. The wait below
    only turns a hang into a failure."""
    import signal
    import subprocess
    import sys
    import time

    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.randn(8, 4, 3, 3)}, path)
    process = subprocess.Popen([sys.executable, "-m", "filterdb", "check", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"check still running 300 s after SIGINT at {delay} s")
    assert process.returncode in (0, 130), err
    assert "Traceback" not in err
    if process.returncode == 130:
        assert err.strip().splitlines()[-1] == "filterdb: interrupted"
