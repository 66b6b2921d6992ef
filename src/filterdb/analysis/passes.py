"""The statistic of one pass over one chunk task, fed block by block to the fused kernels.

A task's rows arrive as float32 blocks of at most :data:`READ_ROWS` filters (a few MB,
reused, so they stay in the CPU cache between the read and the kernel) cut into
pieces: runs of rows of one segment. An accumulator per pass kind holds the
statistic's arrays, calls the kernel of :mod:`filterdb.analysis.fused` on every
block (without Python's lock) and returns the partial result that the engine
merges in task order.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import fused
from .stats import GroupedHistogram, Moments

#: Filters per read block: 131,072 3x3 filters are 4.7 MB, inside the L3 cache.
READ_ROWS = 1 << 17


class MomentsPass:
    """Pass 1: count, sum and sums of products of the scaled rows (a :class:`Moments`)."""

    def __init__(self, spec, payload: dict, d: int):
        self.d = d
        self.zeros = (0.0,) * d
        self.total, self.products = np.zeros(d), np.zeros((d, d))
        self.low, self.high = np.full(d, np.inf), np.full(d, -np.inf)

    def add(self, x: np.ndarray, bounds: np.ndarray, pieces: np.ndarray, kept: np.ndarray):
        fused.moments(x, bounds, kept, self.total, self.products, self.low, self.high,
                      self.zeros)

    def result(self, count: int) -> Moments:
        moments = Moments(self.d)
        moments.count = int(count)
        moments.sum = self.total
        upper = np.triu(self.products)
        moments.products = upper + np.triu(upper, 1).T
        moments.min, moments.max = self.low, self.high
        return moments


class RangePass:
    """Pass 2: per-component min and max of the projections."""

    def __init__(self, spec, payload: dict, d: int):
        self.mean, self.components = fused.as_tuples(spec.mean, spec.components)
        k = len(self.components)
        self.low, self.high = np.full(k, np.inf), np.full(k, -np.inf)

    def add(self, x, bounds, pieces, kept):
        fused.coefficient_range(x, bounds, kept, self.mean, self.components, self.low,
                                self.high)

    def result(self, count: int):
        return self.low, self.high


class HistogramPass:
    """Pass 3: histograms per grouping, group and component, and the c0-c1 density.

    Every grouping counts into a window of group codes (those of the task's segments),
    all windows stacked in one array the kernel fills; they become the
    :class:`GroupedHistogram` partials of the result.
    """

    def __init__(self, spec, payload: dict, d: int):
        self.mean, self.components = fused.as_tuples(spec.mean, spec.components)
        self.edges = np.ascontiguousarray(spec.edges, dtype=np.float64)
        x_edges, y_edges = (np.ascontiguousarray(e, dtype=np.float64)[None, :]
                            for e in spec.density_edges)
        self.x_edges, self.y_edges = x_edges, y_edges
        scales, tolerances = fused.bin_scales(self.edges)
        density_scales, density_tolerances = fused.bin_scales(np.vstack([x_edges, y_edges]))
        self.scales = np.concatenate([scales, density_scales])
        self.tolerances = np.concatenate([tolerances, density_tolerances])
        self.bins = self.edges.shape[1] - 1
        codes = np.asarray(payload["codes"], dtype=np.int64)  # (segments, groupings)
        self.windows = []
        rows = np.full(codes.shape, -1, dtype=np.int64)
        base = 0
        for g in range(codes.shape[1]):
            valid = codes[:, g] >= 0
            if valid.any():
                start, stop = int(codes[valid, g].min()), int(codes[valid, g].max()) + 1
            else:
                start = stop = 0
            rows[valid, g] = codes[valid, g] - start + base
            self.windows.append((start, base, stop - start))
            base += stop - start
        self.rows = rows
        self.counts = np.zeros((base, len(self.components), self.bins), dtype=np.int64)
        self.density = np.zeros((x_edges.shape[1] - 1) * (y_edges.shape[1] - 1), np.int64)

    def add(self, x, bounds, pieces, kept):
        fused.histograms(x, bounds, self.rows[pieces], kept, self.mean, self.components,
                         self.edges, self.scales, self.tolerances, self.counts,
                         self.x_edges, self.y_edges, self.density)

    def result(self, count: int):
        hists = []
        for start, base, width in self.windows:
            hist = GroupedHistogram(len(self.components), self.bins)
            if width:
                hist.start = start
                hist.counts = self.counts[base:base + width]
            hists.append(hist)
        return hists, self.density


PASSES = {"moments": MomentsPass, "range": RangePass, "hist": HistogramPass}


def warm(d: int) -> None:
    """Load (or compile) every pass's kernel for rows of ``d`` values: each accumulator
    adds an empty block, with the argument types of a real run."""
    line = np.linspace(0.0, 1.0, 3)
    spec = SimpleNamespace(mean=np.zeros(d), components=np.eye(d),
                           edges=np.tile(line, (d, 1)), density_edges=(line, line))
    payload = {"codes": np.zeros((1, 1), dtype=np.int64)}
    x = np.zeros((0, d), dtype=np.float32)
    bounds, pieces = np.zeros(2, dtype=np.int64), np.zeros(1, dtype=np.int64)
    for accumulator in PASSES.values():
        accumulator(spec, payload, d).add(x, bounds, pieces, np.zeros(1, dtype=np.int64))


def blocks(reader, payload: dict, shape: tuple[int, int], buffer: np.ndarray):
    """Read the task's segments into ``buffer`` block by block.

    Yields ``(x, bounds, pieces)``: ``x`` float32 (m, kh * kw) rows of the buffer,
    ``bounds`` int64 (pieces + 1,) their cut points, ``pieces`` the segment of each
    piece. The buffer is refilled after each yield.
    """
    capacity = len(buffer)
    flat = buffer.reshape(capacity, -1)
    used, bounds, pieces = 0, [0], []
    model_ids, starts, stops = payload["model_id"], payload["start"], payload["stop"]
    for segment in range(len(starts)):
        model, at, stop = int(model_ids[segment]), int(starts[segment]), int(stops[segment])
        while at < stop:
            take = min(stop - at, capacity - used)
            reader.read(model, at, at + take, buffer[used:used + take])
            used += take
            at += take
            bounds.append(used)
            pieces.append(segment)
            if used == capacity:
                yield flat[:used], np.array(bounds, np.int64), np.array(pieces, np.int64)
                used, bounds, pieces = 0, [0], []
    if used:
        yield flat[:used], np.array(bounds, np.int64), np.array(pieces, np.int64)


def run(spec, payload: dict, read_sampled) -> tuple:
    """One chunk task: ``(statistic, finite filters per segment, non-finite count)``.

    ``read_sampled(spec, payload)`` gives the task's rows when balanced sampling
    applies (float32 (n, d) and the kept rows per segment, non-finite rows already
    dropped); otherwise the segments are read straight into a reused block buffer.
    """
    kh, kw = spec.shape
    d = kh * kw
    accumulator = PASSES[spec.kind](spec, payload, d)
    segments = len(payload["start"])
    kept = np.zeros(segments, dtype=np.int64)
    if spec.balanced is not None:
        flat, lengths, _, nonfinite = read_sampled(spec, payload)
        flat = np.ascontiguousarray(flat, dtype=np.float32)
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        accumulator.add(flat, bounds, np.arange(segments, dtype=np.int64), kept)
        return accumulator.result(int(kept.sum())), kept, nonfinite
    # chunk_rows stays the memory knob: a task never holds more than its chunk
    buffer = np.empty((min(READ_ROWS, spec.chunk_rows), kh, kw), dtype=np.float32)
    with spec.db.rows(spec.shape, payload["locations"]) as reader:
        for x, bounds, pieces in blocks(reader, payload, spec.shape, buffer):
            piece_kept = np.zeros(len(pieces), dtype=np.int64)
            accumulator.add(x, bounds, pieces, piece_kept)
            np.add.at(kept, pieces, piece_kept)
    total = int((np.asarray(payload["stop"]) - np.asarray(payload["start"])).sum())
    return accumulator.result(int(kept.sum())), kept, total - int(kept.sum())
