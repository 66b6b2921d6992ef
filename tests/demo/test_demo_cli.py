"""``filterdb demo`` end to end, on the session's zoo (its cache makes the run warm)."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd

import filterdb


def test_demo_command_warm(demo):
    result = subprocess.run([sys.executable, "-m", "filterdb", "demo", "-o", str(demo.out)],
                            capture_output=True, text=True, timeout=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    err, out = result.stderr, result.stdout
    assert "demo: 41 models: 0 to train, 41 cached" in err
    assert "[41/41] cached" in err
    assert "added: vgg-w8-sgd-s0" in err  # build progress, one line per model
    database = demo.out / "filters.h5"
    assert f"demo: database {database}" in out
    assert "looks untrained (5 untrained control)" in out
    assert "models that look untrained: " in out
    assert "over-parameterised: vgg-w16-sgd-n20 (20 samples)" in out
    assert "over-parameterised: resnet-w16-sgd-n20 (20 samples)" in out
    db = filterdb.open(database)
    assert len(db.models) == 41
    assert set(db.shapes) == {(3, 3), (1, 1), (5, 5)}
    assert db.filter_count((5, 5)) == 32  # the discriminators' first layers
    analysis = demo.out / "analysis"
    assert f"demo: analysis  {analysis}" in out
    for name in ("task", "visual_category", "depth"):
        drift = pd.read_csv(analysis / f"drift_{name}.csv", index_col=0)
        assert drift.shape[0] == drift.shape[1] >= 2
    assert (analysis / "pca.json").exists()
    report = demo.out / "report.html"
    assert f"demo: report    {report}" in out
    page = report.read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', page) == [
        "composition", "runs", "quality", "eigen-images", "ridges", "drift", "datasheet"]
    assert "5 of 41 models look untrained: " in page
    # every ONNX and TorchScript model runs; state dicts and safetensors hold no graph
    runs = db.models.groupby("format")["runs"].agg(lambda r: sorted(set(r)))
    assert runs.to_dict() == {"onnx": ["yes"], "pytorch": ["not run"],
                              "safetensors": ["not run"], "torchscript": ["yes"]}
    runnable = int(db.models["format"].isin(["onnx", "torchscript"]).sum())
    assert (db.models["outputs_finite"] == "yes").sum() == runnable
    assert f"{runnable} of 41 models were verified to run; {41 - runnable} were not run" in page
    assert f"runs: {runnable} of 41 models verified to run, 0 do not run" in out
    counts = {shape: f"{db.filter_count(shape):,}" for shape in db.shapes}
    for shape, n in counts.items():  # the datasheet's stored filters, duplicates counted
        assert f"<tr><td>{shape[0]}x{shape[1]}</td><td class=\"num\">{n}</td>" in page
    assert page.count('<table id="datasheet-redundancy">') == 1


def test_demo_refuses_a_folder_of_other_files(tmp_path):
    """The demo replaces filters.h5 and removes model files it did not make: a folder
    holding anything else (no marker, no demo cache) is refused before any work."""
    mine = tmp_path / "mine"
    (mine / "zoo").mkdir(parents=True)
    (mine / "filters.h5").write_bytes(b"my database")
    (mine / "zoo" / "mymodel.onnx").write_bytes(b"my model")
    result = subprocess.run([sys.executable, "-m", "filterdb", "demo", "-o", str(mine),
                             "--models", "2", "--no-analysis"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"filterdb: error: {mine}: holds files of its own and is not a demo folder (the demo "
        "replaces its database and model files); choose a new or empty folder")
    assert (mine / "filters.h5").read_bytes() == b"my database"
    assert (mine / "zoo" / "mymodel.onnx").read_bytes() == b"my model"
    assert sorted(p.name for p in mine.rglob("*")) == ["filters.h5", "mymodel.onnx", "zoo"]
