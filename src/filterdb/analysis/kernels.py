"""Compiled per-row loops of the analysis passes (numba), where numpy needs many passes.

Each kernel does in one sweep over a block what numpy would do in several
full-size temporaries (a reduction over a 9-wide axis, an index estimate, two
corrections, a bincount per grouping). The arithmetic is the same as the numpy
formulation it replaces, operation for operation, so results are bit-identical.
Compiled on first use and cached on disk next to this module (or in numba's
user cache when that folder is read-only).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def scale_rows(rows, out):  # pragma: no cover - compiled
    """``out[i] = rows[i] / max|rows[i]|`` in float64; an all-zero row stays zero."""
    for i in range(rows.shape[0]):
        peak = 0.0
        for j in range(rows.shape[1]):
            peak = max(peak, abs(np.float64(rows[i, j])))
        if peak == 0.0:
            peak = 1.0
        for j in range(rows.shape[1]):
            out[i, j] = np.float64(rows[i, j]) / peak


@numba.njit(cache=True, nogil=True)
def bin_indices(values, edges, out):  # pragma: no cover - compiled
    """Bin of each value per column: ``values`` (n, d), ``edges`` (d, bins + 1).

    The rule of :mod:`filterdb.analysis.stats`: estimate
    ``floor((c - lo) / (hi - lo) * bins)``, clamp, then step once to agree with
    the edges (the last bin is closed).
    """
    bins = edges.shape[1] - 1
    for j in range(values.shape[1]):
        lo, hi = edges[j, 0], edges[j, bins]
        for i in range(values.shape[0]):
            value = values[i, j]
            k = int((value - lo) / (hi - lo) * bins)
            k = min(max(k, 0), bins - 1)
            if value < edges[j, k]:
                k -= 1
            elif k != bins - 1 and value >= edges[j, k + 1]:
                k += 1
            out[i, j] = k


@numba.njit(cache=True, nogil=True)
def count_bins(codes, start, bins, counts):  # pragma: no cover - compiled
    """``counts[codes[i] - start, j, bins[i, j]] += 1`` for every row i and column j."""
    for i in range(bins.shape[0]):
        group = codes[i] - start
        for j in range(bins.shape[1]):
            counts[group, j, bins[i, j]] += 1

