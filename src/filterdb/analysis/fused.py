"""Fused per-block kernels of the analysis passes (numba, nogil): scale, project, bin, count.

One call takes a block of raw float32 filters (rows ``(m, d)``, as read from a shard)
cut into segments (consecutive rows that share their group codes) and does all of a
pass's work on it in one sweep: skip non-finite rows, scale by the peak, centre and
project, fold into the pass's statistic. Rows go through small transposed float64
blocks (``d x BLOCK``) so that every step is a loop over rows the compiler vectorises.

The results are exactly those of the step-by-step numpy formulation:

scaling
    ``x / max|x|`` in float64 (an all-zero row stays zero). Computed without a
    division per value: ``q = x * y`` with ``y = 1 / p``, then one correction
    ``q + fma(-q, p, x) * y`` by FMA. For float32 inputs this is the correctly
    rounded quotient, i.e. bit-identical to the division: the corrected value is
    within ``2**-104`` (relative) of ``x / p``, while a quotient of two 24-bit
    numbers is at least ``2**-78`` (relative) away from any midpoint between two
    doubles (``|x - p m| >= 2**(e_p + e_m)`` for a 54-bit midpoint ``m``), so both
    round to the same double. Only float32 data takes this path.
projection
    ``c_k = (s_0 - mean_0) * w_k0`` then ``c_k = fma(s_j - mean_j, w_kj, c_k)`` for
    ``j = 1 .. d-1``: the dot product as a chain of fused multiply-adds in column
    order, which is what OpenBLAS's gemm kernels compute for ``(s - mean) @ w.T``
    (except, there, on a remainder row of an odd-sized call); here it does not
    depend on block or chunk sizes.
bins
    The rule of :mod:`filterdb.analysis.stats`: an estimate
    ``floor((c - lo) * (bins / (hi - lo)))``, clamped, then moved until
    ``edges[i] <= c < edges[i + 1]`` (last bin closed) holds, so the bin is the
    one the edges define whatever the estimate's rounding.

The moments (pass 1) are sums: they are accumulated per block in float64 in an order
of the kernel's choosing (as BLAS does), not bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Rows per transposed block: a few d x BLOCK float64 temporaries stay in the L1 cache.
BLOCK = 128
#: Copies of the per-segment bin tables: consecutive rows that fall into one bin
#: increment different counters instead of waiting on one another.
LANES = 4


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma.f64``)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):
        double = ir.DoubleType()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(double, [double, double, double]), "llvm.fma.f64")
        return builder.call(function, args)

    return signature, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _load(x, a, b, s, check, d):  # pragma: no cover - compiled
    """Finite rows ``a:b`` of ``x`` into the columns of ``s`` (float64); returns how many.

    ``d`` is the row length as a compile-time constant, so the loops over it unroll and
    the loops over rows vectorise.
    """
    m = b - a
    for r in range(m):
        for j in range(d):
            s[j, r] = x[a + r, j]
    # value * 0 is NaN exactly for NaN and infinities
    for r in range(m):
        check[r] = 0.0
    for j in range(d):
        for r in range(m):
            check[r] += s[j, r] * 0.0
    bad = 0
    for r in range(m):
        bad += check[r] != check[r]
    if bad == 0:
        return m
    kept = 0
    for r in range(m):
        if check[r] == check[r]:
            for j in range(d):
                s[j, kept] = s[j, r]
            kept += 1
    return kept


@numba.njit(cache=True, nogil=True, inline="always")
def _scale(s, m, peak, recip, d):  # pragma: no cover - compiled
    """Divide columns ``0:m`` of ``s`` by their largest absolute value (see the module)."""
    for r in range(m):
        peak[r] = 0.0
    for j in range(d):
        for r in range(m):
            peak[r] = max(peak[r], abs(s[j, r]))
    for r in range(m):
        if peak[r] == 0.0:
            peak[r] = 1.0
        recip[r] = 1.0 / peak[r]
    for j in range(d):
        for r in range(m):
            value, p, y = s[j, r], peak[r], recip[r]
            q = value * y
            rest = fma(-q, p, value)
            s[j, r] = q if rest == 0.0 else fma(rest, y, q)


@numba.njit(cache=True, nogil=True, inline="always")
def _project(s, m, mean, components, c):  # pragma: no cover - compiled
    """``c[k, r]`` = centred column r of ``s`` on component k (FMA chain, see the module).

    ``mean`` (d floats) and ``components`` (rows of d floats) are tuples: their lengths
    are compile-time constants, so the sum over j unrolls inside the vector loop over r.
    """
    d = len(mean)
    for k in range(len(components)):
        w = components[k]
        for r in range(m):
            acc = (s[0, r] - mean[0]) * w[0]
            for j in range(1, d):
                acc = fma(s[j, r] - mean[j], w[j], acc)
            c[k, r] = acc


@numba.njit(cache=True, nogil=True, inline="always")
def _bin(value, edges, k, estimate):  # pragma: no cover - compiled
    """Bin of ``value`` by ``edges[k]`` (the module's rule), starting from ``estimate``."""
    last = edges.shape[1] - 2
    e = min(max(estimate, 0), last)
    while e > 0 and value < edges[k, e]:
        e -= 1
    while e < last and value >= edges[k, e + 1]:
        e += 1
    return e


@numba.njit(cache=True, nogil=True, inline="always")
def _fold(c, m, low, high):  # pragma: no cover - compiled
    """Fold columns ``0:m`` of ``c`` into ``low``/``high`` (both (k, BLOCK)) column by
    column: an element-wise min and max, which vectorise where a running reduction
    would not; :func:`_reduce` folds the columns at the end."""
    for k in range(c.shape[0]):
        for r in range(m):
            value = c[k, r]
            low[k, r] = value if value < low[k, r] else low[k, r]
            high[k, r] = value if value > high[k, r] else high[k, r]


@numba.njit(cache=True, nogil=True, inline="always")
def _reduce(low_columns, high_columns, low, high):  # pragma: no cover - compiled
    for k in range(low.shape[0]):
        for r in range(low_columns.shape[1]):
            low[k] = min(low[k], low_columns[k, r])
            high[k] = max(high[k], high_columns[k, r])


def bin_scales(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``edges`` (k, bins + 1): the estimate's scale and its tolerance.

    The estimate of a value's bin is ``pos = (value - lo) * scale`` with
    ``scale = bins / (hi - lo)``. ``pos`` grows monotonically with the value, so if
    every edge ``i`` has ``|pos(edges[i]) - i| <= tol``, a value whose ``pos`` is
    farther than ``tol`` from every integer lies in bin ``floor(pos)`` exactly; the
    kernels search the edges only for the others (values on or next to an edge).
    """
    edges = np.asarray(edges, dtype=np.float64)
    bins = edges.shape[1] - 1
    scales = bins / (edges[:, -1] - edges[:, 0])
    positions = (edges - edges[:, :1]) * scales[:, None]
    deviation = np.abs(positions - np.arange(bins + 1)).max(axis=1)
    usable = np.isfinite(scales) & np.isfinite(deviation) & (deviation < 0.25)
    # slack above the measured deviation; an unusable row sends every value to the search
    tolerances = np.where(usable, deviation + 1e-9, 1.0)
    return np.where(usable, scales, 0.0), tolerances


def as_tuples(mean: np.ndarray, components: np.ndarray) -> tuple[tuple, tuple]:
    """``mean`` and ``components`` as the (nested) float tuples the kernels take."""
    return (tuple(float(v) for v in mean),
            tuple(tuple(float(v) for v in row) for row in components))


@numba.njit(cache=True, nogil=True)
def scale_project(x, mean, components, out):  # pragma: no cover - compiled
    """Scaled, centred projections of the finite rows of ``x`` (float32 (n, d)) into
    ``out`` (n, k), in order; returns how many rows were finite.

    ``mean`` and ``components`` as tuples (:func:`as_tuples`).
    """
    d = len(mean)
    s = np.empty((d, BLOCK))
    c = np.empty((len(components), BLOCK))
    peak, recip, check = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    done = 0
    for a in range(0, x.shape[0], BLOCK):
        m = _load(x, a, min(a + BLOCK, x.shape[0]), s, check, d)
        _scale(s, m, peak, recip, d)
        _project(s, m, mean, components, c)
        for r in range(m):
            for k in range(len(components)):
                out[done + r, k] = c[k, r]
        done += m
    return done


@numba.njit(cache=True, nogil=True)
def scale_rows(x, out, zeros):  # pragma: no cover - compiled
    """Peak-scaled finite rows of ``x`` (float32 (n, d)) into ``out`` (float64), in
    order; returns how many. ``zeros``: a tuple of d floats (sets d at compile time)."""
    d = len(zeros)
    s = np.empty((d, BLOCK))
    peak, recip, check = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    done = 0
    for a in range(0, x.shape[0], BLOCK):
        m = _load(x, a, min(a + BLOCK, x.shape[0]), s, check, d)
        _scale(s, m, peak, recip, d)
        for r in range(m):
            for j in range(d):
                out[done + r, j] = s[j, r]
        done += m
    return done


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _accumulate(s, m, total, products, zeros):  # pragma: no cover - compiled
    """Add sums and sums of products of columns ``0:m`` of ``s`` (order free: sums)."""
    d = len(zeros)
    for j in range(d):
        acc = 0.0
        for r in range(m):
            acc += s[j, r]
        total[j] += acc
        for k in range(j, d):
            acc = 0.0
            for r in range(m):
                acc += s[j, r] * s[k, r]
            products[j, k] += acc


@numba.njit(cache=True, nogil=True)
def moments(x, bounds, kept, total, products, low, high, zeros):  # pragma: no cover
    """Pass 1 over a block: count, sum, sums of products, min and max of scaled rows.

    Parameters
    ----------
    x : float32 (n, d)
        Raw filters.
    bounds : int64 (segments + 1,)
        Segment boundaries in rows of ``x``.
    kept : int64 (segments,)
        Incremented by each segment's finite rows.
    total, low, high : float64 (d,)
    products : float64 (d, d)
        Upper triangle (``j <= k``) accumulated; the caller mirrors it.
    zeros : tuple of d floats
        Sets d at compile time.
    """
    d = len(zeros)
    s = np.empty((d, BLOCK))
    peak, recip, check = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    low_columns, high_columns = np.full((d, BLOCK), np.inf), np.full((d, BLOCK), -np.inf)
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _load(x, a, min(a + BLOCK, bounds[g + 1]), s, check, d)
            kept[g] += m
            _scale(s, m, peak, recip, d)
            _fold(s, m, low_columns, high_columns)
            _accumulate(s, m, total, products, zeros)
    _reduce(low_columns, high_columns, low, high)


@numba.njit(cache=True, nogil=True)
def coefficient_range(x, bounds, kept, mean, components, low, high):  # pragma: no cover
    """Pass 2 over a block: per-component min and max of the projections.

    ``x``, ``bounds``, ``kept`` as in :func:`moments`; ``mean``, ``components`` as
    tuples (:func:`as_tuples`); ``low``/``high`` (k,) updated.
    """
    d = len(mean)
    s = np.empty((d, BLOCK))
    c = np.empty((len(components), BLOCK))
    peak, recip, check = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    n_k = len(components)
    low_columns, high_columns = np.full((n_k, BLOCK), np.inf), np.full((n_k, BLOCK), -np.inf)
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _load(x, a, min(a + BLOCK, bounds[g + 1]), s, check, d)
            kept[g] += m
            _scale(s, m, peak, recip, d)
            _project(s, m, mean, components, c)
            _fold(c, m, low_columns, high_columns)
    _reduce(low_columns, high_columns, low, high)


@numba.njit(cache=True, nogil=True, inline="always")
def _estimate(c, m, k, lo, scale, tolerance, index, near):  # pragma: no cover - compiled
    """Bin estimates ``floor(pos)`` of ``c[k, :m]`` into ``index``; ``near[r]`` is set
    where ``pos`` lies within the tolerance of an integer (see :func:`bin_scales`)."""
    for r in range(m):
        pos = (c[k, r] - lo) * scale
        e = int(pos)
        frac = pos - e
        index[r] = e
        near[r] |= (frac <= tolerance) | (frac >= 1.0 - tolerance)


@numba.njit(cache=True, nogil=True)
def histograms(x, bounds, rows, kept, mean, components, edges, scales, tolerances, counts,
               x_edges, y_edges, density):  # pragma: no cover - compiled
    """Pass 3 over a block: bin the projections, count per group and component.

    Parameters
    ----------
    x, bounds, kept
        As in :func:`moments`.
    rows : int64 (segments, groupings)
        Row of ``counts`` that each segment counts into per grouping (-1: none).
    mean, components
        Tuples (:func:`as_tuples`).
    edges : float64 (k, bins + 1)
        Bin edges per component.
    scales, tolerances : float64 (k + 2,)
        :func:`bin_scales` of the rows of ``edges``, then of ``x_edges``, ``y_edges``.
    counts : int64 (count rows, k, bins)
    x_edges, y_edges : float64 (1, density bins + 1)
        Edges of the c0-c1 density; ``density`` int64 (x bins * y bins,), row-major.
    """
    d = len(mean)
    n_k = len(components)
    bins = edges.shape[1] - 1
    s = np.empty((d, BLOCK))
    c = np.empty((n_k, BLOCK))
    index = np.empty((n_k + 2, BLOCK), dtype=np.int64)
    near = np.zeros(BLOCK, dtype=np.bool_)
    peak, recip, check = np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK)
    table = np.zeros((LANES, n_k, bins), dtype=np.int64)
    y_bins = y_edges.shape[1] - 1
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _load(x, a, min(a + BLOCK, bounds[g + 1]), s, check, d)
            kept[g] += m
            _scale(s, m, peak, recip, d)
            _project(s, m, mean, components, c)
            for r in range(m):
                near[r] = False
            for k in range(n_k):
                _estimate(c, m, k, edges[k, 0], scales[k], tolerances[k], index[k], near)
            _estimate(c, m, 0, x_edges[0, 0], scales[n_k], tolerances[n_k], index[n_k],
                      near)
            _estimate(c, m, 1, y_edges[0, 0], scales[n_k + 1], tolerances[n_k + 1],
                      index[n_k + 1], near)
            unsure = 0
            for r in range(m):
                unsure += near[r]
            if unsure:  # rare: values on or next to an edge, and the range's ends
                for r in range(m):
                    if near[r]:
                        for k in range(n_k):
                            index[k, r] = _bin(c[k, r], edges, k, index[k, r])
                        index[n_k, r] = _bin(c[0, r], x_edges, 0, index[n_k, r])
                        index[n_k + 1, r] = _bin(c[1, r], y_edges, 0, index[n_k + 1, r])
            for k in range(n_k):
                for r in range(m):
                    table[r & (LANES - 1), k, index[k, r]] += 1
            for r in range(m):
                density[index[n_k, r] * y_bins + index[n_k + 1, r]] += 1
        # the segment's rows share their groups: add its table to each grouping's row
        for k in range(n_k):
            for e in range(bins):
                total = 0
                for lane in range(LANES):
                    total += table[lane, k, e]
                    table[lane, k, e] = 0
                if total:
                    for grouping in range(rows.shape[1]):
                        row = rows[g, grouping]
                        if row >= 0:
                            counts[row, k, e] += total
