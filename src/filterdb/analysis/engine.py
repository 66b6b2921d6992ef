"""Out-of-core distribution-shift analysis: streamed PCA, histograms, drift matrices.

Passes over the selected filters, each split into chunk tasks of at most
``chunk_rows`` filters (model_id, start, stop ranges, cut at layer boundaries):

1. *moments* (only when no basis is given): count, sum and sums of products of the
   peak-scaled filters -> :class:`~filterdb.analysis.pca.Basis`;
2. *range*: min and max of the projections per component (cheap: one small matrix
   product per chunk); the histogram range is the min and max over all components
   (one shared range, as published);
3. *histograms*: bin the projections (see the bin rule in
   :mod:`filterdb.analysis.stats`) and count them per group and component.

Passes alternate direction: the even-numbered pass (the range pass after a fitted PCA,
the histogram pass after a given basis's range pass) runs its tasks last to first. Its
merge does not depend on the order (min and max; integer counts), and when the filters
are larger than the page cache it starts on the part the pass before left in it.

A task touches only its own ranges (``db.rows``: uncompressed shards mapped into
memory, a view of the page cache per run of a model's rows; other files read into a
reused block of at most 131,072 filters and at most ``chunk_rows``; see
:mod:`filterdb.analysis.passes`), and hands them to the pass's fused numba kernel
(:mod:`filterdb.analysis.fused`: skip non-finite rows, scale, centre, project, bin and
count in one sweep, exactly the numpy formulation's numbers). Memory is set by the
chunk and the tasks in flight, not by the database size. Without a scheduler the tasks
run on a thread per CPU (reads and kernels release Python's lock); on a
``dask.distributed`` cluster each task opens the database read-only itself. Either way
partial results are reduced in task order, so every run gives the same numbers.

Filters with a non-finite value are skipped (counted in ``n_nonfinite``).

Balanced sampling (``balanced=m``) keeps at most ``m`` filters per model (or per
layer, ``balance_by="layer"``), chosen uniformly without replacement among the unit's
selected filters, for every pass (the PCA included). The choice is a function of
(seed, model id[, layer]) only: how many of the ``m`` fall into each block of 65,536
consecutive filters of the unit is one seeded multivariate hypergeometric draw, the
rows within a block one seeded draw without replacement. It does not depend on
``chunk_rows`` or the scheduler, and costs memory of one block at most.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import drift as drift_module
from . import passes
from .groups import Grouping, layer_table
from .pca import Basis
from .stats import GroupedHistogram, Moments, bin_edges

#: Consecutive filters of a sampling unit that share one draw (see balanced sampling).
SAMPLE_BLOCK = 1 << 16
#: Largest replicate array (replicates x groups x groups float64) the bootstrap keeps.
BOOTSTRAP_MAX_BYTES = 1 << 30


@dataclass
class GroupingResult:
    """Drift analysis of one grouping.

    ``labels``, ``histograms``, ``counts`` and ``raw_counts`` are in label order
    (sorted values; depth bins from shallow to deep). ``drift`` and
    ``contributions`` are in drift order: groups sorted by increasing mean drift to
    the other groups; ``drift.index`` gives that order.

    Attributes
    ----------
    name : str
    labels : list of str
    histograms : float64 (groups, d, bins)
        Normalised per group and component (empty bins = float32 eps, sum 1): the
        distributions the drift compares.
    counts : DataFrame
        Columns ``group``, ``models``, ``layers``, ``filters`` (analysed filters).
    drift : DataFrame
        Square, symmetric, zero diagonal; index = columns = labels in drift order.
    contributions : float64 (groups, groups, d)
        Weighted symmetric KL per component, in drift order; sums to ``drift``.
    intervals : DataFrame or None
        With ``bootstrap``: one row per pair (upper triangle, drift order) with
        ``group_a``, ``group_b``, ``drift``, ``low``, ``high``, ``mean``,
        ``replicates``; see :func:`filterdb.analysis.drift.intervals`. Replicates
        resample the selection's models (ordered by model id) with replacement; a
        group's histogram is the sum of its drawn models' histograms. The intervals are
        percentile intervals of the replicates: the drift of sparse histograms grows
        when fewer distinct models make up a group, so for weak shifts the replicates
        lie mostly above the point estimate (``mean - drift`` shows that bias) and the
        interval need not contain it.
    raw_counts : int64 (groups, d, bins)
        The histogram counts before normalisation.
    """

    name: str
    labels: list[str]
    histograms: np.ndarray
    counts: pd.DataFrame
    drift: pd.DataFrame
    contributions: np.ndarray
    intervals: pd.DataFrame | None = None
    raw_counts: np.ndarray | None = None


@dataclass
class AnalysisResult:
    """Result of :func:`analyze`.

    Attributes
    ----------
    basis : Basis
        The basis used, fitted on the selection or the one given; ``coef_min`` and
        ``coef_max`` are the analysed filters' coefficient range in it, which the
        histograms span (for a given basis, in place of its reference set's).
    groupings : dict of str -> GroupingResult
        In the order requested.
    bin_edges : float64 (d, bins + 1)
        Histogram edges per component (one shared range: identical rows).
    n_filters : int
        Filters analysed (after balanced sampling; non-finite ones skipped).
    n_nonfinite : int
        Filters skipped because a value is NaN or infinite.
    density : (counts, edges_x, edges_y) or None
        With groupings: 2-D histogram of the first two coefficients (c0 on x, c1 on y), int64
        ``(density_bins, density_bins)``, each over its component's range, same bin rule.
    settings : dict
        The arguments that shaped the result (bins, where, balanced, seed, ...).
    """

    basis: Basis
    groupings: dict[str, GroupingResult]
    bin_edges: np.ndarray
    n_filters: int
    n_nonfinite: int = 0
    density: tuple | None = None
    settings: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- tasks


@dataclass
class _Spec:
    """What every task of a pass needs besides its own ranges (small, pickled once)."""

    db: object  # FilterDB: pickles by path, reopened read-only by a worker
    shape: tuple[int, int]
    kind: str  # "moments" | "range" | "hist"
    chunk_rows: int = 1 << 20
    balanced: int | None = None
    balance_by: str = "model"
    seed: int = 0
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    edges: np.ndarray | None = None
    density_edges: np.ndarray | None = None


def _task(spec: _Spec, payload: dict):
    """One chunk: read (and sample), then the pass's fused kernel block by block.

    Returns ``(statistic, filters per segment, non-finite count)``.
    """
    return passes.run(spec, payload, _read)


def _read(spec: _Spec, payload: dict):
    """The task's finite filters as float32 rows (n, kh * kw), with per-row group codes."""
    kh, kw = spec.shape
    starts, stops = payload["start"], payload["stop"]
    selections = [None] * len(starts)
    if spec.balanced is not None:
        cache: dict = {}
        for i in range(len(starts)):
            selections[i] = _sample(spec, payload, i, cache)
    lengths = np.array([stops[i] - starts[i] if s is None else len(s)
                        for i, s in enumerate(selections)], dtype=np.int64)
    out = np.empty((int(lengths.sum()), kh, kw), dtype=np.float32)
    position = 0
    with spec.db.rows(spec.shape, payload["locations"]) as reader:
        for i in range(len(starts)):
            if lengths[i] == 0:
                continue
            model, start, stop = int(payload["model_id"][i]), int(starts[i]), int(stops[i])
            rows = selections[i]
            if rows is None:
                reader.read(model, start, stop, out[position:position + stop - start])
            else:
                span = reader.read(model, start + int(rows[0]), start + int(rows[-1]) + 1)
                out[position:position + len(rows)] = span[rows - rows[0]]
            position += int(lengths[i])
    flat = out.reshape(len(out), kh * kw)
    segment = np.repeat(np.arange(len(starts)), lengths)
    nonfinite = 0
    if not np.isfinite(flat).all():
        finite = np.isfinite(flat).all(axis=1)
        nonfinite = int(len(flat) - finite.sum())
        flat, segment = flat[finite], segment[finite]
        lengths = np.bincount(segment, minlength=len(starts)).astype(np.int64)
    codes = payload["codes"][segment] if payload["codes"].shape[1] else \
        np.zeros((len(flat), 0), np.int64)
    return flat, lengths, codes, nonfinite


def _sample(spec: _Spec, payload: dict, i: int, cache: dict) -> np.ndarray | None:
    """Kept rows of segment ``i`` (offsets from its start), or None when all are kept."""
    size = int(payload["unit_n"][i])
    if size <= spec.balanced:
        return None
    key = tuple(int(k) for k in payload["unit_key"][i])
    offset = int(payload["unit_offset"][i])
    length = int(payload["stop"][i] - payload["start"][i])
    if key not in cache:
        blocks = np.full(-(-size // SAMPLE_BLOCK), SAMPLE_BLOCK, dtype=np.int64)
        blocks[-1] = size - SAMPLE_BLOCK * (len(blocks) - 1)
        rng = np.random.default_rng([spec.seed, *key, 0])
        cache[key] = (rng.multivariate_hypergeometric(blocks, spec.balanced,
                                                      method="marginals"), {})
    per_block, chosen = cache[key]
    parts = []
    for block in range(offset // SAMPLE_BLOCK, (offset + length - 1) // SAMPLE_BLOCK + 1):
        if block not in chosen:
            width = min(SAMPLE_BLOCK, size - block * SAMPLE_BLOCK)
            rng = np.random.default_rng([spec.seed, *key, 1, block])
            picks = np.sort(rng.choice(width, int(per_block[block]), replace=False))
            chosen[block] = picks + block * SAMPLE_BLOCK
        picks = chosen[block]
        parts.append(picks[(picks >= offset) & (picks < offset + length)])
    return np.concatenate(parts) - offset


# ------------------------------------------------------------------------ the plan


class _Plan:
    """Segments (one layer's part within one chunk) and the chunk tasks over them."""

    def __init__(self, table: pd.DataFrame, db, shape, chunk_rows: int, balance_by: str):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        n = table["n"].to_numpy(dtype=np.int64)
        layer_pos = np.concatenate([[0], np.cumsum(n)])
        total = int(layer_pos[-1])
        cuts = np.union1d(layer_pos, np.arange(0, total, chunk_rows, dtype=np.int64))
        seg_from, seg_to = cuts[:-1], cuts[1:]
        self.layer = np.searchsorted(layer_pos, seg_from, side="right") - 1
        within = seg_from - layer_pos[self.layer]
        model_id = table["model_id"].to_numpy(dtype=np.int64)
        self.model_id = model_id[self.layer]
        self.start = table["filter_id_start"].to_numpy(dtype=np.int64)[self.layer] + within
        self.stop = self.start + (seg_to - seg_from)
        if balance_by == "model":
            first = pd.Series(layer_pos[:-1]).groupby(model_id).transform("min").to_numpy()
            size = pd.Series(n).groupby(model_id).transform("sum").to_numpy()
            self.unit_key = np.stack([np.zeros_like(model_id), model_id], axis=1)[self.layer]
            self.unit_offset = seg_from - first[self.layer]
            self.unit_n = size[self.layer]
        elif balance_by == "layer":
            layer_no = table["layer"].to_numpy(dtype=np.int64)
            self.unit_key = np.stack([np.ones_like(model_id), model_id, layer_no],
                                     axis=1)[self.layer]
            self.unit_offset = within
            self.unit_n = n[self.layer]
        else:
            raise ValueError(f"balance_by must be 'model' or 'layer', not {balance_by!r}")
        task = seg_from // chunk_rows
        bounds = np.flatnonzero(np.r_[True, task[1:] != task[:-1], True])
        self.tasks = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.total = total
        self.locations = db.row_locations(np.unique(model_id), shape)

    def payloads(self, layer_codes: np.ndarray, tasks: list[tuple[int, int]]
                 ) -> Iterator[dict]:
        """One payload per task of ``tasks``, made as needed; ``layer_codes`` (layers,
        groupings)."""
        for a, b in tasks:
            models = np.unique(self.model_id[a:b])
            yield {"model_id": self.model_id[a:b], "start": self.start[a:b],
                   "stop": self.stop[a:b], "unit_key": self.unit_key[a:b],
                   "unit_offset": self.unit_offset[a:b], "unit_n": self.unit_n[a:b],
                   "codes": layer_codes[self.layer[a:b]],
                   "locations": {int(m): self.locations[int(m)] for m in models}}


# ----------------------------------------------------------------------- executors


class _Local:
    """Tasks in this process on ``threads`` threads; results in task order.

    The kernels and the shard reads run without Python's lock, so threads use the
    cores without the pickling and start-up of worker processes. At most two tasks
    per thread are in flight (each holds a read buffer and its partial result).
    """

    def __init__(self, threads: int):
        self.threads = threads

    def imap(self, spec: _Spec, payloads: Iterator[dict], count: int) -> Iterator:
        if self.threads <= 1:
            for payload in payloads:
                yield _task(spec, payload)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads, thread_name_prefix="filterdb-analyze") as pool:
            pending: deque = deque()
            try:
                for payload in payloads:
                    pending.append(pool.submit(_task, spec, payload))
                    if len(pending) >= 2 * self.threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()


class _Dask:
    def __init__(self, client):
        self.client = client

    def imap(self, spec: _Spec, payloads: Iterator[dict], count: int) -> Iterator:
        """Results in task order; at most a few tasks per worker in flight."""
        from distributed import as_completed

        client = self.client
        window = 4 * max(1, sum(client.nthreads().values()))
        shared = client.scatter(spec, broadcast=True, hash=False)
        live, done = {}, {}
        completed = as_completed()
        submitted = yielded = 0
        try:
            while yielded < count:
                while submitted < count and submitted - yielded < window:
                    future = client.submit(_task, shared, next(payloads), pure=False)
                    live[future.key] = (submitted, future)
                    completed.add(future)
                    submitted += 1
                while yielded not in done:
                    future = next(completed)
                    index, _ = live.pop(future.key)
                    done[index] = future.result()
                    future.release()
                yield done.pop(yielded)
                yielded += 1
        finally:
            for _, future in live.values():
                future.cancel()
            shared.release()


def default_threads() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def _executor(scheduler, threads: int | None = None):
    if scheduler is None:
        yield _Local(default_threads() if threads is None else threads)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise ImportError("a scheduler needs dask.distributed: pip install 'dask[distributed]'"
                          ) from None
    if hasattr(scheduler, "submit"):  # a distributed.Client
        yield _Dask(scheduler)
        return
    text = str(scheduler)
    if text.startswith("local:"):
        count = text.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"scheduler {text!r}: expected local:N with N >= 1 workers")
        workers = int(count)
        import logging

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            yield _Dask(client)
    else:
        try:
            client = Client(text)
        except (OSError, TimeoutError) as error:  # unreachable: a line, not a traceback
            raise ValueError(f"scheduler {text!r}: cannot connect ({error})") from None
        with client:
            yield _Dask(client)


# ----------------------------------------------------------------------- progress


class _Silent:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress_factory(progress) -> Callable:
    if progress is None or progress is False:
        return lambda **_: _Silent()
    if progress is True:
        from tqdm import tqdm

        return lambda **kw: tqdm(unit="filter", unit_scale=True, file=sys.stderr,
                                 dynamic_ncols=True, disable=None, **kw)
    return progress


def _run_pass(executor, spec: _Spec, plan: _Plan, layer_codes: np.ndarray, progress,
              desc: str, merge: Callable, first, backward: bool = False):
    """One pass over the plan's tasks, their statistics merged in the order run.

    ``backward`` runs the tasks last to first, for a pass whose merge does not depend
    on the order (min and max, integer counts): when the filters are larger than the
    page cache, the pass before left the end of the data in it, so a pass in the other
    direction reads that part from memory, not from the disk.
    """
    bar = progress(desc=desc, total=plan.total)
    kept = np.zeros(len(plan.start), dtype=np.int64)
    nonfinite = 0
    result = first
    tasks = plan.tasks[::-1] if backward else plan.tasks
    try:
        for (a, b), (statistic, lengths, skipped) in zip(
                tasks, executor.imap(spec, plan.payloads(layer_codes, tasks), len(tasks)),
                strict=True):
            result = merge(result, statistic)
            kept[a:b] = lengths
            nonfinite += skipped
            bar.update(int((plan.stop[a:b] - plan.start[a:b]).sum()))
    finally:
        bar.close()
    return result, kept, nonfinite


# ------------------------------------------------------------------------ analyze


def analyze(db, by: Iterable = ("Task",), where: dict | None = None, bins: int = 70,
            basis: Basis | str | Path | None = None, chunk_rows: int = 1 << 20,
            balanced: int | None = None, balance_by: str = "model", bootstrap: int = 0,
            seed: int = 0, level: float = 0.95, scheduler=None, progress=None,
            shape: tuple[int, int] = (3, 3), density_bins: int | None = 100,
            threads: int | None = None) -> AnalysisResult:
    """Distribution shift of filters between groups, streamed over the database.

    Parameters
    ----------
    db : FilterDB or path
    by : iterable of str or Grouping
        Groupings: any model or layer column (``Task``, ``Visual Category``,
        ``Framework``, ``producer``, ``model``, ...) or ``depth`` (normalised conv depth
        in 0.1 bins); see :mod:`filterdb.analysis.groups`.
    where : dict, optional
        Conditions of :meth:`FilterDB.select` (``{"Task": "Classification"}``).
    bins : int, default 70
        Histogram bins per component over the shared coefficient range.
    basis : Basis or path to its JSON, optional
        Measure in this basis (e.g. fitted on a reference set); default: fit the PCA
        on the selection.
    chunk_rows : int, default 2**20
        Filters per chunk task. A task maps at most its chunk of the shard files
        (36 bytes per 3x3 filter, page cache counted in the RSS while mapped) or reads
        blocks of at most ``min(chunk_rows, 131072)`` filters and, with ``balanced``,
        holds its whole chunk (about 170 bytes per filter).
    balanced : int, optional
        Keep at most this many filters per model (or per layer), seeded; for all passes.
    balance_by : {"model", "layer"}
    bootstrap : int, default 0
        Model-bootstrap replicates for percentile intervals of every drift value.
    seed : int, default 0
        Seed of balanced sampling and bootstrap.
    level : float, default 0.95
        Confidence level of the intervals.
    scheduler : None, "local:N", address or distributed.Client
        None: run the chunk tasks in this process. ``"local:N"``: a LocalCluster of N
        single-threaded worker processes. An address (``"tcp://host:8786"``): an
        existing dask.distributed scheduler. The results are the same.
    progress : None, True or callable
        True: a tqdm bar per pass on stderr (shown on a terminal); a callable is
        called like ``tqdm(desc=..., total=...)`` and must return an object with
        ``update(n)`` and ``close()``.
    shape : (kh, kw), default (3, 3)
    density_bins : int or None, default 100
        Cells per axis of the c0-c1 density (:attr:`AnalysisResult.density`); None: no
        density (the figures' 2-D histogram), which saves a tenth of the last pass.
    threads : int, optional
        Threads that run the chunk tasks without a scheduler (default: one per CPU
        this process may use). The results do not depend on it.

    Returns
    -------
    AnalysisResult

    Examples
    --------
    >>> result = analyze("filters.h5", by=["Task", "depth"])        # doctest: +SKIP
    >>> result.groupings["Task"].drift                                # doctest: +SKIP
    >>> reference = analyze(db, by=[], where={"Task": "Classification"}).basis  # doctest: +SKIP
    >>> analyze(db, by=["Visual Category"], basis=reference)         # doctest: +SKIP
    """
    from .. import open as open_db

    if isinstance(db, str | Path):
        db = open_db(db)
    shape = tuple(shape)
    d = shape[0] * shape[1]
    if bins < 1 or (density_bins is not None and density_bins < 1):
        raise ValueError("bins must be positive")
    if d < 2:
        raise ValueError("the analysis needs kernels of at least 2 values")
    if balanced is not None and balanced < 1:
        raise ValueError("balanced must be a positive number of filters")
    if bootstrap < 0:
        raise ValueError("bootstrap must be >= 0")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if isinstance(basis, str | Path):
        basis = Basis.load(basis)
    if basis is not None and basis.d != d:
        raise ValueError(f"the basis has {basis.d} components; {shape[0]}x{shape[1]} "
                         f"filters need {d}")
    groupings = [Grouping.parse(spec) for spec in by]
    names = [g.name for g in groupings]
    if len(set(names)) != len(names):
        raise ValueError(f"a grouping is named twice: {names}")

    table = layer_table(db, shape, where)
    if table.empty:
        raise ValueError("the selection holds no filters")
    assigned = [g.assign(table) for g in groupings]
    plan = _Plan(table, db, shape, chunk_rows, balance_by)
    no_codes = np.zeros((len(table), 0), dtype=np.int64)
    progress = _progress_factory(progress)
    n_passes = (2 if basis is not None else 3) - (not groupings)
    # tasks reopen the database by path: make it absolute for workers elsewhere
    task_db = db if db.path.is_absolute() else type(db)(db.path.resolve())
    common = {"db": task_db, "shape": shape, "balanced": balanced, "balance_by": balance_by,
              "seed": seed, "chunk_rows": chunk_rows}

    if threads is not None and threads < 1:
        raise ValueError("threads must be positive")
    with _executor(scheduler, threads) as executor:
        number = 1
        kept = None
        fitted = basis
        if basis is None:
            moments, kept, nonfinite = _run_pass(
                executor, _Spec(kind="moments", **common), plan, no_codes, progress,
                f"pass 1/{n_passes}: PCA", lambda a, b: a.merge(b), Moments(d))
            if moments.count < 2:
                raise ValueError(f"the selection holds {moments.count} usable filter(s); "
                                 "the PCA needs at least 2")
            fitted = Basis.from_moments(moments, shape)
            number = 2
        (lo, hi), kept_range, nonfinite = _run_pass(
            executor, _Spec(kind="range", mean=fitted.mean, components=fitted.components,
                            **common),
            plan, no_codes, progress, f"pass {number}/{n_passes}: coefficient range",
            lambda a, b: (np.minimum(a[0], b[0]), np.maximum(a[1], b[1])),
            (np.full(d, np.inf), np.full(d, -np.inf)), backward=number % 2 == 0)
        kept = kept_range if kept is None else kept
        n_filters = int(kept.sum())
        if n_filters == 0:
            raise ValueError("the selection holds no usable (finite) filters")
        # the range the histograms span, in either case: a given basis's own range is
        # its reference set's, not what these drifts were measured over
        fitted = fitted.with_range(lo, hi)
        edges = np.repeat(bin_edges(lo.min(), hi.max(), bins), d, axis=0)

        layer_kept = np.bincount(plan.layer, weights=kept, minlength=len(table)).astype(np.int64)
        prepared = [_prepare(g, codes, labels, table, layer_kept, bootstrap)
                    for g, (codes, labels) in zip(groupings, assigned, strict=True)]
        layer_codes = (np.stack([p["hist_codes"] for p in prepared], axis=1) if prepared
                       else no_codes)
        density_edges = (bin_edges(lo[:2], hi[:2], density_bins)
                         if density_bins is not None else None)
        hists, density = [], None
        if prepared:
            (hists, density), _, _ = _run_pass(
                executor, _Spec(kind="hist", mean=fitted.mean, components=fitted.components,
                                edges=edges, density_edges=density_edges, **common),
                plan, layer_codes, progress,
                f"pass {n_passes}/{n_passes}: histograms",
                lambda acc, part: ([a.merge(b) for a, b in zip(acc[0], part[0], strict=True)],
                                   acc[1] + part[1]),
                ([GroupedHistogram(d, bins) for _ in prepared], 0),
                backward=n_passes % 2 == 0)

    results = {}
    for grouping, info, hist in zip(groupings, prepared, hists, strict=True):
        results[grouping.name] = _grouping_result(grouping, info, hist, fitted, bootstrap,
                                                  seed, level)
    settings = {"by": names, "where": dict(where or {}), "bins": bins, "chunk_rows": chunk_rows,
                "balanced": balanced, "balance_by": balance_by, "bootstrap": bootstrap,
                "seed": seed, "level": level, "shape": shape,
                "basis": "fitted" if basis is None else "given"}
    if density_edges is None:
        density = None
    elif density is not None:
        density = (np.asarray(density, np.int64).reshape(density_bins, density_bins),
                   density_edges[0], density_edges[1])
    return AnalysisResult(basis=fitted, groupings=results, bin_edges=edges,
                          n_filters=n_filters, n_nonfinite=nonfinite, density=density,
                          settings=settings)


def _prepare(grouping: Grouping, codes: np.ndarray, labels: list[str], table: pd.DataFrame,
             layer_kept: np.ndarray, bootstrap: int) -> dict:
    """Drop groups left without filters; counts table; codes for the histogram pass."""
    per_group = np.bincount(codes, weights=layer_kept, minlength=len(labels))
    used = np.flatnonzero(per_group > 0)
    remap = np.full(len(labels), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    codes = remap[codes]
    labels = [labels[i] for i in used]
    active = layer_kept > 0
    active_codes = codes[active]
    active_models = table["model_id"].to_numpy(np.int64)[active]
    filters = np.zeros(len(labels), np.int64)
    np.add.at(filters, active_codes, layer_kept[active])
    # distinct (group, model) pairs, counted per group
    pairs = np.unique(np.stack([active_codes, active_models], axis=1), axis=0)
    counts = pd.DataFrame({"group": labels,
                           "models": np.bincount(pairs[:, 0], minlength=len(labels)),
                           "layers": np.bincount(active_codes, minlength=len(labels)),
                           "filters": filters})
    info = {"labels": labels, "counts": counts, "hist_codes": codes, "pairs": None}
    n_groups = len(labels)
    if bootstrap and n_groups >= 2:
        if bootstrap * n_groups * n_groups * 8 > BOOTSTRAP_MAX_BYTES:
            warnings.warn(f"grouping {grouping.name!r}: {n_groups} groups are too many for "
                          f"{bootstrap} bootstrap replicates; no intervals", stacklevel=3)
        else:
            model_ids = np.unique(table["model_id"].to_numpy()[active])
            model_index = np.searchsorted(model_ids, table["model_id"].to_numpy())
            key = model_index * n_groups + codes
            pair_keys, pair_codes = np.unique(key[active], return_inverse=True)
            hist_codes = np.full(len(codes), -1, dtype=np.int64)
            hist_codes[active] = pair_codes
            info["hist_codes"] = hist_codes
            info["pairs"] = (pair_keys % n_groups, pair_keys // n_groups, len(model_ids))
    return info


def _grouping_result(grouping: Grouping, info: dict, hist: GroupedHistogram, basis: Basis,
                     bootstrap: int, seed: int, level: float) -> GroupingResult:
    labels = info["labels"]
    n_groups = len(labels)
    pairs = info["pairs"]
    if pairs is None:
        raw = hist.dense(n_groups)
    else:
        pair_group, pair_model, n_models = pairs
        pair_counts = hist.dense(len(pair_group))
        raw = np.zeros((n_groups, *pair_counts.shape[1:]), dtype=np.int64)
        np.add.at(raw, pair_group, pair_counts)
    probabilities = drift_module.normalise(raw)
    weights = basis.explained_variance_ratio
    parts = drift_module.contributions(probabilities, weights)
    matrix = parts.sum(axis=-1)
    order = drift_module.drift_order(matrix)
    ordered_labels = [labels[i] for i in order]
    frame = drift_module.drift_frame(matrix[np.ix_(order, order)], ordered_labels)
    intervals = None
    if pairs is not None:
        replicates = drift_module.bootstrap_drifts(pair_counts, pair_group, pair_model,
                                                   n_groups, n_models, weights, bootstrap, seed)
        intervals = drift_module.intervals(frame, replicates, order, level)
    return GroupingResult(name=grouping.name, labels=labels, histograms=probabilities,
                          counts=info["counts"], drift=frame,
                          contributions=parts[np.ix_(order, order)], intervals=intervals,
                          raw_counts=raw)
