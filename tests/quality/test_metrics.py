"""Quality metrics on hand-made layers: values computed by hand from the formulas of
method.md, and the edge cases documented in filterdb/layer_quality.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import filterdb
from filterdb import layer_quality
from filterdb.layer_quality import Thresholds, layer_metrics

ENTROPIES = ("variance_entropy", "variance_entropy_norm", "variance_entropy_clean",
             "variance_entropy_clean_norm")
METRICS = ("sparsity", *ENTROPIES, "orthogonality")


def fit(n: int) -> float:
    """The published random-entropy fit of method.md, written out again."""
    return 1.2618047 / (1 + math.exp(-0.88767525 * (math.log2(n) - 2.30436435))) - 0.31050834


def entropy(ratios) -> float:
    return -sum(p * math.log10(p) for p in ratios if p > 0)


def layer(filters, kernel=(3, 3)) -> np.ndarray:
    """Rows of up to kh*kw values (zero-padded) -> a (n, 1, kh, kw) float32 weight:
    one filter per output channel."""
    padded = np.zeros((len(filters), kernel[0] * kernel[1]), np.float32)
    for index, row in enumerate(filters):
        padded[index, :len(row)] = row
    return padded.reshape(len(filters), 1, *kernel)


def metrics(weight, **kwargs) -> dict:
    """layer_metrics of one weight, turning every warning into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return layer_metrics([weight], **kwargs)[0]


# --- sparsity -------------------------------------------------------------------------


def test_sparsity_counts_filters_below_eps_times_max():
    weight = layer([[1.0, -0.3, 0.2],        # holds max|W| = 1: threshold 0.01
                    [0.005, -0.009, 0.0],    # every |value| < 0.01: sparse
                    [0.0, 0.0, 0.0],         # sparse
                    [0.0, 0.5, 0.0]])        # one value above: not sparse
    assert metrics(weight)["sparsity"] == 0.5
    assert metrics(weight, eps=0.6)["sparsity"] == 0.75   # 0.5 < 0.6 as well
    assert layer_quality.sparse_mask(weight.reshape(4, 9)).tolist() == [False, True, True, False]


# --- variance entropy -----------------------------------------------------------------


def test_entropy_of_four_filters_with_known_variance_ratios():
    # centred already (column means 0), columns orthogonal: scatter eigenvalues 2a², 2b², 4c²
    a, b, c = 1.0, 1.0, 1.0
    weight = layer([[a, 0, c], [-a, 0, c], [0, b, -c], [0, -b, -c]])
    expected = entropy([0.25, 0.25, 0.5])
    assert expected == pytest.approx(0.4515449935, abs=1e-9)
    row = metrics(weight)
    assert row["variance_entropy"] == pytest.approx(expected, abs=1e-12)
    assert row["variance_entropy_norm"] == pytest.approx(expected / fit(4), abs=1e-12)
    assert row["variance_entropy_clean"] == pytest.approx(expected, abs=1e-12)
    assert row["variance_entropy_clean_norm"] == pytest.approx(expected / fit(4), abs=1e-12)
    # scale-invariant, and the public helper agrees
    assert metrics(weight * 1e3)["variance_entropy"] == pytest.approx(expected, abs=1e-12)
    assert layer_quality.variance_entropy(weight.reshape(4, 9)) == pytest.approx(
        (expected, expected / fit(4)), abs=1e-12)


def test_entropy_of_three_filters():
    # rows (1, 1), (-1, 1), (0, -2): mean 0, scatter diag(2, 6) -> ratios 1/4, 3/4
    row = metrics(layer([[1, 1], [-1, 1], [0, -2]]))
    assert row["variance_entropy"] == pytest.approx(entropy([0.25, 0.75]), abs=1e-12)
    assert row["variance_entropy_norm"] == pytest.approx(entropy([0.25, 0.75]) / fit(3),
                                                         abs=1e-12)


def test_entropy_with_unequal_spread_and_an_offset():
    # every filter shifted by the same offset: centring removes it. Scatter diag(2·4, 2·1, 4·9)
    offset = np.array([0.25, -0.5, 0.125, 0.75, 0, 0, 0, 0, 0])   # exact in float32
    base = np.array([[2, 0, 3], [-2, 0, 3], [0, 1, -3], [0, -1, -3]], dtype=float)
    weight = layer(np.pad(base, ((0, 0), (0, 6))) + offset)
    total = 8 + 2 + 36
    row = metrics(weight)
    assert row["variance_entropy"] == pytest.approx(entropy([8 / total, 2 / total, 36 / total]),
                                                    abs=1e-9)


def test_clean_entropies_use_the_non_sparse_filters_only():
    dense = [[1, 0, 1], [-1, 0, 1], [0, 1, -1], [0, -1, -1]]
    sparse = [[0, 0, 0, 0, 0.004], [0, 0, 0, 0, -0.004]]   # below 0.01 * max|W| = 0.01
    row = metrics(layer(dense + sparse))
    assert row["sparsity"] == pytest.approx(2 / 6)
    # full spectrum: 2, 2, 4 and 2 * 0.004² (the sparse pair along a fifth direction)
    values = [2, 2, 4, 2 * 0.004**2]
    full = entropy([v / sum(values) for v in values])
    assert row["variance_entropy"] == pytest.approx(full, abs=1e-9)
    assert row["variance_entropy_norm"] == pytest.approx(full / fit(6), abs=1e-9)
    clean = entropy([0.25, 0.25, 0.5])
    assert row["variance_entropy_clean"] == pytest.approx(clean, abs=1e-9)
    assert row["variance_entropy_clean_norm"] == pytest.approx(clean / fit(4), abs=1e-9)


def test_layers_of_a_batch_equal_layers_measured_alone():
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal(shape).astype(np.float32)
               for shape in [(8, 4, 3, 3), (16, 8, 3, 3), (4, 4, 5, 5), (2, 3, 3, 3),
                             (6, 6, 3, 3), (32, 1, 3, 3)]]
    weights[4][:, :2] = 0   # some sparse filters
    together = layer_metrics(weights)
    for weight, row in zip(weights, together, strict=True):
        alone = metrics(weight)
        for key in METRICS:
            assert row[key] == pytest.approx(alone[key], abs=1e-12), key


def test_clean_entropy_with_a_few_sparse_filters_equals_an_svd_of_the_rest():
    # Few sparse filters: the clean scatter is the full one less their share.
    rng = np.random.default_rng(4)
    spread = np.array([1, 2, 3, 1, 1, 1, 4, 1, 1]).reshape(3, 3)   # unequal variances
    weight = (rng.standard_normal((64, 32, 3, 3)) * spread + 0.5).astype(np.float32)
    weight[:3, :5] = 0.001
    filters = weight.reshape(-1, 9)
    kept = ~layer_quality.sparse_mask(filters)
    assert kept.sum() == 64 * 32 - 15
    row = metrics(weight)
    # svd_entropy (below) takes (c_out, c_in, kh, kw): one filter per output channel
    assert row["variance_entropy_clean"] == pytest.approx(
        svd_entropy(filters[kept].reshape(-1, 1, 3, 3)), abs=1e-9)
    assert row["variance_entropy"] == pytest.approx(svd_entropy(weight), abs=1e-9)


def test_clean_entropy_of_copies_among_zeros_is_exactly_zero():
    # Subtracting the zeros' share from the full scatter would leave rounding noise
    # of the size of the full scatter; the guard measures the copies directly.
    # (Without the guard this layer's clean entropy comes out near 0.37.)
    rng = np.random.default_rng(0)
    weight = np.repeat(rng.standard_normal((1, 1, 3, 3)).astype(np.float32), 97, axis=1)
    weight = np.repeat(weight, 11, axis=0)
    weight[:, :3] = 0
    row = metrics(weight)
    assert row["sparsity"] == pytest.approx(3 / 97)
    assert row["variance_entropy_clean"] == 0.0


def test_large_gram_matrices_shared_by_threads_equal_the_formula():
    # Layers whose Gram matrix is split into blocks over the threads (and small ones,
    # computed by the statistics kernel, beside them) give the same values as one
    # thread and as the formula.
    rng = np.random.default_rng(6)
    weights = [rng.standard_normal(shape).astype(np.float32)
               for shape in [(600, 24, 3, 3), (300, 600, 1, 1), (24, 8, 3, 3),
                             (512, 256, 3, 3)]]
    assert sum(w.size for w in weights) >= 2**20           # enough work for threads
    assert weights[0].shape[0] ** 2 * 24 * 9 > layer_quality.SMALL_GRAM_WORK
    assert len(layer_quality._gram_blocks(600)) > 2          # blocks shared by the threads
    assert weights[2].shape[0] ** 2 * 8 * 9 <= layer_quality.SMALL_GRAM_WORK
    shared = layer_metrics(weights, threads=2)
    alone = layer_metrics(weights, threads=1)
    for weight, row, single in zip(weights, shared, alone, strict=True):
        assert row["orthogonality"] == pytest.approx(orthogonality_formula(weight), abs=1e-6)
        for key in METRICS:
            assert row[key] == pytest.approx(single[key], abs=1e-12), key


# --- orthogonality --------------------------------------------------------------------


def orthogonality_formula(weight) -> float:
    rows = np.asarray(weight, np.float64).reshape(len(weight), -1)
    norms = np.linalg.norm(rows, axis=1)
    rows = rows / np.where(norms == 0, 1, norms)[:, None]
    c = len(rows)
    return 1 - np.abs(rows @ rows.T - np.eye(c)).sum() / (c * (c - 1))


def test_orthogonality_of_orthogonal_and_identical_rows():
    assert metrics(layer([[1, 0], [0, 3]]))["orthogonality"] == 1.0
    # identical rows of norm 2: normalised entries 1/2, G = all ones, 1 - 2 / 2 = 0 exactly
    assert metrics(layer([[1, 1, 1, 1], [1, 1, 1, 1]]))["orthogonality"] == 0.0
    # opposite rows: |G - I| off the diagonal is 1 as well
    assert metrics(layer([[0, 2], [0, -2]]))["orthogonality"] == 0.0
    # e1, e1, e2: one identical pair of three: 1 - 2 / (3 * 2)
    assert metrics(layer([[1, 0], [1, 0], [0, 1]]))["orthogonality"] == pytest.approx(2 / 3)
    # a zero row keeps norm 1: its diagonal |0 - 1| counts, 1 - 1 / 2
    assert metrics(layer([[1, 0], [0, 0]]))["orthogonality"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    copies = np.repeat(rng.standard_normal((1, 7, 3, 3)).astype(np.float32), 5, axis=0)
    assert metrics(copies)["orthogonality"] == pytest.approx(0.0, abs=1e-6)
    assert layer_quality.orthogonality(copies) == pytest.approx(0.0, abs=1e-6)


def test_orthogonality_of_random_rows_equals_the_formula():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((700, 3, 3, 3)).astype(np.float32)   # > one Gram block
    assert metrics(weight)["orthogonality"] == pytest.approx(orthogonality_formula(weight),
                                                             abs=1e-6)


def test_orthogonality_with_a_row_of_subnormal_norm():
    # A row whose norm is tiny but not zero is still divided by its norm (method.md):
    # here it becomes e1, orthogonal to e2. Real case: ch_PP-OCRv4_rec_infer.onnx holds
    # 1x1 layers with rows of norm ~2e-39 (see test_reference.py).
    weight = layer([[1e-39, 0], [0, 1]])
    assert weight[0, 0, 0, 0] > 0
    assert metrics(weight)["orthogonality"] == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    weight[0] *= np.float32(1e-40)
    assert metrics(weight)["orthogonality"] == pytest.approx(orthogonality_formula(weight),
                                                             abs=1e-6)


# --- edge cases of the module docstring -------------------------------------------------


def test_one_output_channel_has_orthogonality_one():
    rng = np.random.default_rng(0)
    row = metrics(rng.standard_normal((1, 8, 3, 3)).astype(np.float32))
    assert row["orthogonality"] == 1.0
    assert metrics(np.zeros((1, 1, 3, 3), np.float32))["orthogonality"] == 1.0


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 2)])
def test_one_or_two_filters_have_entropies_zero(shape):
    rng = np.random.default_rng(0)
    row = metrics(rng.standard_normal((*shape, 3, 3)).astype(np.float32))
    assert [row[key] for key in ENTROPIES] == [0.0, 0.0, 0.0, 0.0]
    assert row["n"] == shape[0] * shape[1]


def test_zero_variance_ratios_count_as_zero():
    # all filters along one axis: one non-zero variance, entropy exactly 0
    rng = np.random.default_rng(0)
    weight = np.zeros((8, 8, 3, 3), np.float32)
    weight[..., 1, 1] = rng.standard_normal((8, 8))
    row = metrics(weight)
    assert row["variance_entropy"] == 0.0
    assert row["variance_entropy_norm"] == 0.0
    # all filters along one general direction: one variance, the rest rounding noise
    direction = rng.standard_normal(9)
    weight = (rng.standard_normal((64 * 64, 1)) * direction).astype(np.float32)
    assert metrics(weight.reshape(64, 64, 3, 3))["variance_entropy"] == pytest.approx(
        0.0, abs=1e-9)
    # two equal variances, seven zero ones: log10(2)
    row = metrics(layer([[1, 0], [-1, 0], [0, 1], [0, -1]]))
    assert row["variance_entropy"] == pytest.approx(math.log10(2), abs=1e-12)


def test_all_zero_layer():
    weight = np.zeros((6, 5, 3, 3), np.float32)
    row = metrics(weight)
    assert row["sparsity"] == 1.0
    assert [row[key] for key in ENTROPIES] == [0.0, 0.0, 0.0, 0.0]
    # zero rows keep norm 1: G = 0, |G - I| sums to c_out
    assert row["orthogonality"] == pytest.approx(1 - 6 / (6 * 5))
    assert (row["weight_l1"], row["weight_l2"], row["weight_max"]) == (0.0, 0.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = filterdb.quality({"zero.weight": weight})
    assert table.loc[0, "verdict"] == "sparse"
    assert table.loc[0, "sparsity"] == 1.0


def test_no_non_sparse_filter_gives_clean_entropies_zero():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    row = metrics(weight, eps=2.0)   # every |value| < 2 max|W|: every filter is sparse
    assert row["sparsity"] == 1.0
    assert row["variance_entropy"] > 0.9
    assert (row["variance_entropy_clean"], row["variance_entropy_clean_norm"]) == (0.0, 0.0)
    # two non-sparse filters of 64: no spread to measure either
    weight = np.zeros((8, 8, 3, 3), np.float32)
    weight[0, :2] = rng.standard_normal((2, 3, 3))
    weight[1:, :] = 1e-5 * rng.standard_normal((7, 8, 3, 3))
    row = metrics(weight)
    assert row["sparsity"] == pytest.approx(62 / 64)
    assert row["variance_entropy"] > 0
    assert (row["variance_entropy_clean"], row["variance_entropy_clean_norm"]) == (0.0, 0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_are_computed(dtype):
    torch.manual_seed(0)
    weight = torch.randn(32, 16, 3, 3).to(dtype)
    weight[0] = 0   # sparse filters as well
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half = filterdb.quality({"conv.weight": weight})
    single = filterdb.quality({"conv.weight": weight.float()})
    assert half.loc[0, "shape"] == "32x16x3x3"
    for key in METRICS:
        assert np.isfinite(half.loc[0, key])
        assert half.loc[0, key] == pytest.approx(single.loc[0, key], abs=1e-12), key
    assert half.loc[0, "sparsity"] == pytest.approx(16 / 512)
    assert half.loc[0, "verdict"] == single.loc[0, "verdict"]


def test_float16_numpy_arrays_are_computed():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float16)
    half = layer_metrics([weight])[0]
    single = layer_metrics([weight.astype(np.float32)])[0]
    for key in METRICS:
        assert half[key] == pytest.approx(single[key], abs=1e-12), key
    table = filterdb.quality({"conv": weight})
    assert table.loc[0, "variance_entropy"] == pytest.approx(single["variance_entropy"],
                                                             abs=1e-12)


def test_non_finite_weights_get_their_own_verdict():
    weight = np.ones((4, 4, 3, 3), np.float32)
    weight[1, 2, 0, 0] = np.nan
    rows, summary = layer_quality.assess_layers([weight])
    assert rows[0]["verdict"] == "non-finite"
    assert summary["degenerated_share"] == 1.0


# --- kernels other than 3x3 -------------------------------------------------------------


def svd_entropy(weight) -> float:
    """Independent computation: SVD of the centred (n, kh*kw) matrix in float64."""
    filters = np.asarray(weight, np.float64).reshape(weight.shape[0] * weight.shape[1], -1)
    s = np.linalg.svd(filters - filters.mean(axis=0), compute_uv=False)
    variance = s**2 / (len(filters) - 1)
    return entropy(variance / variance.sum())


@pytest.mark.parametrize("kernel", [(5, 5), (7, 7), (1, 3), (2, 2)])
def test_entropy_of_other_kernels_equals_an_svd(kernel):
    rng = np.random.default_rng(5)
    # structured filters: a few patterns plus noise, so the spectrum is not flat
    d = kernel[0] * kernel[1]
    weight = (rng.standard_normal((48 * 12, 3)) @ rng.standard_normal((3, d))
              + 0.1 * rng.standard_normal((48 * 12, d)))
    weight = weight.astype(np.float32).reshape(48, 12, *kernel)
    row = metrics(weight)
    assert row["variance_entropy"] == pytest.approx(svd_entropy(weight), abs=1e-9)
    assert row["variance_entropy_clean"] == pytest.approx(svd_entropy(weight), abs=1e-9)
    assert 0 < row["variance_entropy_norm"] < 1
    assert row["orthogonality"] == pytest.approx(orthogonality_formula(weight), abs=1e-6)


@pytest.mark.parametrize("shape", [(64, 32), (16, 8), (128, 128)])
def test_random_gaussian_5x5_layer_has_normalised_entropy_near_one(shape):
    rng = np.random.default_rng(11)
    weight = rng.standard_normal((*shape, 5, 5)).astype(np.float32)
    row = metrics(weight)
    assert row["variance_entropy"] == pytest.approx(svd_entropy(weight), abs=1e-9)
    assert row["variance_entropy_norm"] == pytest.approx(1.0, abs=0.02)
    assert row["variance_entropy_norm"] >= Thresholds().random_like


def test_1x1_kernels_have_entropies_zero_and_no_entropy_verdict():
    rng = np.random.default_rng(0)
    rows, _ = layer_quality.assess_layers([rng.standard_normal((64, 64, 1, 1))])
    assert [rows[0][key] for key in ENTROPIES] == [0.0, 0.0, 0.0, 0.0]
    assert rows[0]["verdict"] == "ok"
