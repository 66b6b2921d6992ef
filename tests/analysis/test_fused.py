"""The fused pass kernels against the step-by-step numpy formulation, exactly."""

from __future__ import annotations

import os
from fractions import Fraction

import h5py
import numpy as np
import pytest

import filterdb
from filterdb.analysis import analyze, fused
from filterdb.analysis.stats import bin_edges
from filterdb.store import direct, layout

ZEROS = (0.0,) * 9


def adversarial_rows(n: int, seed: int) -> np.ndarray:
    """float32 rows (n, 9): wide exponents, subnormals, signed zeros, all-ones
    significands, powers of two, entries equal to the peak, zero rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 9)) * np.exp2(rng.integers(-60, 60, size=(n, 1)))
    x *= np.exp2(rng.integers(-20, 1, size=(n, 9)))
    x = x.astype(np.float32)
    x[::7, 3] = np.float32(1 - 2**-24) * np.sign(x[::7, 3])  # all-ones significand
    x[::11] = np.exp2(rng.integers(-10, 10, size=(len(x[::11]), 9))).astype(np.float32)
    x[::13, 0] = -np.abs(x[::13]).max(axis=1)  # the peak itself, negative
    x[::17, 5] = -0.0
    x[::19] = 0.0
    x[::23, :4] = np.float32(1e-45)  # the smallest subnormal
    # rows of subnormals only: a peak whose float32 reciprocal overflows
    x[::29] = (np.float32(1e-45) * rng.integers(-40, 41, size=(len(x[::29]), 9))
               ).astype(np.float32)
    # rows of huge values: a peak whose float32 reciprocal is subnormal
    x[5::37] = (rng.normal(size=(len(x[5::37]), 9)) * 2.0 ** 120).astype(np.float32)
    return x


def numpy_scaled(x: np.ndarray) -> np.ndarray:
    rows = x.astype(np.float64)
    peak = np.abs(rows).max(axis=1)
    return rows / np.where(peak == 0, 1, peak)[:, None]


def test_scaling_is_the_division_bit_for_bit():
    for seed in range(3):
        x = adversarial_rows(20_000, seed)
        out = np.empty(x.shape)
        assert fused.scale_rows(x, out, ZEROS) == len(x)
        expected = numpy_scaled(x)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))


def test_non_finite_rows_are_skipped_in_order():
    x = adversarial_rows(1000, 4)
    x[5, 2], x[6, 0], x[7, 8] = np.nan, np.inf, -np.inf
    out = np.empty(x.shape)
    assert fused.scale_rows(x, out, ZEROS) == 997
    keep = np.isfinite(x).all(axis=1)
    np.testing.assert_array_equal(out[:997], numpy_scaled(x[keep]))


def projection_reference(scaled: np.ndarray, mean: np.ndarray, components: np.ndarray):
    """The FMA chain in exact rational arithmetic, rounded once per step."""
    out = np.empty((len(scaled), len(components)))
    for i, row in enumerate(scaled):
        centred = [Fraction(float(v - m)) for v, m in zip(row, mean, strict=True)]
        for k, w in enumerate(components):
            acc = float(centred[0] * Fraction(float(w[0])))
            for j in range(1, len(w)):
                acc = float(centred[j] * Fraction(float(w[j])) + Fraction(acc))
            out[i, k] = acc
    return out


def basis(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=9) * 0.05, np.linalg.qr(rng.normal(size=(9, 9)))[0]


def test_projection_is_the_fma_chain_and_close_to_blas():
    x = adversarial_rows(300, 5)
    mean, components = basis(6)
    out = np.empty((len(x), 9))
    assert fused.scale_project(x, *fused.as_tuples(mean, components), out) == len(x)
    scaled = numpy_scaled(x)
    np.testing.assert_array_equal(out, projection_reference(scaled, mean, components))
    np.testing.assert_allclose(out, (scaled - mean) @ components.T, rtol=0, atol=1e-14)


def segments(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


def test_moments_and_range_kernels():
    x = adversarial_rows(50_000, 7)
    x[100, 4] = np.nan
    bounds = segments(len(x), 8)
    kept = np.zeros(len(bounds) - 1, np.int64)
    total, products = np.zeros(9), np.zeros((9, 9))
    fused.moments(x, bounds, kept, total, products, ZEROS)
    finite = np.isfinite(x).all(axis=1)
    expected_kept = np.add.reduceat(finite.astype(np.int64), bounds[:-1])
    np.testing.assert_array_equal(kept, expected_kept)
    scaled = numpy_scaled(x[finite])
    np.testing.assert_allclose(total, scaled.sum(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(np.triu(products), np.triu(scaled.T @ scaled), rtol=1e-12,
                               atol=1e-9)

    mean, components = basis(9)
    projected = np.empty((len(x), 9))
    count = fused.scale_project(x, *fused.as_tuples(mean, components), projected)
    projected = projected[:count]
    kept[:] = 0
    low, high = np.full(9, np.inf), np.full(9, -np.inf)
    run_range(x, bounds, kept, mean, components, low, high)
    np.testing.assert_array_equal(kept, expected_kept)
    np.testing.assert_array_equal(low, projected.min(axis=0))
    np.testing.assert_array_equal(high, projected.max(axis=0))


def run_range(x, bounds, kept, mean, components, low, high):
    fused.coefficient_range(x, bounds, kept, *fused.as_tuples(mean, components),
                            *fused.as_tuples(mean, components, np.float32),
                            fused.screen_slack(mean, components), low, high)


def run_histograms(x, bounds, rows, n_rows, mean, components, edges, density_edges):
    scales, tolerances = fused.bin_scales(edges)
    density_scales, density_tolerances = fused.bin_scales(density_edges)
    counts = np.zeros((n_rows, *np.shape(edges)[:1], edges.shape[1] - 1), np.int64)
    density = np.zeros((density_edges.shape[1] - 1) ** 2, np.int64)
    kept = np.zeros(len(bounds) - 1, np.int64)
    scales = np.concatenate([scales, density_scales])
    tolerances = np.concatenate([tolerances, density_tolerances])
    screen = fused.screen_bins(edges, density_edges, scales, tolerances,
                               fused.screen_slack(mean, components))
    fused.histograms(x, bounds, rows, kept, *fused.as_tuples(mean, components), edges,
                     scales, tolerances, counts, density_edges[:1], density_edges[1:],
                     density, *fused.as_tuples(mean, components, np.float32), screen)
    return counts, density.reshape(density_edges.shape[1] - 1, -1), kept


def numpy_histograms(projected, segment, rows, n_rows, edges, density_edges):
    expected = np.zeros((n_rows, *edges.shape), np.int64)[..., :-1]
    for grouping in range(rows.shape[1]):
        row_of = rows[segment, grouping]
        for r in np.unique(row_of[row_of >= 0]):
            for k in range(len(edges)):
                expected[r, k] += np.histogram(projected[row_of == r, k], edges[k])[0]
    density = np.histogram2d(projected[:, 0], projected[:, 1], list(density_edges))[0]
    return expected, density


def test_histograms_equal_np_histogram():
    x = adversarial_rows(40_000, 10)
    bounds = segments(len(x), 11)
    n_segments = len(bounds) - 1
    rng = np.random.default_rng(12)
    rows = np.stack([rng.integers(0, 3, n_segments), rng.integers(3, 8, n_segments),
                     np.where(rng.random(n_segments) < 0.2, -1, 8)], axis=1).astype(np.int64)
    mean, components = basis(13)
    projected = np.empty((len(x), 9))
    fused.scale_project(x, *fused.as_tuples(mean, components), projected)
    edges = np.repeat(bin_edges(projected.min(), projected.max(), 70), 9, axis=0)
    density_edges = bin_edges(projected.min(axis=0)[:2], projected.max(axis=0)[:2], 100)
    counts, density, kept = run_histograms(x, bounds, rows, 9, mean, components, edges,
                                           density_edges)
    np.testing.assert_array_equal(kept, np.diff(bounds))
    segment = np.repeat(np.arange(n_segments), np.diff(bounds))
    expected, expected_density = numpy_histograms(projected, segment, rows, 9, edges,
                                                  density_edges)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(density, expected_density)


def test_values_on_and_next_to_edges():
    """Identity basis: the coefficients are the scaled values, set on the edges."""
    edges = np.repeat(np.linspace(-1, 1, 65)[None, :], 9, axis=0)  # float32 edges
    grid = np.linspace(-1, 1, 65).astype(np.float32)
    values = np.concatenate([grid, np.nextafter(grid, np.float32(-2)),
                             np.nextafter(grid, np.float32(2))])
    values = values[(values >= -1) & (values <= 1)]
    rng = np.random.default_rng(14)
    x = rng.choice(values, size=(5000, 9)).astype(np.float32)
    x[:, 4] = 1.0  # the peak: the scaled values are the values themselves
    x[::2, 4] = -1.0
    bounds = np.array([0, 2000, 5000], np.int64)
    rows = np.array([[0], [1]], np.int64)
    mean, components = np.zeros(9), np.eye(9)
    density_edges = np.stack([np.linspace(-1, 1, 33)] * 2)
    counts, density, _ = run_histograms(x, bounds, rows, 2, mean, components, edges,
                                        density_edges)
    projected = x.astype(np.float64)
    segment = np.repeat([0, 1], [2000, 3000])
    expected, expected_density = numpy_histograms(projected, segment, rows, 2, edges,
                                                  density_edges)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(density, expected_density)


def test_bin_scales_tolerance_and_fallback():
    scales, tolerances = fused.bin_scales(bin_edges([-1.5, 3.0], [2.5, 3.0], 70))
    assert np.all(scales > 0) and np.all(tolerances < 1e-8)
    # a range far from zero: the edges deviate from the estimate by more, still usable
    scales, tolerances = fused.bin_scales(bin_edges(1e9, 1e9 + 1e-3, 70))
    assert scales[0] > 0 and tolerances[0] < 0.25
    # a range the estimate cannot serve: every value goes to the edge search
    scales, tolerances = fused.bin_scales(bin_edges(1e15, 1e15 + 1, 70))
    assert tolerances[0] == 1.0 and scales[0] == 0.0


def test_direct_reads_equal_h5py(zoo_db):
    db = filterdb.open(zoo_db)
    shards = sorted(layout.shards_dir(db.path).glob("*.h5"))
    rng = np.random.default_rng(15)
    for path in shards[:4]:
        where = direct.extents(path, layout.FILTERS)
        assert where is not None
        with h5py.File(path, "r") as handle:
            stored = handle[layout.FILTERS][...]
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(20):
                start, stop = np.sort(rng.integers(0, len(stored) + 1, 2))
                out = np.empty((stop - start, 3, 3), np.float32)
                direct.read_rows(fd, where, int(start), int(stop), out)
                np.testing.assert_array_equal(out, stored[start:stop])
            with pytest.raises(IndexError):
                direct.read_rows(fd, where, 0, len(stored) + 1,
                                 np.empty((len(stored) + 1, 3, 3), np.float32))
        finally:
            os.close(fd)


def test_threads_do_not_change_results(zoo_db):
    one = analyze(zoo_db, by=["Task", "depth"], chunk_rows=500, threads=1)
    two = analyze(zoo_db, by=["Task", "depth"], chunk_rows=500, threads=2)
    np.testing.assert_array_equal(one.basis.components, two.basis.components)
    np.testing.assert_array_equal(one.bin_edges, two.bin_edges)
    np.testing.assert_array_equal(one.density[0], two.density[0])
    for name in ("Task", "depth"):
        np.testing.assert_array_equal(one.groupings[name].raw_counts,
                                      two.groupings[name].raw_counts)


def test_non_finite_rows_are_skipped_by_every_pass():
    """The range and histogram passes find non-finite rows from their NaN coefficients,
    the moments pass from the block's bit patterns: all skip exactly those rows."""
    x = adversarial_rows(6000, 15)
    for row, column, value in [(3, 0, np.nan), (130, 8, np.inf), (131, 2, -np.inf),
                               (2000, 4, np.nan), (2000, 5, np.inf), (5999, 1, np.nan)]:
        x[row, column] = value
    x[4000:4008] = np.inf  # a whole group of eight
    finite = np.isfinite(x).all(axis=1)
    bounds = segments(len(x), 16)
    rows = (np.arange(len(bounds) - 1) % 3)[:, None].astype(np.int64)
    mean, components = basis(17)
    projected = np.empty((len(x), 9))
    assert fused.scale_project(x, *fused.as_tuples(mean, components), projected) \
        == finite.sum()
    projected = projected[:finite.sum()]
    edges = np.repeat(bin_edges(projected.min(), projected.max(), 70), 9, axis=0)
    density_edges = bin_edges(projected.min(axis=0)[:2], projected.max(axis=0)[:2], 50)
    counts, density, kept = run_histograms(x, bounds, rows, 3, mean, components, edges,
                                           density_edges)
    expected_kept = np.add.reduceat(finite.astype(np.int64), bounds[:-1])
    np.testing.assert_array_equal(kept, expected_kept)
    segment = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))[finite]
    expected, expected_density = numpy_histograms(projected, segment, rows, 3, edges,
                                                  density_edges)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(density, expected_density)
    kept = np.zeros(len(bounds) - 1, np.int64)
    low, high = np.full(9, np.inf), np.full(9, -np.inf)
    run_range(x, bounds, kept, mean, components, low, high)
    np.testing.assert_array_equal(kept, expected_kept)
    np.testing.assert_array_equal(low, projected.min(axis=0))
    np.testing.assert_array_equal(high, projected.max(axis=0))


@pytest.mark.parametrize("d", [3, 4, 25])
def test_other_kernel_sizes(d):
    """Rows of other lengths than 9 (1x3, 2x2, 5x5 kernels) take the plain loops."""
    rng = np.random.default_rng(d)
    x = (rng.normal(size=(1500, d)) * np.exp2(rng.integers(-30, 30, size=(1500, 1))))
    x = x.astype(np.float32)
    x[::9, 0] = -0.0
    x[::31] = 0.0
    x[7, d - 1], x[700, 0] = np.nan, -np.inf
    finite = np.isfinite(x).all(axis=1)
    zeros = (0.0,) * d
    out = np.empty(x.shape)
    assert fused.scale_rows(x, out, zeros) == finite.sum()
    scaled = numpy_scaled(x[finite])
    np.testing.assert_array_equal(out[:finite.sum()], scaled)
    np.testing.assert_array_equal(np.signbit(out[:finite.sum()]), np.signbit(scaled))
    mean = rng.normal(size=d) * 0.05
    components = np.linalg.qr(rng.normal(size=(d, d)))[0]
    projected = np.empty(x.shape)
    assert fused.scale_project(x, *fused.as_tuples(mean, components), projected) \
        == finite.sum()
    np.testing.assert_allclose(projected[:finite.sum()], (scaled - mean) @ components.T,
                               rtol=0, atol=1e-13)
    bounds = np.array([0, 500, 1100, 1500], np.int64)
    kept = np.zeros(3, np.int64)
    total, products = np.zeros(d), np.zeros((d, d))
    fused.moments(x, bounds, kept, total, products, zeros)
    np.testing.assert_array_equal(kept, np.add.reduceat(finite.astype(np.int64), bounds[:-1]))
    np.testing.assert_allclose(total, scaled.sum(axis=0), rtol=1e-12, atol=1e-9)
    exact = projected[:finite.sum()]
    kept[:] = 0
    low, high = np.full(d, np.inf), np.full(d, -np.inf)
    run_range(x, bounds, kept, mean, components, low, high)
    np.testing.assert_array_equal(low, exact.min(axis=0))
    np.testing.assert_array_equal(high, exact.max(axis=0))
    edges = np.repeat(bin_edges(exact.min(), exact.max(), 70), d, axis=0)
    density_edges = bin_edges(exact.min(axis=0)[:2], exact.max(axis=0)[:2], 40)
    rows = np.array([[0], [1], [0]], np.int64)
    counts, density, kept = run_histograms(x, bounds, rows, 2, mean, components, edges,
                                           density_edges)
    segment = np.repeat(np.arange(3), np.diff(bounds))[finite]
    expected, expected_density = numpy_histograms(exact, segment, rows, 2, edges,
                                                  density_edges)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(density, expected_density)


@pytest.mark.parametrize("d", [9, 25])
def test_screen_error_is_within_its_slack(d):
    """The float32 screen's coefficients lie within ``screen_slack`` of the exact ones,
    for adversarial rows and a centre and components with large entries."""
    import numba

    from filterdb.analysis.fused import BLOCK

    @numba.njit
    def screen_coefficients(x, mean32, components32):
        raw = np.empty(d * BLOCK, np.float32)
        t32, c32 = np.empty(d * BLOCK, np.float32), np.empty(d * BLOCK, np.float32)
        top, y = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
        excess = np.empty(BLOCK, np.float32)
        out = np.empty((x.shape[0], d), np.float32)
        for a in range(0, x.shape[0], BLOCK):
            m = fused._transpose(x, a, min(a + BLOCK, x.shape[0]), raw, d)
            fused._scale_centre32(raw, m, top, y, mean32, t32, excess)
            fused._project32(t32, m, components32, c32)
            for k in range(d):
                for r in range(m):
                    out[a + r, k] = c32[k * BLOCK + r]
        return out

    rng = np.random.default_rng(d)
    x = adversarial_rows(20_000, d)[:, :9] if d == 9 else \
        (rng.normal(size=(20_000, d)) * np.exp2(rng.integers(-30, 30, (20_000, 1))))
    x = np.ascontiguousarray(x, dtype=np.float32)
    peaks = np.abs(x.astype(np.float64)).max(axis=1)
    x = x[(peaks == 0) | ((peaks >= 2.0 ** -100) & (peaks <= 2.0 ** 100))]  # others: exact
    mean = rng.uniform(-1, 1, d)
    components = np.linalg.qr(rng.normal(size=(d, d)))[0] * rng.uniform(0.5, 2, (d, 1))
    exact = np.empty(x.shape)
    fused.scale_project(x, *fused.as_tuples(mean, components), exact)
    screened = screen_coefficients(x, *fused.as_tuples(mean, components, np.float32))
    error = np.abs(screened.astype(np.float64) - exact).max(axis=0)
    slack = fused.screen_slack(mean, components)
    assert np.all(error <= slack / 2), (error, slack)
    assert np.all(error > 0)  # the screen is approximate: the bound is not vacuous
