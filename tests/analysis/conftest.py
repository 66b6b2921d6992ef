"""Fixtures of the analysis tests: generated databases, a Dask cluster, an in-memory reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.synthetic import generate_zoo


def make_db(folder: Path, n_models: int, widths, seed: int) -> Path:
    index = generate_zoo(folder / "zoo", n_models=n_models, widths=widths, depth=4, seed=seed)
    db = folder / "filters.h5"
    build(index.parent, db, index=index, options=BuildOptions(workers=1))
    return db


@pytest.fixture(scope="session")
def zoo_db(tmp_path_factory) -> Path:
    """12 generated models (about 8,000 3x3 filters), three Tasks, four Visual Categories."""
    return make_db(tmp_path_factory.mktemp("analysis_db"), 12, (8, 16, 24), seed=7)


@pytest.fixture(scope="session")
def dask_client():
    """A LocalCluster of 2 single-threaded worker processes."""
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


EPS = np.finfo(np.float32).eps
DEPTH_LABELS = [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)]


def depth_label(value: float) -> str:
    """The published depth bins, written out: [0, 0.1], (0.1, 0.2], ..., (0.9, 1.0]."""
    for i in range(10):
        if value <= (i + 1) / 10:
            return DEPTH_LABELS[i]
    raise ValueError(value)


class InMemory:
    """Everything at once: the selected filters, scaled, with per-filter labels."""

    def __init__(self, path: Path, where: dict | None = None):
        db = filterdb.open(path)
        selection = db.select(**(where or {}))
        ids = selection.filter_ids
        raw = selection.read().reshape(-1, 9).astype(np.float64)
        peak = np.abs(raw).max(axis=1)
        with np.errstate(invalid="ignore"):  # rows with inf become NaN
            self.scaled = raw / np.where(peak == 0, 1, peak)[:, None]
        layers = db.layers[(db.layers["kh"] == 3) & (db.layers["filter_id_stop"] > 0)]
        layers = layers.sort_values("filter_id_start")
        per_id = np.repeat(np.arange(len(layers)), layers["n_filters"].to_numpy())
        row = layers.iloc[per_id[ids]]
        models = db.models.set_index("model_id")
        self.model_id = row["model_id"].to_numpy()
        self.layer_key = list(zip(row["model_id"], row["layer"], strict=True))
        self.labels = {
            "Task": models["Task"].to_numpy()[self.model_id].astype(str),
            "Visual Category": models["Visual Category"].to_numpy()[self.model_id].astype(str),
            "model": models["model"].to_numpy()[self.model_id].astype(str),
            "depth": np.array([depth_label(v) for v in row["conv_depth_norm"]]),
        }

    def histograms(self, coefficients: np.ndarray, edges: np.ndarray, by: str):
        """np.histogram counts per group (sorted labels) and component."""
        labels = sorted(set(self.labels[by]))
        counts = np.array([[np.histogram(coefficients[self.labels[by] == g, k], edges[k])[0]
                            for k in range(coefficients.shape[1])] for g in labels])
        return labels, counts


def normalise(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum()
    p[p == 0] = EPS
    return p / p.sum()


def reference_drift(counts_a: np.ndarray, counts_b: np.ndarray, weights: np.ndarray) -> float:
    """sum_k w_k (KL(P_k||Q_k) + KL(Q_k||P_k)) with scipy.stats.entropy (natural log)."""
    from scipy.stats import entropy

    total = 0.0
    for k, w in enumerate(weights):
        p, q = normalise(counts_a[k].astype(float)), normalise(counts_b[k].astype(float))
        total += w * (entropy(p, q) + entropy(q, p))
    return total


@pytest.fixture(scope="session")
def in_memory(zoo_db) -> InMemory:
    return InMemory(zoo_db)


def frame_close(a: pd.DataFrame, b: pd.DataFrame, rtol: float) -> None:
    assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=rtol, atol=0)
