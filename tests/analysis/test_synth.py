"""``filterdb synth`` and filterdb.synthetic_db: a real database of exact size and structure."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.errors import FilterDBError
from filterdb.synthetic_db import (
    BLOCK_ROWS,
    Effects,
    basis_images,
    model_blocks,
    noise_pool,
    plan_models,
    write_synthetic_db,
)

N = 400_000


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "synth.h5"
    result = write_synthetic_db(path, N, n_models=24, seed=3)
    assert result["filters"] == N and result["models"] == 24
    return path


def test_opens_with_exact_counts(synth_db):
    db = filterdb.open(synth_db)
    assert len(db.models) == 24
    assert db.filter_count() == N
    assert len(db.select()) == N
    three = db.layers[(db.layers["kh"] == 3) & (db.layers["kw"] == 3)]
    assert int(three["n_filters"].sum()) == N
    # every 3x3 layer's ids are contiguous and in order, filling 0..N
    ordered = three.sort_values("filter_id_start")
    assert ordered["filter_id_start"].iloc[0] == 0
    assert (ordered["filter_id_start"].to_numpy()[1:]
            == ordered["filter_id_stop"].to_numpy()[:-1]).all()
    assert ordered["filter_id_stop"].iloc[-1] == N
    assert (db.models["(3, 3) filters"] == db.models["filter_id_stop"]
            - db.models["filter_id_start"]).all()
    # other kernel shapes are counted, not stored
    assert (db.models["total_filters"] >= db.models["(3, 3) filters"]).all()
    assert db.models["(1, 1) filters"].sum() > 0
    assert set(db.layers["verdict"]) == {"not assessed"}


def test_published_recipe(synth_db):
    filters = h5py.File(synth_db)["filters"][...].reshape(-1, 9)
    assert filters.shape == (N, 9) and filters.dtype == np.float32
    assert np.isfinite(filters).all()
    meta = pd.read_hdf(synth_db, "meta")
    ids = sum(int(r.split(":")[1]) - int(r.split(":")[0]) + 1 for r in meta["filter_ids"])
    assert ids == N
    assert {"Task", "Visual Category", "producer", "op_set", "depth"} <= set(meta.columns)


def test_structure(synth_db):
    db = filterdb.open(synth_db)
    models = db.models
    assert models["Task"].nunique() >= 6
    assert models["Visual Category"].nunique() >= 8
    assert models["n_layers"].min() >= 4
    assert len(db.layers) > 10 * len(models)
    assert models["producer"].nunique() > 1
    depth_norm = db.layers["conv_depth_norm"]
    assert depth_norm.min() == 0.0 and depth_norm.max() == 1.0
    # per-layer scale: layers differ in magnitude
    x = db.select().read().reshape(-1, 9)
    starts = db.layers.loc[db.layers["kh"] == 3, "filter_id_start"].to_numpy()[:40]
    stops = db.layers.loc[db.layers["kh"] == 3, "filter_id_stop"].to_numpy()[:40]
    scales = [np.abs(x[a:b]).mean() for a, b in zip(starts, stops, strict=True) if b > a]
    assert max(scales) / min(scales) > 3
    # some pruned (all-zero) filters, not many
    zero = (np.abs(x).max(axis=1) == 0).mean()
    assert 0 < zero < 0.05


def _scaled(x: np.ndarray) -> np.ndarray:
    peak = np.abs(x).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    return x / peak


def test_pca_has_a_few_strong_components(synth_db):
    from sklearn.decomposition import PCA

    x = _scaled(filterdb.open(synth_db).select().read().reshape(-1, 9))
    ratio = PCA(9).fit(x).explained_variance_ratio_
    assert ratio[:3].sum() > 0.5
    assert ratio[0] > 0.2
    assert ratio[0] > 5 * ratio[-1]
    assert (np.diff(ratio) <= 1e-9).all()


def test_distributions_shift_with_depth_and_category(synth_db):
    db = filterdb.open(synth_db)
    x = _scaled(db.select().read().reshape(-1, 9))
    b = basis_images()
    coef = x @ b.T

    def mean_of(**conditions):
        return coef[db.select(**conditions).filter_ids].mean(axis=0)

    shallow, middle = mean_of(conv_depth_norm=(0, 0.3)), mean_of(conv_depth_norm=(0.3, 0.6))
    deep = mean_of(conv_depth_norm=(0.9, 1.0))
    assert np.linalg.norm(deep - middle) > 2 * np.linalg.norm(middle - shallow)
    natural = mean_of(**{"Visual Category": "natural"})
    unusual = mean_of(**{"Visual Category": ["medical ct", "textures", "medical xray"]})
    handwriting = mean_of(**{"Visual Category": "handwriting"})
    assert np.linalg.norm(unusual - natural) > np.linalg.norm(handwriting - natural)


def test_cli_synth_and_info(tmp_path, cli):
    path = tmp_path / "cli.h5"
    result = cli("synth", "-o", path, "--filters", "50k", "--models", "9", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "50,000 3x3 filters" in result.stdout
    info = cli("info", path)
    assert info.returncode == 0, info.stderr
    assert "models:    9" in info.stdout
    assert "50,000  /filters" in info.stdout
    assert "models by Task:" in info.stdout
    again = cli("synth", "-o", path, "--filters", "10")
    assert again.returncode == 2
    assert "exists" in again.stderr


def test_cli_bad_counts(tmp_path, cli):
    assert cli("synth", "-o", tmp_path / "a.h5", "--filters", "ten").returncode == 2
    bad = cli("synth", "-o", tmp_path / "b.h5", "--filters", "5", "--models", "6")
    assert bad.returncode == 2 and "--models" in bad.stderr


@pytest.mark.parametrize(("n", "models"), [(1, 1), (37, 5), (1000, 8), (123_457, 3)])
def test_exact_counts_at_any_size(n, models):
    plans = plan_models(n, models, seed=0)
    assert len(plans) == models
    assert sum(layer.n_filters for p in plans for layer in p.layers if layer.kh == 3) == n
    assert all(p.budget >= 1 for p in plans)


def test_same_seed_same_database_whatever_the_workers(tmp_path):
    one = write_synthetic_db(tmp_path / "one.h5", 60_000, n_models=8, seed=5, workers=1)
    two = write_synthetic_db(tmp_path / "two.h5", 60_000, n_models=8, seed=5, workers=2)
    other = write_synthetic_db(tmp_path / "other.h5", 60_000, n_models=8, seed=6)
    a, b, c = (filterdb.open(r["path"]) for r in (one, two, other))
    assert np.array_equal(a.select().read(), b.select().read())
    assert not np.array_equal(a.select().read(), c.select().read())
    with pytest.raises(FilterDBError, match="exists"):
        write_synthetic_db(tmp_path / "one.h5", 10)


def test_streams_in_bounded_blocks():
    plan = plan_models(3 * BLOCK_ROWS, 1, seed=0)[0]
    pool = noise_pool(0, rows=BLOCK_ROWS + 10)
    sizes = [len(block) for block in model_blocks(plan, pool, Effects.make(), basis_images())]
    assert sum(sizes) == 3 * BLOCK_ROWS
    assert max(sizes) <= BLOCK_ROWS


def test_basis_is_orthonormal():
    b = basis_images()
    assert np.allclose(b @ b.T, np.eye(9))
    assert (b[0] > 0).all()  # the blob
