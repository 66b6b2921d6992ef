"""``filterdb analyze``: file names and formats, --where, --basis, dask workers, errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd

import filterdb
from filterdb.analysis import Basis, analyze
from filterdb.cli import main
from filterdb.cli.analyze import parse_where


def test_cli_writes_tables(zoo_db, tmp_path, cli):
    out = tmp_path / "out"
    done = cli("analyze", zoo_db, "--by", "Task", "--by", "Visual Category", "--by", "depth",
               "--where", "Task=Classification", "--where", "Task=Segmentation", "--bins", "40",
               "--chunk-rows", "2000", "-o", out, "--no-figures")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "drift_depth.csv", "drift_task.csv", "drift_visual_category.csv", "groups_depth.csv",
        "groups_task.csv", "groups_visual_category.csv", "pca.json"]
    expected = analyze(zoo_db, by=["Task", "Visual Category", "depth"], bins=40,
                       where={"Task": ["Classification", "Segmentation"]})
    for name, stem in (("Task", "task"), ("Visual Category", "visual_category"),
                       ("depth", "depth")):
        grouping = expected.groupings[name]
        text = (out / f"drift_{stem}.csv").read_text().splitlines()
        assert text[0].split(",") == ["group", *grouping.drift.columns]
        assert [line.split(",")[0] for line in text[1:]] == list(grouping.drift.index)
        drift = pd.read_csv(out / f"drift_{stem}.csv", index_col=0)
        np.testing.assert_allclose(drift.to_numpy(), grouping.drift.to_numpy(), rtol=1e-9)
        groups = pd.read_csv(out / f"groups_{stem}.csv")
        assert list(groups.columns) == ["group", "models", "layers", "filters"]
        assert groups.astype({"group": str}).equals(grouping.counts.astype({"group": str}))
    assert list(pd.read_csv(out / "groups_task.csv")["group"]) == ["Classification",
                                                                   "Segmentation"]
    data = json.loads((out / "pca.json").read_text())
    assert data["n"] == expected.n_filters == len(
        filterdb.open(zoo_db).select(Task=["Classification", "Segmentation"]))
    assert np.array(data["components"]).shape == (9, 9)
    assert len(data["coef_min"]) == len(data["coef_max"]) == 9
    assert len(data["explained_variance_ratio"]) == 9
    assert "Task: 2 groups" in done.stdout


def test_cli_basis_dask_workers_bootstrap(zoo_db, tmp_path, cli):
    reference = analyze(zoo_db, by=[], where={"Task": "Segmentation"}).basis
    basis = reference.save(tmp_path / "reference.json")
    out = tmp_path / "out"
    done = cli("analyze", zoo_db, "--by", "Task", "--basis", basis, "--dask-workers", "2",
               "--bootstrap", "5", "--balanced", "300", "--chunk-rows", "3000", "-o", out,
               "--no-figures")
    assert done.returncode == 0, done.stderr
    assert {"intervals_task.csv", "drift_task.csv", "groups_task.csv"} <= {
        p.name for p in out.iterdir()}
    written = Basis.load(out / "pca.json")
    np.testing.assert_array_equal(written.components, reference.components)
    local = analyze(zoo_db, by=["Task"], basis=reference, bootstrap=5, balanced=300)
    drift = pd.read_csv(out / "drift_task.csv", index_col=0)
    np.testing.assert_allclose(drift.to_numpy(), local.groupings["Task"].drift.to_numpy(),
                               rtol=1e-9)
    intervals = pd.read_csv(out / "intervals_task.csv")
    np.testing.assert_allclose(intervals[["low", "high"]].to_numpy(),
                               local.groupings["Task"].intervals[["low", "high"]].to_numpy(),
                               rtol=1e-9)


def test_cli_figures(zoo_db, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["analyze", str(zoo_db), "--by", "Task", "-o", str(out),
                 "--where", "Visual Category=natural"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"drift_task.csv", "pca.json", "drift_task.png", "ridge_task.png",
            "density_c0_c1.png"} <= names


def test_cli_errors(zoo_db, tmp_path, cli, monkeypatch, capsys):
    done = cli("analyze", zoo_db, "--where", "Nope=1", "-o", tmp_path, "--no-figures")
    assert done.returncode == 2 and "no column 'Nope'" in done.stderr
    done = cli("analyze", zoo_db, "--by", "Nope", "-o", tmp_path, "--no-figures")
    assert done.returncode == 2 and "no column 'Nope' to group by" in done.stderr
    done = cli("analyze", zoo_db, "--where", "Task=Nope", "-o", tmp_path, "--no-figures")
    assert done.returncode == 2 and "no filters" in done.stderr
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith(".plots") else real(name, *a))
    assert main(["analyze", str(zoo_db), "-o", str(tmp_path / "x")]) == 2
    assert "--no-figures" in capsys.readouterr().err


def test_parse_where(zoo_db):
    db = filterdb.open(zoo_db)
    assert parse_where(db, ["Task=Classification"]) == {"Task": "Classification"}
    assert parse_where(db, ["Task=a", "Task=b", "depthwise=true"]) == {
        "Task": ["a", "b"], "depthwise": True}
    assert parse_where(db, ["conv_depth_norm=0..0.5", "c_out=8"]) == {
        "conv_depth_norm": (0.0, 0.5), "c_out": 8}


def test_default_groupings_the_database_lacks_are_skipped(small_zoo, tmp_path, cli):
    """Built without an index, a database has no Task or Visual Category: analyze's
    default groupings skip them with a note (as report does); asked for, they fail."""
    from filterdb.build import BuildOptions, build

    db = tmp_path / "db.h5"
    build(small_zoo.parent, db, options=BuildOptions(workers=0))
    out = tmp_path / "out"
    result = cli("analyze", db, "-o", out, "--no-figures")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[:2] == [
        f"analyze: no column 'Task' in {db}: grouping skipped (--by chooses the groupings)",
        f"analyze: no column 'Visual Category' in {db}: grouping skipped (--by chooses the "
        "groupings)"]
    assert sorted(p.name for p in out.iterdir()) == ["drift_depth.csv", "groups_depth.csv",
                                                     "pca.json"]
    asked = cli("analyze", db, "-o", tmp_path / "asked", "--by", "Task", "--no-figures")
    assert asked.returncode == 2
    assert asked.stderr.startswith("filterdb: error: no column 'Task' to group by")


def test_summary_line_names_the_pair_of_largest_drift(zoo_db, tmp_path, cli):
    """The largest drift is over pairs of two groups: with one bin every drift is 0, and
    the line still names two different groups (it named a group against itself)."""
    for bins in ("1", "70"):
        done = cli("analyze", zoo_db, "--by", "Task", "--bins", bins, "-o",
                   tmp_path / bins, "--no-figures")
        assert done.returncode == 0, done.stderr
        line = next(x for x in done.stdout.splitlines() if x.startswith("Task: "))
        pair = line.rsplit("(", 1)[1].rstrip(")").split(" vs ")
        assert len(pair) == 2 and pair[0] != pair[1], line
        drift = pd.read_csv(tmp_path / bins / "drift_task.csv", index_col=0)
        expected = drift.to_numpy()[np.triu_indices(len(drift), 1)].max()
        assert f"max {expected:.4g} (" in line
        if bins == "1":
            assert expected == 0
