"""Streaming statistics: scaling, moments, the bin rule against np.histogram, grouped counts."""

from __future__ import annotations

import numpy as np

from filterdb.analysis.stats import GroupedHistogram, Moments, bin_edges, bin_index, scale_by_peak


def test_scale_by_peak_keeps_zero_filters_and_sign():
    filters = np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                        [[1, -3, 0], [0, 1.5, 0], [0, 0, 0]],
                        [[2, 0, 0], [0, 0, 0], [0, 0, -1]]], dtype=np.float32)
    x = scale_by_peak(filters)
    assert x.dtype == np.float64 and x.shape == (3, 9)
    np.testing.assert_array_equal(x[0], 0)
    np.testing.assert_allclose(x[1, :5], [1 / 3, -1, 0, 0, 0.5])
    np.testing.assert_allclose(np.abs(x[1:]).max(axis=1), 1)


def test_moments_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 9))
    whole = Moments(9).update(x)
    parts = Moments(9)
    for chunk in np.array_split(x, 7):
        parts.merge(Moments(9).update(chunk))
    assert parts.count == 1000
    np.testing.assert_allclose(parts.sum, whole.sum, rtol=1e-12)
    np.testing.assert_allclose(parts.covariance(), np.cov(x, rowvar=False), rtol=1e-10)


def test_bin_rule_equals_np_histogram_exactly_on_edges():
    rng = np.random.default_rng(1)
    lo, hi, bins = -1.2345678, 2.3456789, 70
    edges = bin_edges(lo, hi, bins)[0]
    np.testing.assert_array_equal(edges, np.linspace(lo, hi, bins + 1))
    # every edge, its float neighbours, the ends, and random values
    values = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                             rng.uniform(lo, hi, 100_000)])
    values = values[(values >= lo) & (values <= hi)]
    index = bin_index(values, edges)
    assert index.min() >= 0 and index.max() == bins - 1
    counts = np.bincount(index, minlength=bins)
    np.testing.assert_array_equal(counts, np.histogram(values, bins=bins, range=(lo, hi))[0])
    np.testing.assert_array_equal(counts, np.histogram(values, bins=edges)[0])
    # the rule itself: edges[i] <= v < edges[i + 1], the last bin closed
    inner = index < bins - 1
    assert np.all(edges[index] <= values)
    assert np.all(values[inner] < edges[index[inner] + 1])
    assert bin_index(np.array([hi]), edges)[0] == bins - 1
    assert bin_index(edges[1:2], edges)[0] == 1


def test_degenerate_range_is_widened_like_numpy():
    edges = bin_edges(0.5, 0.5, 4)[0]
    np.testing.assert_array_equal(edges, np.histogram([0.5], bins=4)[1])


def test_grouped_histogram_windows_merge():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 12, 5000)
    bins = rng.integers(0, 5, (5000, 3))
    whole = GroupedHistogram(3, 5).update(codes, bins).dense(12)
    merged = GroupedHistogram(3, 5)
    for part in np.array_split(np.argsort(codes, kind="stable"), 6):  # windows of few codes
        merged.merge(GroupedHistogram(3, 5).update(codes[part], bins[part]))
    np.testing.assert_array_equal(merged.dense(12), whole)
    expected = np.zeros((12, 3, 5), np.int64)
    np.add.at(expected, (codes[:, None], np.arange(3)[None, :], bins), 1)
    np.testing.assert_array_equal(whole, expected)
