"""Hostile and broken inputs: every one refused in one line naming the file and the
reason, without running code, hanging or exhausting memory, and nothing of it stored."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from filterdb.cli import main
from filterdb.errors import one_line
from filterdb.readers import is_model_file

from . import hostile
from .formula import FORMULA_CELLS, assert_inert_csv
from .harness import HANG_GUARD

#: Peak memory a build over the hostile zoo may use (torch and onnx imported): far
#: below the terabytes the files declare.
PEAK_RSS_BYTES = 2 * 2**30
GOOD_NAMES = ("good model.onnx", "模型.onnx", "new\nline.onnx", "=1+2.onnx")


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict[str, Path]:
    """Every case of :data:`hostile.CASES` built in one folder, named after the case."""
    folder = tmp_path_factory.mktemp("hostile")
    hostile.MARKER.unlink(missing_ok=True)
    files = {}
    for case, (builder, _) in hostile.CASES.items():
        scratch = folder / f".{case}"
        scratch.mkdir()
        path = builder(scratch)
        files[case] = path.rename(folder / f"{case}{path.suffix}")
        for rest in scratch.iterdir():  # companions (external data) stay beside it
            rest.rename(folder / rest.name)
        scratch.rmdir()
    return files


def test_there_are_at_least_30_cases_across_every_format(hostile_files):
    assert len(hostile.CASES) >= 30
    suffixes = {path.suffix for path in hostile_files.values()}
    assert {".onnx", ".pt", ".pth", ".safetensors", ".keras", ".h5", ".tflite"} <= suffixes


@pytest.mark.parametrize("case", list(hostile.CASES))
def test_check_refuses_in_one_line_naming_file_and_reason(hostile_files, case, capsys):
    path = hostile_files[case]
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"filterdb: error: {path}: "), err
    assert re.search(hostile.CASES[case][1], err), err
    assert not hostile.MARKER.exists(), "a hostile pickle ran code"


def _run_measured(argv: list, folder: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run a command; also return its peak resident memory in bytes (from wait4)."""
    out, err = folder / "stdout", folder / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
    guard = threading.Timer(HANG_GUARD, proc.kill)  # hang protection, not a time limit
    guard.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        guard.cancel()
    done = subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status),
                                       out.read_text(), err.read_text())
    return done, usage.ru_maxrss * 1024  # Linux reports kB


def _nonfinite_onnx(path: Path) -> Path:
    hostile.good_onnx(path.parent, path.name)
    model = onnx.load(path)
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[:2] = [np.nan, np.inf]
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, path)
    return path


def test_build_over_a_hostile_zoo_stores_only_the_good_models(hostile_files, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(next(iter(hostile_files.values())).parent, zoo, symlinks=True)
    for seed, name in enumerate(GOOD_NAMES, start=1):
        hostile.good_onnx(zoo, name, seed)
    _nonfinite_onnx(zoo / "nonfinite.onnx")
    hostile.onnx_enormous_graph(zoo)
    db = tmp_path / "db.h5"
    done, peak = _run_measured([sys.executable, "-m", "filterdb", "build", zoo, "-o", db],
                               tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert peak < PEAK_RSS_BYTES
    assert not hostile.MARKER.exists(), "a hostile pickle ran code"
    lines = done.stderr.splitlines()
    for line in lines:
        assert re.match(r"(added|failed|skipped|present|index|warning|quality|zoo): ", line), line
    read = {case: p for case, p in hostile_files.items() if is_model_file(p)}
    assert set(hostile_files) - set(read) == {"text-behind-h5"}  # .h5 of text: not a model
    for case, path in read.items():
        failed = [line for line in lines if line.startswith(f"failed: {zoo / path.name}: ")]
        assert len(failed) == 1, (case, done.stderr)
        assert re.search(hostile.CASES[case][1], failed[0]), failed[0]
    models = pd.read_hdf(db, "models")
    good = {Path(name).stem for name in GOOD_NAMES}
    assert set(models["model"]) == good | {"nonfinite", "enormous"}
    warning = [line for line in lines if line.startswith("warning: ")]
    assert warning == [f"warning: {zoo / 'nonfinite.onnx'}: 1 NaN and 1 Inf weights (kept)"]
    row = models.set_index("model").loc["nonfinite"]
    with h5py.File(db, "r") as handle:
        kept = handle["filters"][row["filter_id_start"]:row["filter_id_stop"]]
    assert np.isnan(kept).sum() == 1 and np.isinf(kept).sum() == 1
    assert f"added: {one_line('new' + chr(10) + 'line')} (" in done.stderr  # escaped


@pytest.mark.parametrize("sample", ["onnx", "pt", "safetensors", "keras", "tflite"])
def test_truncated_at_many_offsets(sample, tmp_path, capsys):
    """Cut a valid file at 24 offsets spread over its length: each cut is refused in
    one line (or, where the cut lands after the last byte a reader needs, read)."""
    data = hostile.SAMPLES[sample](tmp_path).read_bytes()
    offsets = sorted({0, 1, 7, 8, 63, 64, *np.linspace(65, len(data) - 1, 18).astype(int)})
    for offset in offsets:
        path = tmp_path / f"cut{offset}.{sample}"
        path.write_bytes(data[:offset])
        code = main(["check", "--format", "csv", str(path)])
        captured = capsys.readouterr()
        assert code in (0, 2), captured.err
        if code == 2:
            assert captured.err.count("\n") == 1 and str(path) in captured.err


def _zoo_with_formula_index(folder: Path) -> Path:
    for seed, name in enumerate(("=1+2", "plain"), start=1):
        hostile.good_onnx(folder, f"{name}.onnx", seed)
    index = folder / "index.csv"
    with open(index, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "Name", "Task", "Visual Category", "Paper"])
        writer.writerow(["=1+2", *FORMULA_CELLS[:4]])
        writer.writerow(["plain", *FORMULA_CELLS[1:5]])
    return index


def test_formula_cells_are_stored_verbatim_and_exported_inert(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    index = _zoo_with_formula_index(zoo)
    db = tmp_path / "db.h5"
    assert main(["build", str(zoo), "--index", str(index), "-o", str(db)]) == 0
    models = pd.read_hdf(db, "models").set_index("model")
    assert list(models.loc["=1+2", ["Name", "Task", "Visual Category", "Paper"]]) == list(
        FORMULA_CELLS[:4])
    assert set(pd.read_hdf(db, "meta")["Task"]) == {FORMULA_CELLS[1], FORMULA_CELLS[2]}
    out = tmp_path / "analysis"
    assert main(["analyze", str(db), "-o", str(out), "--no-figures", "--by", "Task"]) == 0
    exported = sorted(out.glob("*.csv"))
    assert exported
    cells = {cell for path in exported for row in assert_inert_csv(path) for cell in row}
    assert "'" + FORMULA_CELLS[1] in cells  # escaped, not dropped


def test_csv_exports_of_check_and_layers_are_inert(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    index = _zoo_with_formula_index(zoo)
    db = tmp_path / "db.h5"
    assert main(["build", str(zoo), "--index", str(index), "-o", str(db)]) == 0
    capsys.readouterr()
    assert main(["layers", str(db), "--csv"]) == 0
    rows = assert_inert_csv(capsys.readouterr().out)
    assert any("'=1+2" in row for row in rows)
    assert main(["check", "--format", "csv", str(zoo / "=1+2.onnx")]) == 0
    assert_inert_csv(capsys.readouterr().out)


def _newer_schema(db: Path) -> None:
    with h5py.File(db, "a") as handle:
        handle.attrs["schema_version"] = 99


def _truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def _not_hdf5(db: Path) -> None:
    db.write_text("model,filters\nresnet,3\n")


@pytest.mark.parametrize("damage", [_truncate, _not_hdf5, _newer_schema],
                         ids=["truncated", "not-hdf5", "newer-schema"])
@pytest.mark.parametrize("command", ["info", "build"])
def test_damaged_database_is_refused_in_one_line(small_db, small_zoo, damage, command,
                                                 tmp_path, capsys):
    db = tmp_path / "db.h5"
    shutil.copy2(small_db, db)
    damage(db)
    before = db.read_bytes()
    argv = (["info", str(db)] if command == "info"
            else ["build", str(small_zoo.parent), "--index", str(small_zoo), "-o", str(db)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"filterdb: error: {db}"), err
    assert db.read_bytes() == before  # a build never overwrites what it cannot read
