"""The statistic of one pass over one chunk task, fed span by span to the fused kernels.

A task's rows are cut into pieces: runs of rows of one segment, also cut where a block
of :data:`READ_ROWS` rows of the task ends. An accumulator per pass kind holds the
statistic's arrays, calls the kernel of :mod:`filterdb.analysis.fused` on runs of
pieces (without Python's lock) and returns the partial result that the engine merges
in task order.

The rows come from the shard files' pages mapped into memory where possible
(:meth:`~filterdb.store.reader.ShardRows.mapped`): one view, and one kernel call, per
span of the task's segments that are consecutive rows of one model, and no copy. The
rows of an unmapped span are read into a reused buffer of at most :data:`READ_ROWS`
filters, one block at a time. The pieces are the same either way, and so are the
kernels' sums, bit for bit.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import fused
from .stats import GroupedHistogram, Moments

#: Filters per read block where rows are read, not mapped: 131,072 3x3 filters are
#: 4.7 MB, inside the L3 cache. Pieces are cut at its multiples in every case.
READ_ROWS = 1 << 17


class MomentsPass:
    """Pass 1: count, sum and sums of products of the scaled rows (a :class:`Moments`)."""

    def __init__(self, spec, payload: dict, d: int):
        self.d = d
        self.zeros = (0.0,) * d
        self.total, self.products = np.zeros(d), np.zeros((d, d))

    def add(self, x: np.ndarray, bounds: np.ndarray, pieces: np.ndarray, kept: np.ndarray):
        fused.moments(x, bounds, kept, self.total, self.products, self.zeros)

    def result(self, count: int) -> Moments:
        moments = Moments(self.d)
        moments.count = int(count)
        moments.sum = self.total
        upper = np.triu(self.products)
        moments.products = upper + np.triu(upper, 1).T
        return moments


class RangePass:
    """Pass 2: per-component min and max of the projections."""

    def __init__(self, spec, payload: dict, d: int):
        self.mean, self.components = fused.as_tuples(spec.mean, spec.components)
        self.mean32, self.components32 = fused.as_tuples(spec.mean, spec.components,
                                                         np.float32)
        self.slack = fused.screen_slack(spec.mean, spec.components)
        k = len(self.components)
        self.low, self.high = np.full(k, np.inf), np.full(k, -np.inf)

    def add(self, x, bounds, pieces, kept):
        fused.coefficient_range(x, bounds, kept, self.mean, self.components, self.mean32,
                                self.components32, self.slack, self.low, self.high)

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
        self.mean32, self.components32 = fused.as_tuples(spec.mean, spec.components,
                                                         np.float32)
        self.edges = np.ascontiguousarray(spec.edges, dtype=np.float64)
        # without a density the kernel is given placeholder edges and an empty count
        with_density = spec.density_edges is not None
        density_edges = spec.density_edges if with_density else (np.array([0.0, 1.0]),) * 2
        x_edges, y_edges = (np.ascontiguousarray(e, dtype=np.float64)[None, :]
                            for e in density_edges)
        self.x_edges, self.y_edges = x_edges, y_edges
        scales, tolerances = fused.bin_scales(self.edges)
        density_scales, density_tolerances = fused.bin_scales(np.vstack([x_edges, y_edges]))
        self.scales = np.concatenate([scales, density_scales])
        self.tolerances = np.concatenate([tolerances, density_tolerances])
        self.screen = fused.screen_bins(
            self.edges, spec.density_edges if with_density else None, self.scales,
            self.tolerances, fused.screen_slack(spec.mean, spec.components))
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
        cells = (x_edges.shape[1] - 1) * (y_edges.shape[1] - 1)
        self.density = np.zeros(cells if with_density else 0, np.int64)

    def add(self, x, bounds, pieces, kept):
        fused.histograms(x, bounds, self.rows[pieces], kept, self.mean, self.components,
                         self.edges, self.scales, self.tolerances, self.counts,
                         self.x_edges, self.y_edges, self.density, self.mean32,
                         self.components32, self.screen)

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


def spans(payload: dict) -> list[tuple[int, int]]:
    """The task's segments in spans ``first:last``: runs of segments that are
    consecutive rows of one model (one mapped view or one read per block)."""
    model_ids, starts, stops = (np.asarray(payload[k]) for k in ("model_id", "start", "stop"))
    breaks = np.flatnonzero((model_ids[1:] != model_ids[:-1]) | (starts[1:] != stops[:-1]))
    edges = [0, *(breaks + 1).tolist(), len(starts)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _add(accumulator, x: np.ndarray, cuts: np.ndarray, pieces: np.ndarray, kept: np.ndarray):
    """The kernel on rows ``x`` (m, d) cut at ``cuts`` (task positions, ``cuts[0]`` the
    first row's); each piece's finite rows are added to its segment in ``kept``."""
    piece_kept = np.zeros(len(pieces), dtype=np.int64)
    accumulator.add(x, cuts - cuts[0], pieces, piece_kept)
    np.add.at(kept, pieces, piece_kept)


def _add_mapped(reader, accumulator, model: int, first_id: int, cuts: np.ndarray,
                pieces: np.ndarray, kept: np.ndarray) -> bool:
    """The kernel on a span's rows as one mapped view; False where they are not mapped.
    The view (and so the mapping) is dropped on return."""
    rows = reader.mapped(model, first_id, first_id + int(cuts[-1] - cuts[0]))
    if rows is None:
        return False
    _add(accumulator, rows.reshape(len(rows), -1), cuts, pieces, kept)
    return True


def run(spec, payload: dict, read_sampled) -> tuple:
    """One chunk task: ``(statistic, finite filters per segment, non-finite count)``.

    ``read_sampled(spec, payload)`` gives the task's rows when balanced sampling
    applies (float32 (n, d) and the kept rows per segment, non-finite rows already
    dropped); otherwise the task's spans are mapped or read (see the module).
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
    model_ids, starts, stops = payload["model_id"], payload["start"], payload["stop"]
    position = np.concatenate([[0], np.cumsum(np.asarray(stops) - np.asarray(starts))])
    total = int(position[-1])
    cuts = np.union1d(position, np.arange(0, total, READ_ROWS))
    piece_segment = np.searchsorted(position, cuts[:-1], side="right") - 1
    buffer = None
    with spec.db.rows(spec.shape, payload["locations"]) as reader:
        for first, last in spans(payload):
            p, q = np.searchsorted(cuts, [position[first], position[last]])
            model = int(model_ids[first])
            base = int(starts[first]) - int(position[first])  # id = base + task position
            if _add_mapped(reader, accumulator, model, base + int(cuts[p]), cuts[p:q + 1],
                           piece_segment[p:q], kept):
                continue
            # chunk_rows stays the memory knob: a task never holds (or maps) more than
            # its chunk
            if buffer is None:
                buffer = np.empty((min(READ_ROWS, total), kh, kw), dtype=np.float32)
            block = cuts[p:q] // READ_ROWS
            splits = [p, *(np.flatnonzero(block[1:] != block[:-1]) + p + 1).tolist(), q]
            for u, v in zip(splits[:-1], splits[1:], strict=True):
                rows = buffer[:int(cuts[v] - cuts[u])]
                reader.read(model, base + int(cuts[u]), base + int(cuts[v]), rows)
                _add(accumulator, rows.reshape(len(rows), -1), cuts[u:v + 1],
                     piece_segment[u:v], kept)
    return accumulator.result(int(kept.sum())), kept, total - int(kept.sum())
