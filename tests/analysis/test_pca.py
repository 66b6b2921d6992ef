"""PCA of the streamed moments against scikit-learn; the basis file; a reference basis."""

from __future__ import annotations

import json

import numpy as np
from sklearn.decomposition import PCA

from filterdb.analysis import Basis, analyze

from .conftest import InMemory


def test_basis_equals_sklearn_up_to_sign(zoo_db, in_memory):
    result = analyze(zoo_db, by=[], chunk_rows=777)
    basis = result.basis
    reference = PCA(n_components=9, svd_solver="full").fit(in_memory.scaled)
    assert basis.n == result.n_filters == len(in_memory.scaled)
    np.testing.assert_allclose(basis.mean, reference.mean_, atol=1e-12)
    np.testing.assert_allclose(basis.explained_variance_ratio,
                               reference.explained_variance_ratio_, atol=1e-9)
    np.testing.assert_allclose(basis.explained_variance, reference.explained_variance_,
                               rtol=1e-9)
    signs = np.sign(np.sum(basis.components * reference.components_, axis=1))
    np.testing.assert_allclose(basis.components, signs[:, None] * reference.components_,
                               atol=1e-6)
    projected = basis.project(in_memory.scaled)
    np.testing.assert_allclose(projected, reference.transform(in_memory.scaled) * signs,
                               atol=1e-6)
    # the fitted basis carries the selection's coefficient range
    np.testing.assert_array_equal(basis.coef_min, projected.min(axis=0))
    np.testing.assert_array_equal(basis.coef_max, projected.max(axis=0))


def test_sign_rule_and_orthonormal_rows(zoo_db):
    components = analyze(zoo_db, by=[]).basis.components
    peaks = components[np.arange(9), np.abs(components).argmax(axis=1)]
    assert np.all(peaks > 0)
    np.testing.assert_allclose(components @ components.T, np.eye(9), atol=1e-12)


def test_save_load_round_trip(zoo_db, tmp_path):
    basis = analyze(zoo_db, by=[]).basis
    path = basis.save(tmp_path / "pca.json")
    data = json.loads(path.read_text())
    assert {"n", "mean", "components", "explained_variance_ratio", "coef_min",
            "coef_max"} <= set(data)
    assert len(data["components"]) == 9 and len(data["components"][0]) == 9
    loaded = Basis.load(path)
    assert loaded.n == basis.n and loaded.shape == (3, 3)
    for field in ("mean", "components", "explained_variance_ratio", "explained_variance",
                  "coef_min", "coef_max"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(basis, field))


def test_reference_basis_applied_to_another_selection(zoo_db, tmp_path):
    reference = analyze(zoo_db, by=[], where={"Task": "Classification"}).basis
    path = reference.save(tmp_path / "reference.json")
    result = analyze(zoo_db, by=["Visual Category"], where={"Task": "Segmentation"},
                     basis=path)
    # the basis is the reference's; its range is the one the histograms span, this
    # selection's (pca.json then reproduces the drifts), not the reference's
    np.testing.assert_array_equal(result.basis.components, reference.components)
    np.testing.assert_array_equal(result.basis.mean, reference.mean)
    assert result.basis.n == reference.n
    assert result.settings["basis"] == "given"
    # the histograms are those of the other selection in the reference basis
    other = InMemory(zoo_db, where={"Task": "Segmentation"})
    coefficients = reference.project(other.scaled)
    assert result.n_filters == len(coefficients)
    np.testing.assert_allclose(result.basis.coef_min, coefficients.min(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result.basis.coef_max, coefficients.max(axis=0), rtol=1e-12)
    assert not np.allclose(result.basis.coef_min, reference.coef_min)
    edges = np.linspace(coefficients.min(), coefficients.max(), 71)
    np.testing.assert_array_equal(result.bin_edges, np.tile(edges, (9, 1)))
    labels, counts = other.histograms(coefficients, result.bin_edges, "Visual Category")
    grouping = result.groupings["Visual Category"]
    assert grouping.labels == labels
    np.testing.assert_array_equal(grouping.raw_counts, counts)
    # and differ from a basis fitted on that selection itself
    own = analyze(zoo_db, by=[], where={"Task": "Segmentation"}).basis
    assert not np.allclose(np.abs(own.components), np.abs(reference.components), atol=1e-3)
