"""``filterdb build --verify-run / --require-run``, ``info`` and ``check --run``."""

from __future__ import annotations

import csv
import html
import json
import math
import re

import numpy as np
import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.readers import RunLimits
from filterdb.runs import NOT_VERIFIED

from . import models

FORWARD_FAILED = "the forward pass failed (Fail: [ONNXRuntimeError]"
NOT_REGISTERED = "com.example.custom:Mystery(-1) is not a registered function/op"
NO_GRAPH = "a PyTorch state dict or checkpoint holds weights only, no graph to run"
NO_GRAPH_SAFETENSORS = "a safetensors file holds weights only, no graph to run"
BAD_SHAPE = "Input Shape in the index: input shape 'axb' is not like 1x3x224x224"


def _index(folder, rows: dict[str, str]):
    path = folder / "index.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "Task", "Visual Category", "Input Shape"])
        for name, shape in rows.items():
            writer.writerow([name, "Classification", "natural", shape])
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every kind of model the run tests need, and an index giving two input shapes."""
    pytest.importorskip("torch")
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("run_zoo")
    models.onnx_model(folder / "ok.onnx")
    # its own weights: a build skips a model whose conv weights equal a stored model's
    models.onnx_model(folder / "custom.onnx", custom_op=True, seed=2)
    models.onnx_model(folder / "mismatch.onnx", weight_in=5)
    models.onnx_model(folder / "nan.onnx", nan=True)
    models.onnx_model(folder / "sym.onnx", in_channels=1, input_dims=("N", "C", "H", "W"))
    models.onnx_model(folder / "badshape.onnx", seed=1)
    models.torchscript_model(folder / "script.pt", in_channels=2)
    models.state_dict_model(folder / "state.pt")
    save_file({"conv.weight": np.ones((2, 3, 3, 3), np.float32)}, folder / "weights.safetensors")
    index = _index(folder, {"ok": "", "custom": "", "mismatch": "", "nan": "",
                            "sym": "2x1x8x8", "badshape": "axb", "script": "", "state": "",
                            "weights": ""})
    return folder, index


@pytest.fixture(scope="module")
def verified(zoo, cli, tmp_path_factory):
    """The zoo built with --verify-run through the CLI: (database, completed process)."""
    folder, index = zoo
    db = tmp_path_factory.mktemp("verified") / "filters.h5"
    done = cli("build", folder, "--index", index, "-o", db, "--verify-run")
    return db, done


def test_verify_run_records_each_model(verified):
    db, done = verified
    assert done.returncode == 0, done.stderr
    table = filterdb.open(db).models.set_index("model")
    assert table["runs"].to_dict() == {
        "badshape": "not run", "custom": "no", "mismatch": "no", "nan": "yes", "ok": "yes",
        "script": "yes", "state": "not run", "sym": "yes", "weights": "not run"}
    assert table.loc["badshape", "run_reason"] == BAD_SHAPE
    assert NOT_REGISTERED in table.loc["custom", "run_reason"]
    assert table.loc["mismatch", "run_reason"].startswith(FORWARD_FAILED)
    assert table.loc["state", "run_reason"] == NO_GRAPH
    assert table.loc["weights", "run_reason"] == NO_GRAPH_SAFETENSORS
    assert table["output_shapes"].to_dict() == {
        "badshape": "", "custom": "", "mismatch": "", "nan": "1x4", "ok": "1x4",
        "script": "1x5", "state": "", "sym": "2x4", "weights": ""}
    assert table["run_input_shapes"].to_dict() == {  # also of a forward pass that failed
        "badshape": "", "custom": "", "mismatch": "1x3x16x16", "nan": "1x3x16x16",
        "ok": "1x3x16x16", "script": "1x2x224x224", "state": "", "sym": "2x1x8x8",
        "weights": ""}
    assert table["outputs_finite"].to_dict() == {
        "badshape": "", "custom": "", "mismatch": "", "nan": "no", "ok": "yes",
        "script": "yes", "state": "", "sym": "yes", "weights": ""}
    ran = table["runs"] == "yes"
    assert (table.loc[ran, "forward_seconds"] >= 0).all()
    assert table.loc[~ran, "forward_seconds"].isna().all()
    assert table.loc["sym", "Input Shape"] == "2x1x8x8"


def test_verify_run_summary_on_the_command_line(verified):
    db, done = verified
    assert ("runs: 4 of 9 models of this build verified to run, 2 do not run, 3 not run; "
            "1 of those that run output NaN or Inf") in done.stdout
    assert "9 added, 0 already present, 0 skipped, 0 failed" in done.stdout
    lines = done.stderr.splitlines()
    custom = [line for line in lines if line.startswith("does not run: custom: ")]
    assert len(custom) == 1 and NOT_REGISTERED in custom[0] and custom[0].endswith("(kept)")
    assert any(line.startswith(f"does not run: mismatch: {FORWARD_FAILED}") for line in lines)
    assert f"not run: 1 model(s): {NO_GRAPH}" in lines
    assert f"not run: 1 model(s): {BAD_SHAPE}" in lines


def test_build_report_counts_runs(verified):
    db, _ = verified
    report = json.loads(db.with_name(db.name + ".build.json").read_text())
    runs = report["runs"]
    assert runs["counts"] == {"yes": 4, "no": 2, "not run": 3}
    assert [model for model, _ in runs["failed"]] == ["custom", "mismatch"]
    assert runs["non_finite"] == 1
    by_model = {o["model"]: (o["status"], o["runs"]) for o in report["outcomes"]}
    assert by_model["custom"] == ("added", "no")
    assert by_model["ok"] == ("added", "yes")


def test_info_lists_runs(verified, cli):
    db, _ = verified
    done = cli("info", db)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert ("runs: 4 of 9 models verified to run, 2 do not run, 3 not run; "
            "1 of those that run output NaN or Inf") in lines
    failed = [line for line in lines if line.startswith("  does not run: ")]
    assert [line.split(":")[1].strip() for line in failed] == ["custom", "mismatch"]
    assert NOT_REGISTERED in failed[0]
    assert f"  not run: 1 model(s): {NO_GRAPH}" in lines
    assert f"  not run: 1 model(s): {NO_GRAPH_SAFETENSORS}" in lines


def test_report_and_datasheet_show_the_runs(verified, tmp_path, cli):
    """The report's runs section and the datasheet's collection answer: same counts."""
    from tests.report.conftest import Tables

    db, _ = verified
    path = tmp_path / "report.html"
    assert cli("report", db, "-o", path, "--no-analysis").returncode == 0
    tables = Tables(path.read_text()).tables
    assert {r[0]: int(r[1]) for r in tables["runs-counts"][1:]} == {
        "yes": 4, "no": 2, "not run": 3}
    failed = tables["runs-failed"][1:]
    assert [model for model, _ in failed] == ["custom", "mismatch"]
    assert NOT_REGISTERED in failed[0][1] and failed[1][1].startswith(FORWARD_FAILED)
    assert {r[0]: int(r[1]) for r in tables["runs-not-run"][1:]} == {
        BAD_SHAPE: 1, NO_GRAPH: 1, NO_GRAPH_SAFETENSORS: 1}
    assert tables["runs-non-finite"][1:] == [["nan", "1x4"]]
    reading = re.search(r'<p class="reading">([^<]*)</p>', path.read_text().split(
        '<section id="runs">')[1])[1]
    assert html.unescape(reading).startswith(
        "4 of 9 models were verified to run; 2 do not: custom (")
    assert html.unescape(reading).endswith(
        f"; 3 were not run: {BAD_SHAPE} (1), {NO_GRAPH} (1), {NO_GRAPH_SAFETENSORS} (1); "
        "1 of those that run output NaN or Inf.")
    sheet = cli("datasheet", db, "--no-scan").stdout
    answer = sheet.split("**What mechanisms or procedures were used to collect the data?**"
                         )[1].split("\n\n")[1]
    assert answer.startswith("4 of 9 models were verified to run; 2 do not: custom (")
    assert html.unescape(reading).split("; ", 1)[1] in answer


def test_build_without_verify_run_marks_models_not_verified(small_db, cli):
    table = filterdb.open(small_db).models
    assert set(table["runs"]) == {"not run"}
    assert set(table["run_reason"]) == {NOT_VERIFIED}
    assert table["forward_seconds"].isna().all()
    assert "runs: 0 of 6 models verified to run, 0 do not run, 6 not run" in cli(
        "info", small_db).stdout


def test_require_run_excludes_models_that_do_not_run(zoo, tmp_path):
    folder, _ = zoo
    sub = tmp_path / "zoo"
    sub.mkdir()
    for name in ("ok.onnx", "mismatch.onnx", "state.pt"):
        (sub / name).write_bytes((folder / name).read_bytes())
    db = tmp_path / "filters.h5"
    report = build(sub, db, options=BuildOptions(run=RunLimits(), require_run=True))
    outcomes = {o.model: o for o in report.outcomes}
    assert {name: o.status for name, o in outcomes.items()} == {
        "mismatch": "failed", "ok": "added", "state": "added"}
    assert outcomes["mismatch"].reason.startswith(f"does not run: {FORWARD_FAILED}")
    assert outcomes["mismatch"].runs == "no"
    table = filterdb.open(db).models
    assert list(table["model"]) == ["ok", "state"]
    assert list(table["runs"]) == ["yes", "not run"]  # "not run" is not "does not run"
    assert report.run_summary().counts == {"yes": 1, "no": 1, "not run": 1}
    assert sorted(p.name for p in (tmp_path / "filters.h5.shards").glob("*.h5")) == sorted(
        table["shard"])


def test_time_limit_kills_runs_and_the_build_goes_on(zoo, cli, tmp_path):
    folder, _ = zoo
    sub = tmp_path / "zoo"
    sub.mkdir()
    for name in ("ok.onnx", "nan.onnx"):
        (sub / name).write_bytes((folder / name).read_bytes())
    db = tmp_path / "filters.h5"
    done = cli("build", sub, "-o", db, "--verify-run", "--run-timeout", "0.01")
    assert done.returncode == 0, done.stderr
    assert "2 added, 0 already present, 0 skipped, 0 failed" in done.stdout
    assert "runs: 0 of 2 models of this build verified to run, 2 do not run, 0 not run" in (
        done.stdout)
    table = filterdb.open(db).models
    assert list(table["runs"]) == ["no", "no"]
    assert set(table["run_reason"]) == {"did not finish within 0.01 s (killed)"}
    assert all(math.isnan(v) for v in table["forward_seconds"])


def test_check_run(zoo, cli):
    folder, _ = zoo
    done = cli("check", folder / "ok.onnx", "--run")
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith(f"{folder / 'ok.onnx'}: runs: yes; outputs 1x4 (finite); "
                           "forward pass ")
    failing = cli("check", folder / "custom.onnx", "--run", "--format", "json")
    assert failing.returncode == 1
    assert json.loads(failing.stdout)[0]["name"] == "conv"  # JSON stays parseable
    assert f"{folder / 'custom.onnx'}: runs: no (loading the model failed" in failing.stderr
    shaped = cli("check", folder / "sym.onnx", "--run", "--input-shape", "3x1x8x8")
    assert "runs: yes; outputs 3x4 (finite)" in shaped.stdout.splitlines()[-1]
    bad = cli("check", folder / "ok.onnx", "--run", "--input-shape", "1x3xa")
    assert (bad.returncode, bad.stdout, bad.stderr) == (  # refused before the table
        2, "", "filterdb: error: --input-shape: input shape '1x3xa' is not like 1x3x224x224\n")
    limits = cli("check", folder / "ok.onnx", "--run", "--run-timeout", "0")
    assert (limits.returncode, limits.stdout, limits.stderr) == (
        2, "", "filterdb: error: --run-timeout and --run-memory must be positive\n")

