"""Fused per-block kernels of the analysis passes (numba, nogil): scale, project, bin, count.

One call takes a block of raw float32 filters (rows ``(m, d)``, as read from a shard)
cut into segments (consecutive rows that share their group codes) and does all of a
pass's work on it in one sweep: skip non-finite rows, scale by the peak, centre and
project, fold into the pass's statistic. Rows go through small transposed blocks
(``d x BLOCK``: the raw float32 values, then the float64 ones) so that every step is a
loop over rows the compiler vectorises; the flat blocks are indexed at compile-time
offsets (``j * BLOCK + r``), so those loops need no run-time alias checks.

Non-finite rows are found without a test per value: every pass tests a block's bit
patterns in one vectorised sweep; only a block that holds a non-finite value is
checked row by row (moments) or projected exactly, where every coefficient of such a
row is NaN (see :func:`_drop_nan`), and those rows are dropped.

The range and histogram passes screen a block in float32 first (:func:`_screen_range`,
:func:`_screen_bins`): coefficients in float32, whose error :func:`screen_slack`
bounds, decide every row whose result they settle (a coefficient well inside the
running min and max; a bin position well away from an edge). Only the other rows (a
fraction of a percent) are computed exactly, so the results stay those below, bit
for bit; measured here, the range pass takes about 70 % and the histogram pass about
90 % of the time of their exact versions.

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


#: Peaks the float32 screen scales by: their reciprocals stay normal float32 numbers
#: (others, and so their rows, take the exact path).
SMALLEST_PEAK, LARGEST_PEAK = np.float32(2.0 ** -100), np.float32(2.0 ** 100)
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
def _top(raw, m, top, d):  # pragma: no cover - compiled
    """Largest absolute value of columns ``0:m`` of ``raw`` into ``top`` (float32)."""
    for r in range(m):
        top[r] = np.float32(0.0)
    for j in range(d):
        for r in range(m):
            top[r] = max(top[r], abs(raw[j * BLOCK + r]))


@numba.njit(cache=True, nogil=True, inline="always")
def _peaks(raw, m, top, peak, recip, d):  # pragma: no cover - compiled
    """Largest absolute value of columns ``0:m`` of ``raw`` into ``peak`` (float64; 1 for
    a zero column, which stays zero) and its reciprocal into ``recip``. The maximum is
    taken in float32 (``top``), exactly as in float64: the conversion is exact."""
    _top(raw, m, top, d)
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
def _scale_centre32(raw, m, top, y, mean32, t32, excess):  # pragma: no cover - compiled
    """The screen's version of :func:`_scale_centre`, in float32: ``t32[j * BLOCK + r]``
    = the value times the float32 reciprocal of the peak, minus ``mean32[j]``.

    ``excess[r]`` starts at -inf, or at 0 (an unsure column: the exact path) where the
    peak is nonzero and outside :data:`SMALLEST_PEAK` .. :data:`LARGEST_PEAK`, whose
    reciprocal could overflow float32 or lose precision as a subnormal. Finite columns
    only (see :func:`_finite_block`).
    """
    d = len(mean32)
    _top(raw, m, top, d)
    for r in range(m):
        p = top[r]
        zero = p == np.float32(0.0)
        y[r] = np.float32(1.0) if zero else np.float32(1.0) / p
        unsure = (p < SMALLEST_PEAK or p > LARGEST_PEAK) and not zero
        excess[r] = np.float32(0.0) if unsure else -np.inf
    for j in range(d):
        centre = mean32[j]
        for r in range(m):
            t32[j * BLOCK + r] = raw[j * BLOCK + r] * y[r] - centre


@numba.njit(cache=True, nogil=True, inline="always")
def _dot32(t32, r, w32):  # pragma: no cover - compiled
    """:func:`_dot` in float32 (the screen's estimate of a coefficient)."""
    acc = t32[r] * w32[0]
    for j in range(1, len(w32)):
        acc = t32[j * BLOCK + r] * w32[j] + acc
    return acc


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _screen_range(t32, m, components32, below, above, excess):  # pragma: no cover
    """How many columns of ``t32`` have a float32 coefficient at or beyond its
    component's thresholds ``below``/``above`` (float32 (k,)), or were unsure already
    (``excess``). Only float32 lanes: the loops vectorise at full width."""
    for k in range(len(components32)):
        w = components32[k]
        low, high = below[k], above[k]
        for r in range(m):
            v = _dot32(t32, r, w)
            excess[r] = max(excess[r], max(v - high, low - v))
    hits = 0
    for r in range(m):
        hits += excess[r] >= np.float32(0.0)
    return hits


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _project32(t32, m, components32, c32):  # pragma: no cover - compiled
    """Float32 coefficients of the columns of ``t32`` into ``c32[k * BLOCK + r]``."""
    for k in range(len(components32)):
        w = components32[k]
        for r in range(m):
            c32[k * BLOCK + r] = _dot32(t32, r, w)


@numba.njit(cache=True, nogil=True)
def _estimate32(c, m, lo, sc, tol, last, index, excess):  # pragma: no cover - compiled
    """Bin estimates of the float32 coefficients ``c[:m]`` into ``index`` (int32),
    clamped to ``0 .. last``; ``excess[r]`` raised to 0 or above where a position lies
    within ``tol`` of an integer. Its own function, on 1-D views: the loop vectorises
    (inlined into the screen, it did not)."""
    for r in range(m):
        pos = (c[r] - lo) * sc
        e = np.int32(pos)
        frac = pos - np.float32(e)
        index[r] = min(max(e, np.int32(0)), last)
        excess[r] = max(excess[r], max(tol - frac, frac - (np.float32(1.0) - tol)))


@numba.njit(cache=True, nogil=True)
def _screen_bins(t32, m, components32, origin, scale, tolerance, last, index, excess,
                 c32):  # pragma: no cover - compiled
    """Bins of the float32 coefficients of ``t32``'s columns into ``index`` (int32
    (k + 2, BLOCK)): per component, then c0 and c1 for the density if ``origin`` has
    k + 2 entries. ``origin``, ``scale``, ``tolerance`` (float32) as in
    :func:`bin_scales`, the tolerance widened by the screen's error (see
    :func:`screen_bins`); estimates are clamped to ``0 .. last`` (int32).
    ``excess[r] >= 0`` marks a column whose position lies within the tolerance of an
    integer, or that was unsure already: its bins are found exactly. Returns how many
    are marked.
    """
    n_k = len(components32)
    _project32(t32, m, components32, c32)
    for k in range(origin.shape[0]):
        source = (k if k < n_k else k - n_k) * BLOCK
        _estimate32(c32[source:source + m], m, origin[k], scale[k], tolerance[k], last[k],
                    index[k], excess)
    marked = 0
    for r in range(m):
        marked += excess[r] >= np.float32(0.0)
    return marked


@numba.njit(cache=True, nogil=True, inline="always")
def _exact_row(raw, r, top, mean, components, t, c_row):  # pragma: no cover - compiled
    """Coefficients of column ``r`` of ``raw`` into ``c_row``, bit for bit those of
    :func:`_scale_centre` and :func:`_project` (``top[r]``: the column's peak; column 0
    of ``t`` is scratch)."""
    p = np.float64(top[r])
    p = 1.0 if p == 0.0 else p
    y = 1.0 / p
    for j in range(len(mean)):
        t[j * BLOCK] = _quotient(np.float64(raw[j * BLOCK + r]), p, y) - mean[j]
    for k in range(len(components)):
        c_row[k] = _dot(t, 0, components[k])


@numba.njit(cache=True, nogil=True, inline="always")
def _drop_nan(c, n_k, m):  # pragma: no cover - compiled
    """Drop the columns of ``c`` (``c[k * BLOCK + r]``) whose first coefficient is NaN
    (rows with a non-finite value: their scaled values hold a NaN, as an infinite peak
    makes the reciprocal zero and ``inf * 0`` NaN); returns how many are
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


def screen_bins(edges: np.ndarray, density_edges: tuple | None, scales: np.ndarray,
                tolerances: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """float32 (3, k or k + 2): origins, scales and tolerances of the histogram pass's
    float32 screen, per component and then for the density's c0 and c1.

    ``scales``/``tolerances`` are :func:`bin_scales` of the rows of ``edges`` and the
    density's edges; ``slack`` the components' :func:`screen_slack`. The tolerance
    adds the screen's error in bin positions: the coefficient's (``slack * scale``)
    and the float32 rounding of the origin, the scale and the position's arithmetic
    (at most ``(3 bins + |origin| scale) u``), twice over.
    """
    origins = [row[0] for row in edges]
    widths = [row.shape[0] - 1 for row in edges]
    errors = list(slack)
    if density_edges is not None:
        origins += [density_edges[0][0], density_edges[1][0]]
        widths += [len(density_edges[0]) - 1, len(density_edges[1]) - 1]
        errors += [slack[0], slack[1]]
    n = len(origins)
    origins, widths, errors = (np.asarray(v, dtype=np.float64) for v in (origins, widths, errors))
    scales, tolerances = scales[:n], tolerances[:n]
    u = 2.0 ** -24
    rounding = (3 * widths + np.abs(origins) * scales) * u
    widened = tolerances + 2 * (errors * scales + rounding)
    return np.array([origins, scales, widened], dtype=np.float32)


def as_tuples(mean: np.ndarray, components: np.ndarray, dtype=float) -> tuple[tuple, tuple]:
    """``mean`` and ``components`` as the (nested) tuples of ``dtype`` the kernels take."""
    return (tuple(dtype(v) for v in mean),
            tuple(tuple(dtype(v) for v in row) for row in components))


def screen_slack(mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Per component: a bound on ``|c32 - c|``, a float32 screen coefficient against
    the exact one, plus the rounding of a threshold near a coefficient to float32.

    The screen rounds the peak's reciprocal and each scaled value ``s`` (``|s| <= 1``),
    the mean ``m`` and the component ``w`` to float32, centres and sums d products in
    float32 (``u = 2**-24``): a centred value is off by at most
    ``(3.02 + 2 |m_j|) u``, and the sum adds ``d (1 + |m_j|) |w_j|`` units, so

        |c32 - c| <= u sum_j |w_j| (5.02 + 4 |m_j| + 1.01 d (1 + |m_j|)).

    Twice that, plus ``2 u sum_j |w_j| (1 + |m_j|)`` (a bound on ``|c|``) for a
    threshold's rounding.
    """
    u = 2.0 ** -24
    weights = np.abs(np.asarray(components, dtype=np.float64))
    centre = np.abs(np.asarray(mean, dtype=np.float64))
    d = weights.shape[1]
    error = weights @ (5.02 + 4 * centre + 1.01 * d * (1 + centre))
    return u * (2 * error + 2 * (weights @ (1 + centre)))


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
def coefficient_range(x, bounds, kept, mean, components, mean32, components32, slack, low,
                      high):  # pragma: no cover - compiled
    """Pass 2 over a block: per-component min and max of the projections.

    ``x``, ``bounds``, ``kept`` as in :func:`moments`; ``mean``, ``components`` and
    their float32 copies ``mean32``, ``components32`` as tuples (:func:`as_tuples`);
    ``slack`` (k,) (:func:`screen_slack`) bounds the float32 coefficients' error;
    ``low``/``high`` (k,) updated.

    Each block of rows is screened in float32 first: only a block with a coefficient
    within ``slack`` of the running min or max (or one the screen cannot judge: a
    non-finite value, a subnormal peak) has its exact coefficients computed and
    folded in. A coefficient that sets a new min or max always passes the screen, so
    the result is the exact coefficients' min and max.
    """
    d = len(mean)
    n_k = len(components)
    raw, t, c, top, peak, recip = _buffers(d, n_k)
    t32, y32 = np.empty(d * BLOCK, np.float32), np.empty(BLOCK, np.float32)
    excess = np.empty(BLOCK, np.float32)
    below, above = np.empty(n_k, np.float32), np.empty(n_k, np.float32)
    for k in range(n_k):
        below[k], above[k] = low[k] + slack[k], high[k] - slack[k]
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            b = min(a + BLOCK, bounds[g + 1])
            m = _transpose(x, a, b, raw, d)
            if _finite_block(x, a, m, d):
                _scale_centre32(raw, m, top, y32, mean32, t32, excess)
                if _screen_range(t32, m, components32, below, above, excess) == 0:
                    kept[g] += m
                    continue
            _scale_centre(raw, m, top, peak, recip, mean, t)
            _project(t, m, components, c)
            m = _drop_nan(c, n_k, m)
            kept[g] += m
            for k in range(n_k):
                for r in range(m):
                    low[k] = min(low[k], c[k * BLOCK + r])
                    high[k] = max(high[k], c[k * BLOCK + r])
                below[k], above[k] = low[k] + slack[k], high[k] - slack[k]


@numba.njit(cache=True, nogil=True, inline="always")
def _position(value, lo, scale):  # pragma: no cover - compiled
    """The bin estimate ``floor((value - lo) * scale)`` (clamped later by :func:`_bin`),
    kept within int32 for any finite value."""
    return int(min(max((value - lo) * scale, -1.0), 2.0 ** 30))


@numba.njit(cache=True, nogil=True, inline="always")
def _bin_row(c_row, edges, scales, x_edges, y_edges, with_density, index, r
             ):  # pragma: no cover - compiled
    """Exact bins of the coefficients ``c_row`` (k,) into column ``r`` of ``index``,
    then those of c0 and c1 for the density (rows k and k + 1)."""
    n_k = c_row.shape[0]
    for k in range(n_k):
        index[k, r] = _bin(c_row[k], edges, k, _position(c_row[k], edges[k, 0], scales[k]))
    if with_density:
        index[n_k, r] = _bin(c_row[0], x_edges, 0,
                             _position(c_row[0], x_edges[0, 0], scales[n_k]))
        index[n_k + 1, r] = _bin(c_row[1], y_edges, 0,
                                 _position(c_row[1], y_edges[0, 0], scales[n_k + 1]))


@numba.njit(cache=True, nogil=True)
def histograms(x, bounds, rows, kept, mean, components, edges, scales, tolerances, counts,
               x_edges, y_edges, density, mean32, components32, screen
               ):  # pragma: no cover - compiled
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
    mean32, components32
        ``mean`` and ``components`` as float32 tuples, for the screen.
    screen : float32 (3, k or k + 2)
        The screen's bin origins, scales and tolerances (:func:`screen_bins`).

    A block of finite rows is binned from float32 coefficients (the screen); a row
    whose float32 position comes within the screen's tolerance of a bin edge, for
    any component, has its exact coefficients computed and binned by the edges. The
    screen's tolerance covers its error, so every row lands in the bin of its exact
    coefficient. Blocks with a non-finite value take the exact path whole.
    """
    d = len(mean)
    n_k = len(components)
    bins = edges.shape[1] - 1
    raw, t, c, top, peak, recip = _buffers(d, n_k)
    t32, y32 = np.empty(d * BLOCK, np.float32), np.empty(BLOCK, np.float32)
    excess, c32 = np.empty(BLOCK, np.float32), np.empty(n_k * BLOCK, np.float32)
    c_row = np.empty(n_k)
    index = np.empty((n_k + 2, BLOCK), dtype=np.int32)
    table = np.zeros((LANES, n_k, bins), dtype=np.int64)
    y_bins = y_edges.shape[1] - 1
    with_density = density.shape[0] > 0
    last = np.full(n_k + 2, bins - 1, dtype=np.int32)
    last[n_k] = x_edges.shape[1] - 2
    last[n_k + 1] = y_bins - 1
    origin, scale, tolerance = screen[0], screen[1], screen[2]
    for g in range(bounds.shape[0] - 1):
        for a in range(bounds[g], bounds[g + 1], BLOCK):
            m = _transpose(x, a, min(a + BLOCK, bounds[g + 1]), raw, d)
            if _finite_block(x, a, m, d):
                _scale_centre32(raw, m, top, y32, mean32, t32, excess)
                if _screen_bins(t32, m, components32, origin, scale, tolerance, last,
                                index, excess, c32):
                    for r in range(m):
                        if excess[r] >= np.float32(0.0):
                            _exact_row(raw, r, top, mean, components, t, c_row)
                            _bin_row(c_row, edges, scales, x_edges, y_edges, with_density,
                                     index, r)
            else:
                _scale_centre(raw, m, top, peak, recip, mean, t)
                _project(t, m, components, c)
                m = _drop_nan(c, n_k, m)
                for r in range(m):
                    for k in range(n_k):
                        c_row[k] = c[k * BLOCK + r]
                    _bin_row(c_row, edges, scales, x_edges, y_edges, with_density, index,
                             r)
            kept[g] += m
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
