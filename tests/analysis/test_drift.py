"""Histograms and drift against np.histogram and scipy.stats.entropy; sampling; bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from filterdb.analysis import analyze, engine
from filterdb.analysis.drift import bootstrap_draws

from .conftest import normalise, reference_drift

BY = ["Task", "Visual Category", "depth", "model"]


@pytest.fixture(scope="module")
def result(zoo_db):
    return analyze(zoo_db, by=BY, chunk_rows=1000)


def test_histograms_equal_np_histogram(result, in_memory):
    coefficients = result.basis.project(in_memory.scaled)
    lo, hi = coefficients.min(), coefficients.max()
    assert result.bin_edges.shape == (9, 71)
    for row in result.bin_edges:
        np.testing.assert_array_equal(row, np.linspace(lo, hi, 71))
    for name in BY:
        grouping = result.groupings[name]
        labels, counts = in_memory.histograms(coefficients, result.bin_edges, name)
        assert grouping.labels == labels
        np.testing.assert_array_equal(grouping.raw_counts, counts)
        assert list(grouping.counts["filters"]) == list(counts[:, 0].sum(axis=1))
        expected = np.array([[normalise(c.astype(float)) for c in group] for group in counts])
        np.testing.assert_allclose(grouping.histograms, expected, rtol=1e-12)
        np.testing.assert_allclose(grouping.histograms.sum(axis=-1), 1, rtol=1e-12)


def test_drift_equals_scipy_entropy(result, in_memory):
    coefficients = result.basis.project(in_memory.scaled)
    weights = result.basis.explained_variance_ratio
    for name in BY:
        grouping = result.groupings[name]
        labels, counts = in_memory.histograms(coefficients, result.bin_edges, name)
        drift = grouping.drift
        assert sorted(drift.index) == sorted(labels) and list(drift.columns) == list(drift.index)
        for a in labels:
            for b in labels:
                expected = reference_drift(counts[labels.index(a)], counts[labels.index(b)],
                                           weights)
                assert drift.loc[a, b] == pytest.approx(expected, rel=1e-6, abs=1e-12)
        matrix = drift.to_numpy()
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), 0)
        mean = matrix.sum(axis=1) / (len(matrix) - 1)
        assert np.all(np.diff(mean) >= 0), "sorted by mean drift"
        assert grouping.contributions.shape == (len(labels), len(labels), 9)
        np.testing.assert_allclose(grouping.contributions.sum(axis=-1), matrix, rtol=1e-12)
        a, b = drift.index[0], drift.index[-1]
        from scipy.stats import entropy
        k = 3
        p = normalise(counts[labels.index(a), k].astype(float))
        q = normalise(counts[labels.index(b), k].astype(float))
        assert grouping.contributions[0, -1, k] == pytest.approx(
            weights[k] * (entropy(p, q) + entropy(q, p)), rel=1e-6)


def test_density_is_the_c0_c1_histogram(result, in_memory):
    coefficients = result.basis.project(in_memory.scaled)
    counts, edges_x, edges_y = result.density
    np.testing.assert_array_equal(edges_x, np.linspace(*np.percentile(coefficients[:, 0],
                                                                      [0, 100]), 101))
    expected = np.histogram2d(coefficients[:, 0], coefficients[:, 1], [edges_x, edges_y])[0]
    np.testing.assert_array_equal(counts, expected)


def test_chunk_size_does_not_change_results(zoo_db, result):
    other = analyze(zoo_db, by=BY, chunk_rows=1 << 20)
    np.testing.assert_allclose(other.basis.components, result.basis.components, rtol=1e-9,
                               atol=1e-12)
    for name in BY:
        np.testing.assert_array_equal(other.groupings[name].raw_counts,
                                      result.groupings[name].raw_counts)


def test_balanced_sampling_is_capped_and_deterministic(zoo_db, in_memory, monkeypatch):
    monkeypatch.setattr(engine, "SAMPLE_BLOCK", 64)  # units span many sampling blocks
    a = analyze(zoo_db, by=["model"], balanced=100, chunk_rows=300, seed=3)
    b = analyze(zoo_db, by=["model"], balanced=100, chunk_rows=1 << 20, seed=3)
    c = analyze(zoo_db, by=["model"], balanced=100, chunk_rows=300, seed=4)
    sizes = dict(zip(*np.unique(in_memory.labels["model"], return_counts=True), strict=True))
    counts = a.groupings["model"].counts
    for label, filters in zip(counts["group"], counts["filters"], strict=True):
        assert filters == min(100, sizes[label])
    assert a.n_filters == sum(min(100, n) for n in sizes.values())
    np.testing.assert_array_equal(a.groupings["model"].raw_counts,
                                  b.groupings["model"].raw_counts)
    np.testing.assert_allclose(a.basis.components, b.basis.components, rtol=1e-9, atol=1e-12)
    assert not np.array_equal(a.groupings["model"].raw_counts,
                              c.groupings["model"].raw_counts)
    # per layer
    layers = analyze(zoo_db, by=["Task"], balanced=7, balance_by="layer")
    per_layer = np.unique(np.array([f"{m}:{lay}" for m, lay in in_memory.layer_key]),
                          return_counts=True)[1]
    assert layers.n_filters == int(np.minimum(per_layer, 7).sum())


def test_bootstrap_intervals(zoo_db, result, in_memory):
    by = ["Task", "model"]
    boot = analyze(zoo_db, by=by, bootstrap=30, seed=5, chunk_rows=1000)
    again = analyze(zoo_db, by=by, bootstrap=30, seed=5, chunk_rows=1000)
    other = analyze(zoo_db, by=by, bootstrap=30, seed=6, chunk_rows=1000)
    for name in by:
        grouping = boot.groupings[name]
        # per-(model, group) histograms sum to the group histograms of the plain run
        np.testing.assert_array_equal(grouping.raw_counts, result.groupings[name].raw_counts)
        np.testing.assert_allclose(grouping.drift.to_numpy(),
                                   result.groupings[name].drift.to_numpy(), rtol=1e-12)
        intervals = grouping.intervals
        n = len(grouping.labels)
        assert len(intervals) == n * (n - 1) // 2
        assert list(intervals.columns) == ["group_a", "group_b", "drift", "low", "high",
                                           "mean", "replicates"]
        assert np.all(intervals["low"] <= intervals["high"])
        assert intervals.equals(again.groupings[name].intervals)  # seeded
    assert not boot.groupings["Task"].intervals.equals(other.groupings["Task"].intervals)
    # one model per group: every replicate that holds both models reproduces the estimate
    models = boot.groupings["model"].intervals
    np.testing.assert_allclose(models["low"], models["drift"], rtol=1e-12)
    np.testing.assert_allclose(models["high"], models["drift"], rtol=1e-12)
    assert np.all((models["low"] <= models["drift"] * (1 + 1e-12))
                  & (models["drift"] <= models["high"] * (1 + 1e-12)))

    # the Task intervals recomputed in memory: models drawn with the documented stream
    coefficients = boot.basis.project(in_memory.scaled)
    edges = boot.bin_edges
    model_ids = np.unique(in_memory.model_id)
    task = in_memory.labels["Task"]
    labels = sorted(set(task))
    per_model = {(m, g): np.array([np.histogram(
        coefficients[(in_memory.model_id == m) & (task == g), k], edges[k])[0]
        for k in range(9)]) for m in model_ids for g in labels}
    weights = boot.basis.explained_variance_ratio
    replicate = {pair: [] for pair in zip(boot.groupings["Task"].intervals["group_a"],
                                          boot.groupings["Task"].intervals["group_b"],
                                          strict=True)}
    for draws in bootstrap_draws(len(model_ids), 30, 5):
        hist = {g: sum(w * per_model[(m, g)] for m, w in zip(model_ids, draws, strict=True))
                for g in labels}
        for a, b in replicate:
            if hist[a].sum() and hist[b].sum():
                replicate[(a, b)].append(reference_drift(hist[a], hist[b], weights))
    for row in boot.groupings["Task"].intervals.itertuples():
        values = replicate[(row.group_a, row.group_b)]
        assert row.replicates == len(values)
        assert row.low == pytest.approx(np.quantile(values, 0.025), rel=1e-6)
        assert row.high == pytest.approx(np.quantile(values, 0.975), rel=1e-6)
        assert row.mean == pytest.approx(np.mean(values), rel=1e-6)


def test_non_finite_filters_are_skipped(tmp_path):
    import csv

    import onnx
    from onnx import numpy_helper

    from filterdb.build import BuildOptions, build
    from filterdb.synthetic import make_cnn

    from .conftest import InMemory

    for i in range(3):
        path = make_cnn(tmp_path / f"m{i}.onnx", [4, 8, 8], seed=i)
        if i == 1:
            model = onnx.load(path)
            for init in model.graph.initializer:
                if init.name == "conv1.weight":
                    weight = numpy_helper.to_array(init).copy()
                    weight[0, 0, 1, 1], weight[2, 1, 0, 0] = np.nan, np.inf
                    init.CopyFrom(numpy_helper.from_array(weight, init.name))
            onnx.save(model, path)
    with open(tmp_path / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["model", "Task", "Visual Category"])
        writer.writeheader()
        for i in range(3):
            writer.writerow({"model": f"m{i}", "Task": "AB"[i % 2], "Visual Category": "x"})
    db = tmp_path / "filters.h5"
    build(tmp_path, db, index=tmp_path / "index.csv", options=BuildOptions(workers=1))
    result = analyze(db, by=["Task", "depth"], chunk_rows=50)
    everything = InMemory(db)
    finite = np.isfinite(everything.scaled).all(axis=1)
    assert result.n_nonfinite == 2 and result.n_filters == int(finite.sum())
    coefficients = result.basis.project(everything.scaled[finite])
    task = everything.labels["Task"][finite]
    for k, label in enumerate(result.groupings["Task"].labels):
        for component in range(9):
            np.testing.assert_array_equal(
                result.groupings["Task"].raw_counts[k, component],
                np.histogram(coefficients[task == label, component],
                             result.bin_edges[component])[0])


def test_without_density_the_rest_is_unchanged(zoo_db, result):
    """density_bins=None (the CLI's --no-figures) skips the c0-c1 histogram only."""
    assert result.density is not None
    bare = analyze(zoo_db, by=BY, chunk_rows=1000, density_bins=None)
    assert bare.density is None
    np.testing.assert_array_equal(bare.basis.components, result.basis.components)
    np.testing.assert_array_equal(bare.bin_edges, result.bin_edges)
    for name in BY:
        np.testing.assert_array_equal(bare.groupings[name].raw_counts,
                                      result.groupings[name].raw_counts)
        np.testing.assert_array_equal(bare.groupings[name].drift.to_numpy(),
                                      result.groupings[name].drift.to_numpy())
