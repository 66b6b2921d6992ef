"""The command line, run as ``python -m filterdb`` in subprocesses."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import pandas as pd
import pytest

import filterdb

from ..reference import reference_model

LAYER_COLUMNS = ["model", "layer", "name", "op_type", "depth", "conv_depth", "conv_depth_norm",
                 "c_out", "c_in_per_group", "groups", "kh", "kw", "n_filters",
                 "filter_id_start", "filter_id_stop"]


@pytest.fixture(scope="module")
def cli_db(small_zoo, tmp_path_factory, cli):
    """The small zoo built by ``filterdb build``; returns (db path, the build's result)."""
    db = tmp_path_factory.mktemp("cli") / "zoo.h5"
    result = cli("build", small_zoo.parent, "--index", small_zoo, "-o", db, "--workers", 2)
    return db, result


def _index_counts(index: Path, column: str) -> Counter:
    with open(index, newline="") as handle:
        return Counter(row[column] for row in csv.DictReader(handle))


def _section(stdout: str, title: str) -> dict[str, int]:
    """``{value: count}`` of one ``models by X:`` block of ``filterdb info``."""
    lines = stdout.splitlines()
    start = lines.index(title) + 1
    counts = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        count, value = line.strip().split("  ", 1)
        counts[value.strip()] = int(count)
    return counts


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("filterdb: error: ")
    return lines[0]


def test_build(cli_db, small_zoo):
    db, result = cli_db
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{db}: 6 added, 0 already present, 0 skipped, 0 failed; "
                               "909 3x3 filters added (counted, not stored: 112 1x1) in ")
    assert lines[1] == f"build report: {db}.build.json"
    assert len(filterdb.open(db).models) == 6
    with h5py.File(db, "r") as handle:
        assert handle["filters"].shape == (909, 3, 3)


def test_build_again_adds_nothing(cli_db, small_zoo, cli):
    db, _ = cli_db
    result = cli("build", small_zoo.parent, "--index", small_zoo, "-o", db)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.splitlines()[0]
    assert summary.startswith(f"{db}: 0 added, 6 already present, 0 skipped, 0 failed; ")
    assert "filters filters" not in summary, summary
    assert len(filterdb.open(db).models) == 6


def test_info(cli_db, small_zoo, cli):
    db, _ = cli_db
    result = cli("info", db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"database:  {db}" in out.splitlines()
    assert "models:    6   layers: 22" in out.splitlines()
    assert "schema:    filterdb 1 (filterdb " in out
    assert _section(out, "models by Task:") == dict(_index_counts(small_zoo, "Task")) == {
        "Classification": 4, "Segmentation": 1, "Object Detection": 1}
    assert _section(out, "models by Visual Category:") == dict(
        _index_counts(small_zoo, "Visual Category"))
    assert _section(out, "models by producer:") == {"filterdb-synthetic": 6}
    stored = out.split("filters stored:\n")[1].split("filters by kernel shape")[0]
    assert [line.split() for line in stored.splitlines()] == [["3x3", "909", "/filters"]]
    shapes = out.split("filters by kernel shape (all layers):\n")[1].split("models by")[0]
    assert [line.split(maxsplit=2) for line in shapes.splitlines()] == [
        ["(3,", "3)", "909"], ["(1,", "1)", "112"]]
    assert next(line for line in out.splitlines() if line.startswith("size:")).endswith(
        "(6 shard files)")


def test_info_counts_missing_shards(cli_db, cli, tmp_path):
    db, _ = cli_db
    alone = tmp_path / db.name
    shutil.copy(db, alone)  # the master without its shards folder
    result = cli("info", alone)
    assert result.returncode == 0, result.stderr
    assert next(line for line in result.stdout.splitlines() if line.startswith("size:")
                ).endswith("(6 shard files; 6 MISSING (filterdb verify))")


def test_layers_of_one_model(cli_db, small_zoo, cli):
    db, _ = cli_db
    result = cli("layers", db, "--model", "plain-000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == LAYER_COLUMNS
    rows = [line.split() for line in lines[1:]]
    ref = reference_model(small_zoo.parent / "plain-000.onnx")
    assert [row[2] for row in rows] == [layer.name for layer in ref.layers] == [
        "stem", "conv1", "conv2"]
    assert [row[0] for row in rows] == ["plain-000"] * 3
    assert [(int(r[-3]), int(r[-2]), int(r[-1])) for r in rows] == [
        (12, 36, 48), (32, 48, 80), (64, 80, 144)]


def test_layers_csv(cli_db, cli):
    db, _ = cli_db
    result = cli("layers", db, "--csv")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == LAYER_COLUMNS
    assert len(table) == 22
    opened = filterdb.open(db)
    expected = opened.layers.join(opened.models.set_index("model_id")["model"], on="model_id")
    for column in ("model", "name", "n_filters", "filter_id_start", "conv_depth"):
        assert list(table[column]) == list(expected[column]), column
    three = table[table["kh"] == 3]
    assert int(three["n_filters"].sum()) == 909
    assert (table.loc[table["kh"] == 1, "filter_id_start"] == -1).all()

    one = cli("layers", db, "--csv", "--model", "depthwise-005")
    frame = pd.read_csv(io.StringIO(one.stdout))
    assert list(frame["name"]) == ["stem", "dw1", "pw1", "dw2", "pw2"]
    assert list(frame["groups"]) == [1, 4, 1, 7, 1]


def test_layers_unknown_model(cli_db, cli):
    db, _ = cli_db
    result = cli("layers", db, "--model", "nope")
    assert result.returncode == 2
    assert _one_error_line(result) == f"filterdb: error: {db}: no model named 'nope'"


def test_demo(tmp_path, cli):
    out = tmp_path / "demo"
    result = cli("demo", "-o", out, "--models", 4)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    db = out / "filters.h5"
    assert f"demo: database {db}" in result.stdout
    opened = filterdb.open(db)
    assert len(opened.models) == 4
    assert set(opened.shapes) == {(3, 3), (1, 1), (5, 5)}
    with h5py.File(db, "r") as handle:
        for shape, name in (((3, 3), "filters"), ((1, 1), "filters_1x1"),
                            ((5, 5), "filters_5x5")):
            assert handle[name].shape[0] == opened.filter_count(shape)
        assert handle["filters"].shape[0] > 0
    meta = pd.read_hdf(db, "meta")
    assert set(meta["model"]) == set(opened.models["model"])
    assert len(opened.select().read()) == opened.filter_count()


# ---------------------------------------------------------------------------
# bad paths and arguments: one line on stderr, no traceback

@pytest.mark.parametrize("command", ["info", "layers"])
def test_missing_database(tmp_path, cli, command):
    missing = tmp_path / "missing.h5"
    result = cli(command, missing)
    assert result.returncode == 2
    assert _one_error_line(result) == f"filterdb: error: {missing}: no such database file"


@pytest.mark.parametrize("command", ["info", "layers"])
def test_not_a_database(tmp_path, cli, command):
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    result = cli(command, text)
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"filterdb: error: {text}: not an HDF5 file")

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["x"] = [1, 2, 3]
    result = cli(command, other)
    assert result.returncode == 2
    assert _one_error_line(result) == (
        f"filterdb: error: {other}: neither a filterdb database (no filterdb schema "
        "attribute) nor a published CNN Filter DB file (no /filters dataset)")


def test_build_into_a_file_that_is_not_a_database(small_zoo, tmp_path, cli):
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    result = cli("build", small_zoo.parent, "-o", text)
    assert result.returncode == 2
    assert _one_error_line(result).startswith(
        f"filterdb: error: {text}: not a readable filterdb database")
    assert text.read_text() == "hello\n"


def test_build_into_an_impossible_path(small_zoo, tmp_path, cli):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    target = blocker / "db.h5"  # its parent is a file: nothing can be created there
    result = cli("build", small_zoo.parent, "-o", target)
    assert result.returncode == 2, result.stderr
    assert _one_error_line(result).startswith(f"filterdb: error: {target}")


def test_build_makes_the_databases_new_folder(small_zoo, tmp_path, cli):
    target = tmp_path / "new" / "sub" / "db.h5"
    result = cli("build", small_zoo.parent, "-o", target, "--no-quality")
    assert result.returncode == 0, result.stderr
    assert len(filterdb.open(target).models) == 6


@pytest.mark.parametrize(("args", "message"), [
    (["--shapes", "3by3"], "filterdb: error: --shapes: not a kernel shape: '3by3'"),
    (["--workers", "0"], "filterdb: error: --workers must be at least 1"),
])
def test_bad_build_arguments(small_zoo, tmp_path, cli, args, message):
    db = tmp_path / "db.h5"
    result = cli("build", small_zoo.parent, "-o", db, *args)
    assert result.returncode == 2
    assert _one_error_line(result).startswith(message)
    assert not db.exists()


def test_output_that_is_a_folder_is_one_line_and_leaves_nothing(small_zoo, tmp_path, cli):
    folder = tmp_path / "out"
    folder.mkdir()
    result = cli("build", small_zoo.parent, "-o", folder)
    assert result.returncode == 2
    assert _one_error_line(result) == f"filterdb: error: {folder}: is a folder, not a " \
        "database file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert list(folder.iterdir()) == []


def test_missing_zoo(tmp_path, cli):
    result = cli("build", tmp_path / "nozoo", "-o", tmp_path / "db.h5")
    assert result.returncode == 2
    assert _one_error_line(result) == (f"filterdb: error: {tmp_path / 'nozoo'}: "
                                       "no such model file or folder")


def test_zoo_without_models_says_so_and_leaves_no_database(tmp_path, cli):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "readme.txt").write_text("notes")
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "zoo: 1 file(s) that no reader recognises, not built: readme.txt",
        f"filterdb: error: {zoo}: no model files found (ONNX, PyTorch, safetensors, Keras "
        "or TFLite)"]
    assert not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "db.h5.build.json", "db.h5.lock", "zoo"]


def test_the_parser_imports_no_heavy_package():
    """``filterdb --help`` and every command start light: building the parser imports
    none of numpy, pandas, h5py or numba (a build's peak memory counts what the CLI
    imported), and the repeated report defaults equal the report's."""
    code = ("import sys; from filterdb.cli import parser; parser(); "
            "print(sorted(m for m in ('numpy', 'pandas', 'h5py', 'numba', 'matplotlib') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    from filterdb import report
    from filterdb.cli import report as report_command

    assert report_command.DEFAULT_BY == report.DEFAULT_BY
    assert report_command.DEFAULT_MAX_FILTERS == report.DEFAULT_MAX_FILTERS


def test_an_interrupt_that_leaves_a_pytables_file_open_keeps_the_last_line(tmp_path):
    # Ctrl-C can land while PyTables opens or closes a temporary master; its exit
    # hook then closes the file, and must not print after filterdb's last line.
    script = f"""
import sys, tables
from filterdb import cli
from filterdb.errors import BuildInterrupted

def run(args):
    tables.open_file({str(tmp_path / "left-open.h5")!r}, "w")
    raise BuildInterrupted("db.h5: build interrupted; 3 model(s) committed.")

class Args:
    pass

args = Args()
args.run = run
cli.parser = lambda: type("P", (), {{"parse_args": lambda self, argv: args}})()
sys.exit(cli.main([]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr.strip().splitlines() == [
        "filterdb: db.h5: build interrupted; 3 model(s) committed."]


HALF_OPENED_AT_CTRL_C = """
import argparse
import sys
import tables
import filterdb.cli as cli
from filterdb.errors import BuildInterrupted

def interrupted(args):
    # what a Ctrl-C between PyTables' registering a file and opening it leaves
    handle = tables.File.__new__(tables.File)
    handle.filename, handle._v_isopen, handle._open_count = sys.argv[1], True, 1
    tables.file._open_files.add(handle)
    raise BuildInterrupted("db.h5: release interrupted")

class Parser:
    def parse_args(self, argv):
        return argparse.Namespace(run=interrupted)

cli.parser = Parser
sys.exit(cli.main([]))
"""


def test_ctrl_c_while_pytables_opens_a_file_ends_in_one_line(tmp_path):
    """PyTables' exit hook would fail on a file it registered but never opened (a
    traceback after the last line); the CLI takes such a file out of its registry."""
    script = tmp_path / "half_opened.py"
    script.write_text(HALF_OPENED_AT_CTRL_C)
    result = subprocess.run([sys.executable, script, str(tmp_path / "gone.h5")],
                            capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr.splitlines() == ["filterdb: db.h5: release interrupted"]


def test_after_an_interrupt_pytables_destructor_errors_are_not_printed(monkeypatch):
    """A PyTables node the interrupted code held fails to close in its destructor once
    its file is closed; after Ctrl-C that error is dropped (it printed a traceback after
    the last line), and any other destructor error still reaches the previous hook."""
    import gc

    import tables

    from filterdb.cli import _keep_last_line

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(
        type(unraisable.exc_value)))

    class Node:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    _keep_last_line()
    Node(tables.exceptions.HDF5ExtError("Problems closing the Group None"))
    Node(ValueError("other"))
    gc.collect()
    assert seen == [ValueError]
