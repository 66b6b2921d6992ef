"""Fused per-block kernels of the analysis passes (numba, nogil): scale, project, bin, count.

One call takes a block of raw float32 filters (rows ``(m, d)``, as read from a shard)
cut into segments (consecutive rows that share their group codes) and does all of a
pass's work on it in one sweep: skip non-finite rows, scale by the peak, centre and
project, fold into the pass's statistic. Rows go through small transposed blocks
(``d x BLOCK``: the raw float32 values, then the float64 ones) so that every step is a
loop over rows the compiler vectorises; the flat blocks are indexed at compile-time
offsets (``j * BLOCK + r``), so those loops need no run-time alias checks.

Non-finite rows are found without a test per value where possible: the moments pass
tests a block's bit patterns in one vectorised sweep and checks rows one by one only
in a block that holds a non-finite value; the range and histogram passes test nothing
before the projection, because every coefficient of a row with a NaN or an infinity
is NaN (see :func:`_project_fold`), and drop or skip those rows afterwards.

The results are exactly those of the step-by-step numpy formulation:

scaling
    ``x / max|x|`` in float64 (an all-zero row stays zero). Computed without a
    division per value: ``q = x * y`` with ``y = 1 / p``, then one correction
    ``fma(-fma(q, p, -x), y, q)``, i.e. ``q + (x - q p) y`` by two FMAs (the
    remainder is taken negated, ``q p - x``, so that it is +0 when it vanishes and a
    zero ``x`` keeps its sign without a branch). For float32 inputs this is the correctly
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
of the kernel's choosing (as BLAS does), not bit for bit. So their rows are scaled by
one multiplication with the peak's reciprocal (within an ulp of the quotient), without
the correction that the exact passes need.
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


#: Rows per vector transposition (:func:`_transpose8x9`).
TRANSPOSE_ROWS = 8


@intrinsic
def _transpose8x9(typingctx, flat, offset, raw, column):
    """``raw[j * BLOCK + column + i] = flat[offset + 9 * i + j]`` for ``i < 8``, ``j < 9``:
    eight 3x3 filters (72 consecutive float32) into eight columns of ``raw``.

    One 72-lane load and nine shuffles (``vpermt2ps`` and blends on AVX-512), where the
    loop that numba would write moves value by value: a stride of 9 is more than the
    vectoriser's interleaving handles.
    """
    signature = types.void(flat, types.intp, raw, types.intp)

    def codegen(context, builder, sig, args):
        single = ir.FloatType()
        source = context.make_array(sig.args[0])(context, builder, args[0])
        target = context.make_array(sig.args[2])(context, builder, args[2])
        wide = ir.VectorType(single, 72)
        values = builder.load(builder.bitcast(builder.gep(source.data, [args[1]]),
                                              wide.as_pointer()), align=4)
        undefined = ir.Constant(wide, ir.Undefined)
        lanes = ir.VectorType(single, TRANSPOSE_ROWS)
        for j in range(9):
            mask = ir.Constant(ir.VectorType(ir.IntType(32), TRANSPOSE_ROWS),
                               [j + 9 * i for i in range(TRANSPOSE_ROWS)])
            column = builder.shuffle_vector(values, undefined, mask)
            at = builder.add(args[3], ir.Constant(args[3].type, j * BLOCK))
            builder.store(column, builder.bitcast(builder.gep(target.data, [at]),
                                                  lanes.as_pointer()), align=4)
        return context.get_dummy_value()

    return signature, codegen


#: Largest finite float32: a value is finite exactly when its magnitude is at most this.
FLOAT32_MAX = np.float32(np.finfo(np.float32).max)


@numba.njit(cache=True, nogil=True, inline="always")
def _finite_block(x, a, m, d):  # pragma: no cover - compiled
    """Whether rows ``a:a + m`` of ``x`` hold only finite values: one vectorised sweep
    over their bit patterns in memory order (a magnitude's bits, as an integer, are
    below those of infinity exactly for finite values)."""
    bits = x.reshape(x.shape[0] * d)[a * d:(a + m) * d].view(np.int32)
    worst = np.int32(0)
    magnitude = np.int32(0x7FFFFFFF)
    for i in range(m * d):
        worst = max(worst, bits[i] & magnitude)
    return worst < np.int32(0x7F800000)


@numba.njit(cache=True, nogil=True, inline="always")
def _transpose(x, a, b, raw, d):  # pragma: no cover - compiled
    """Rows ``a:b`` of ``x`` into the columns of ``raw``; returns how many.

    ``raw`` is a flat float32 buffer holding value j of column r at ``j * BLOCK + r``:
    with the compile-time ``BLOCK`` and ``d`` (the row length), every access of a
    block's loops is at a constant offset from one base, so the loops over columns
    vectorise without run-time alias checks.
    """
    m = b - a
    done = 0
    if d == 9:  # 3x3 filters, eight at a time
        flat = x.reshape(x.shape[0] * d)
        while done + TRANSPOSE_ROWS <= m:
            _transpose8x9(flat, (a + done) * d, raw, done)
            done += TRANSPOSE_ROWS
    rows = x[a:b]  # indices from 0: no wrap-around of negative indices in the loop
    for r in range(done, m):
        for j in range(d):
            raw[j * BLOCK + r] = rows[r, j]
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _load(x, a, b, raw, d):  # pragma: no cover - compiled
    """:func:`_transpose` of the finite rows ``a:b`` of ``x``; returns how many.

    A block is checked for non-finite values as a whole; only one that holds some is
    checked row by row and compacted.
    """
    m = _transpose(x, a, b, raw, d)
    if _finite_block(x, a, m, d):
        return m
    kept = 0
    for r in range(m):
        finite = True
        for j in range(d):
            finite &= abs(raw[j * BLOCK + r]) <= FLOAT32_MAX
        if finite:
            for j in range(d):
                raw[j * BLOCK + kept] = raw[j * BLOCK + r]
            kept += 1
    return kept


@numba.njit(cache=True, nogil=True, inline="always")
def _peaks(raw, m, top, peak, recip, d):  # pragma: no cover - compiled
    """Largest absolute value of columns ``0:m`` of ``raw`` into ``peak`` (float64; 1 for
    a zero column, which stays zero) and its reciprocal into ``recip``. The maximum is
    taken in float32 (``top``), exactly as in float64: the conversion is exact."""
    for r in range(m):
        top[r] = np.float32(0.0)
    for j in range(d):
        for r in range(m):
            top[r] = max(top[r], abs(raw[j * BLOCK + r]))
    for r in range(m):
        p = np.float64(top[r])
        p = 1.0 if p == 0.0 else p
        peak[r] = p
        recip[r] = 1.0 / p


@numba.njit(cache=True, nogil=True, inline="always")
def _quotient(value, p, y):  # pragma: no cover - compiled
    """``value / p`` correctly rounded, from ``y = 1 / p`` (see the module).

    ``q - (q p - value) y`` with ``q = value y``, by two FMAs. The negated remainder
    ``q p - value`` is +0 when it vanishes, so no branch is needed: the result is
    ``q`` then, and a zero ``value`` keeps its sign (``-0 - (+0) y`` is ``-0``).
    """
    q = value * y
    return fma(-fma(q, p, -value), y, q)


@numba.njit(cache=True, nogil=True, inline="always")
def _scale(raw, m, top, peak, recip, s, d):  # pragma: no cover - compiled
    """``s[j, r]`` = value j of column r of ``raw`` divided by the column's peak."""
    _peaks(raw, m, top, peak, recip, d)
    for j in range(d):
        for r in range(m):
            s[j, r] = _quotient(np.float64(raw[j * BLOCK + r]), peak[r], recip[r])


@numba.njit(cache=True, nogil=True, inline="always")
def _scale_sum(raw, m, top, peak, recip, s, d):  # pragma: no cover - compiled
    """``s[j, r]`` = value j of column r of ``raw`` times the reciprocal of the column's
    peak: within an ulp of the quotient, for sums whose order is free anyway."""
    _peaks(raw, m, top, peak, recip, d)
    for j in range(d):
        for r in range(m):
            s[j, r] = np.float64(raw[j * BLOCK + r]) * recip[r]


@numba.njit(cache=True, nogil=True, inline="always")
def _scale_centre(raw, m, top, peak, recip, mean, t):  # pragma: no cover - compiled
    """``t[j * BLOCK + r]`` = the scaled value minus ``mean[j]`` (``mean`` a tuple)."""
    d = len(mean)
    _peaks(raw, m, top, peak, recip, d)
    for j in range(d):
        centre = mean[j]
        for r in range(m):
            value = _quotient(np.float64(raw[j * BLOCK + r]), peak[r], recip[r])
            t[j * BLOCK + r] = value - centre


@numba.njit(cache=True, nogil=True, inline="always")
def _dot(t, r, w):  # pragma: no cover - compiled
    """Centred column r of ``t`` on the component ``w``: ``t[0, r] * w[0]``, then
    ``fma(t[j, r], w[j], acc)`` for j = 1 .. d-1 (the module's FMA chain)."""
    acc = t[r] * w[0]
    for j in range(1, len(w)):
        acc = fma(t[j * BLOCK + r], w[j], acc)
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _project(t, m, components, c):  # pragma: no cover - compiled
    """``c[k * BLOCK + r]`` = centred column r of ``t`` on component k (FMA chain, see
    the module).

    ``components`` (rows of d floats) is a tuple: its lengths are compile-time
    constants, so the sum over j unrolls inside the vector loop over r.
    """
    for k in range(len(components)):
        w = components[k]
        for r in range(m):
            c[k * BLOCK + r] = _dot(t, r, w)


@numba.njit(cache=True, nogil=True, inline="always")
def _project_fold(t, m, components, low, high):  # pragma: no cover - compiled
    """:func:`_project` folded straight into ``low``/``high`` (k, BLOCK) column by column
    (an element-wise min and max, which vectorise where a running reduction would not;
    :func:`_reduce` folds the columns at the end); returns how many columns gave NaN.

    The columns may hold rows with a non-finite value: every coefficient of such a row
    is NaN (its scaled values hold a NaN: an infinite peak makes ``y`` zero and
    ``inf * 0`` NaN), which no comparison of the fold lets through.
    """
    nan = 0
    for k in range(len(components)):
        w = components[k]
        for r in range(m):
            acc = _dot(t, r, w)
            low[k, r] = acc if acc < low[k, r] else low[k, r]
            high[k, r] = acc if acc > high[k, r] else high[k, r]
            if k == 0:
                nan += acc != acc
    return nan


@numba.njit(cache=True, nogil=True, inline="always")
def _drop_nan(c, n_k, m):  # pragma: no cover - compiled
    """Drop the columns of ``c`` (``c[k * BLOCK + r]``) whose first coefficient is NaN
    (rows with a non-finite value, see :func:`_project_fold`); returns how many are
    left. One vectorised test per block; compaction only when it finds one."""
    nan = 0
    for r in range(m):
        nan += c[r] != c[r]
    if nan == 0:
        return m
    kept = 0
    for r in range(m):
        if c[r] == c[r]:
            for k in range(n_k):
                c[k * BLOCK + kept] = c[k * BLOCK + r]
            kept += 1
    return kept


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
def _reduce(low_columns, high_columns, low, high):  # pragma: no cover - compiled
    """Fold the columns of ``low_columns``/``high_columns`` into ``low``/``high``."""
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


@numba.njit(cache=True, nogil=True, inline="always")
def _buffers(d, n_k):  # pragma: no cover - compiled
    """Per-block scratch: raw values, centred values, projections, peaks."""
    return (np.empty(d * BLOCK, np.float32), np.empty(d * BLOCK), np.empty(n_k * BLOCK),
            np.empty(BLOCK, np.float32), np.empty(BLOCK), np.empty(BLOCK))


@numba.njit(cache=True, nogil=True)
def scale_project(x, mean, components, out):  # pragma: no cover - compiled
    """Scaled, centred projections of the finite rows of ``x`` (float32 (n, d)) into
    ``out`` (n, k), in order; returns how many rows were finite.

    ``mean`` and ``components`` as tuples (:func:`as_tuples`).
    """
    d = len(mean)
    n_k = len(components)
    raw, t, c, top, peak, recip = _buffers(d, n_k)
    done = 0
    for a in range(0, x.shape[0], BLOCK):
        m = _load(x, a, min(a + BLOCK, x.shape[0]), raw, d)
        _scale_centre(raw, m, top, peak, recip, mean, t)
        _project(t, m, components, c)
        for r in range(m):
            for k in range(n_k):
                out[done + r, k] = c[k * BLOCK + r]
        done += m
    return done


@numba.njit(cache=True, nogil=True)
def scale_rows(x, out, zeros):  # pragma: no cover - compiled
    """Peak-scaled finite rows of ``x`` (float32 (n, d)) into ``out`` (float64), in
    order; returns how many. ``zeros``: a tuple of d floats (sets d at compile time)."""
    d = len(zeros)
    raw, _, _, top, peak, recip = _buffers(d, 1)
    s = np.empty((d, BLOCK))
    done = 0
    for a in range(0, x.shape[0], BLOCK):
        m = _load(x, a, min(a + BLOCK, x.shape[0]), raw, d)
        _scale(raw, m, top, peak, recip, s, d)
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
def moments(x, bounds, kept, total, products, zeros):  # pragma: no cover - compiled
    """Pass 1 over a block: count, sum and sums of products of the scaled rows.

    Parameters
    ----------
    x : float32 (n, d)
        Raw filters.
    bounds : int64 (segments + 1,)
        Segment boundaries in rows of ``x``.
    kept : int64 (segments,)
        Incremented by each segment's finite rows.
    total : float64 (d,)
    products : float64 (d, d)
        Upper triangle (``j <= k``) accumulated; the caller mirrors it.
    zeros : tuple of d floats
        Sets d at compile time.
    """
    d = len(zeros)
    raw, _, _, top, peak, recip = _buffers(d, 1)
    s = np.empty((d, BLOCK))
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _load(x, a, min(a + BLOCK, bounds[g + 1]), raw, d)
            kept[g] += m
            _scale_sum(raw, m, top, peak, recip, s, d)
            _accumulate(s, m, total, products, zeros)


@numba.njit(cache=True, nogil=True)
def coefficient_range(x, bounds, kept, mean, components, low, high):  # pragma: no cover
    """Pass 2 over a block: per-component min and max of the projections.

    ``x``, ``bounds``, ``kept`` as in :func:`moments`; ``mean``, ``components`` as
    tuples (:func:`as_tuples`); ``low``/``high`` (k,) updated.
    """
    d = len(mean)
    n_k = len(components)
    raw, t, c, top, peak, recip = _buffers(d, n_k)
    low_columns, high_columns = np.full((n_k, BLOCK), np.inf), np.full((n_k, BLOCK), -np.inf)
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _transpose(x, a, min(a + BLOCK, bounds[g + 1]), raw, d)
            _scale_centre(raw, m, top, peak, recip, mean, t)
            kept[g] += m - _project_fold(t, m, components, low_columns, high_columns)
    _reduce(low_columns, high_columns, low, high)


@numba.njit(cache=True, nogil=True, inline="always")
def _estimate(c, m, k, lo, scale, tolerance, index, near):  # pragma: no cover - compiled
    """Bin estimates ``floor(pos)`` of ``c[k * BLOCK + r]`` (``r < m``) into ``index``;
    ``near[r]`` is set where ``pos`` lies within the tolerance of an integer (see
    :func:`bin_scales`)."""
    for r in range(m):
        pos = (c[k * BLOCK + r] - lo) * scale
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
        Edges of the c0-c1 density; ``density`` int64 (x bins * y bins,), row-major, or
        empty: no density.
    """
    d = len(mean)
    n_k = len(components)
    bins = edges.shape[1] - 1
    raw, t, c, top, peak, recip = _buffers(d, n_k)
    index = np.empty((n_k + 2, BLOCK), dtype=np.int64)
    near = np.zeros(BLOCK, dtype=np.bool_)
    table = np.zeros((LANES, n_k, bins), dtype=np.int64)
    y_bins = y_edges.shape[1] - 1
    with_density = density.shape[0] > 0
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _transpose(x, a, min(a + BLOCK, bounds[g + 1]), raw, d)
            _scale_centre(raw, m, top, peak, recip, mean, t)
            _project(t, m, components, c)
            m = _drop_nan(c, n_k, m)
            kept[g] += m
            for r in range(m):
                near[r] = False
            for k in range(n_k):
                _estimate(c, m, k, edges[k, 0], scales[k], tolerances[k], index[k], near)
            if with_density:
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
                            index[k, r] = _bin(c[k * BLOCK + r], edges, k, index[k, r])
                        if with_density:
                            index[n_k, r] = _bin(c[r], x_edges, 0, index[n_k, r])
                            index[n_k + 1, r] = _bin(c[BLOCK + r], y_edges, 0,
                                                     index[n_k + 1, r])
            for k in range(n_k):
                for r in range(m):
                    table[r & (LANES - 1), k, index[k, r]] += 1
            if with_density:
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
