"""Streaming statistics over chunks of filters: moments for the PCA, grouped histograms.

Both kinds of partial result merge exactly (sums in float64, counts in int64), so a
pass can be split into chunk tasks anywhere and reduced in any grouping.

Bin rule (the one rule for coefficients on bin edges)
------------------------------------------------------
Edges are ``numpy.linspace(lo, hi, bins + 1)`` in float64. A value ``c`` falls into
bin ``i`` when ``edges[i] <= c < edges[i + 1]``; the last bin is closed, so
``c == hi`` counts in bin ``bins - 1``. The index is first estimated by integer
arithmetic, ``floor((c - lo) / (hi - lo) * bins)``, then moved by at most one
step where it disagrees with the edges array. This is the rule and the arithmetic
of ``numpy.histogram`` with equal bins, so counts equal
``numpy.histogram(c, bins=bins, range=(lo, hi))`` (and ``numpy.histogram(c, edges)``)
exactly, values on edges included. A range with ``lo == hi`` is widened to
``(lo - 0.5, hi + 0.5)``, as numpy does.
"""

from __future__ import annotations

import numpy as np

from . import kernels


def scale_by_peak(filters: np.ndarray) -> np.ndarray:
    """Flatten filters to rows and divide each row by its largest absolute value.

    Parameters
    ----------
    filters : array (n, kh, kw) or (n, d)

    Returns
    -------
    numpy.ndarray
        float64 (n, d); an all-zero filter stays zero.

    Examples
    --------
    >>> scale_by_peak(np.array([[[2.0, -4.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    array([[ 0.5 , -1.  ,  0.  ,  0.25],
           [ 0.  ,  0.  ,  0.  ,  0.  ]])
    """
    rows = np.asarray(filters)
    rows = rows.reshape(len(rows), -1)
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    out = np.empty(rows.shape, dtype=np.float64)
    kernels.scale_rows(rows, out)
    return out


class Moments:
    """Count, sum and sums of products of rows, in float64: what the PCA needs.

    Parameters
    ----------
    d : int
        Row length (``kh * kw``).
    """

    def __init__(self, d: int):
        self.count = 0
        self.sum = np.zeros(d)
        self.products = np.zeros((d, d))

    @property
    def d(self) -> int:
        return len(self.sum)

    def update(self, x: np.ndarray) -> Moments:
        """Add the rows of ``x`` (n, d); returns self."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return self
        self.count += len(x)
        self.sum += x.sum(axis=0)
        self.products += x.T @ x
        return self

    def merge(self, other: Moments) -> Moments:
        """Add another partial in place; returns self."""
        self.count += other.count
        self.sum += other.sum
        self.products += other.products
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.count

    def covariance(self) -> np.ndarray:
        """Sample covariance (divides by ``count - 1``)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 rows, got {self.count}")
        mean = self.mean
        cov = (self.products - self.count * np.outer(mean, mean)) / (self.count - 1)
        return (cov + cov.T) / 2


def bin_edges(lo, hi, bins: int) -> np.ndarray:
    """Edges per dimension, ``(d, bins + 1)``; see the module's bin rule."""
    lo, hi = np.atleast_1d(np.asarray(lo, np.float64)), np.atleast_1d(np.asarray(hi, np.float64))
    lo, hi = _widen(lo, hi)
    return np.stack([np.linspace(a, b, bins + 1) for a, b in zip(lo, hi, strict=True)])


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    same = lo == hi
    return np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value of one dimension under the module's bin rule.

    Parameters
    ----------
    values : float64 (n,)
        Values within ``[edges[0], edges[-1]]``.
    edges : float64 (bins + 1,)

    Returns
    -------
    numpy.ndarray
        intp (n,) in ``[0, bins)``.

    Examples
    --------
    >>> bin_index(np.array([0.0, 0.5, 1.0, 2.0]), np.linspace(0, 2, 5))
    array([0, 1, 2, 3])
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty((len(values), 1), dtype=np.intp)
    kernels.bin_indices(values[:, None], np.asarray(edges, np.float64)[None, :], out)
    return out[:, 0]


class GroupedHistogram:
    """int64 counts ``(groups, components, bins)`` of binned values per group code.

    Holds a window of group codes ``[start, start + len(counts))`` so that a chunk
    that sees only a few groups (e.g. a few models) carries only those.

    Parameters
    ----------
    n_components, n_bins : int
    """

    def __init__(self, n_components: int, n_bins: int):
        self.n_components = n_components
        self.n_bins = n_bins
        self.start = 0
        self.counts = np.zeros((0, n_components, n_bins), dtype=np.int64)

    @property
    def stop(self) -> int:
        return self.start + len(self.counts)

    def _cover(self, start: int, stop: int) -> None:
        if len(self.counts) == 0:
            self.start = start
            self.counts = np.zeros((stop - start, self.n_components, self.n_bins), np.int64)
            return
        if start >= self.start and stop <= self.stop:
            return
        new_start, new_stop = min(start, self.start), max(stop, self.stop)
        counts = np.zeros((new_stop - new_start, self.n_components, self.n_bins), np.int64)
        counts[self.start - new_start:self.stop - new_start] = self.counts
        self.start, self.counts = new_start, counts

    def update(self, codes: np.ndarray, bins: np.ndarray) -> GroupedHistogram:
        """Count rows: ``codes`` (n,) group codes >= 0, ``bins`` (n, components) bin indices."""
        codes = np.asarray(codes, dtype=np.intp)
        if len(codes) == 0:
            return self
        self._cover(int(codes.min()), int(codes.max()) + 1)
        kernels.count_bins(codes, self.start, np.asarray(bins, dtype=np.intp), self.counts)
        return self

    def merge(self, other: GroupedHistogram) -> GroupedHistogram:
        """Add another partial in place; returns self."""
        if len(other.counts) == 0:
            return self
        self._cover(other.start, other.stop)
        self.counts[other.start - self.start:other.stop - self.start] += other.counts
        return self

    def dense(self, n_groups: int) -> np.ndarray:
        """Counts for codes ``0 .. n_groups - 1`` as one ``(n_groups, components, bins)`` array."""
        out = np.zeros((n_groups, self.n_components, self.n_bins), dtype=np.int64)
        if len(self.counts):
            out[self.start:self.stop] = self.counts
        return out
