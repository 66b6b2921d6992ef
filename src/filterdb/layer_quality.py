"""Degeneration metrics of conv layers and the verdicts built on them.

Formulas follow the CNN Filter DB method (``method.md``) and agree with
torchconvquality 0.3.0 where that tool is defined. Where it breaks, the values
here are defined and documented:

=========================  ======================  ==========================
case                       torchconvquality        filterdb
=========================  ======================  ==========================
one output channel         orthogonality -inf      orthogonality 1.0 (no pairs)
one or two filters         NaN / negative norm     entropies 0.0 (no spread)
zero variance ratios       NaN (0 log 0)           0 log 0 = 0
all-zero layer             warnings, NaN           sparsity 1, entropies 0
no non-sparse filter       NaN clean entropies     clean entropies 0.0
float16 / bfloat16 input   raises                  computed in float64
=========================  ======================  ==========================

Normalised entropies of kernels other than 3x3 divide by the entropy of random
layers of the same size (:func:`random_entropy`); the published fit covers 3x3.
1x1 kernels have a one-dimensional spectrum: their entropies are 0 and the
entropy verdicts do not apply to them.

The variance spectrum comes from the k*k x k*k scatter matrix of each layer
(``eigvalsh``, batched over layers of equal kernel size) instead of an SVD of the
n x k*k filter matrix; orthogonality from a Gram matrix computed in row blocks.
BLAS runs single-threaded here: the matrices are small, and a busy-waiting
thread pool collapses when another process holds the other core.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

#: Logistic fit of the entropy of random layers against log2(n) (torchconvquality 0.3.0).
ENTROPY_FIT = (1.2618047, 2.30436435, 0.88767525, -0.31050834)
#: Rows of the Gram matrix per block: bounds memory at ~block x c_out floats.
GRAM_BLOCK_ROWS = 256
#: Values per batch of small layers assessed with one numpy call per statistic.
BATCH_VALUES = 1 << 18
#: Multiply-adds of a Gram matrix above which its row panels may be shared by the
#: threads; only a layer holding a large part of the set's Gram work is (see
#: :func:`_shared_gram_work`): whole layers per thread balance well otherwise.
SHARED_GRAM_WORK = 1 << 26
#: Rows per panel of a shared Gram matrix: enough panels for the threads to balance.
SHARED_PANEL_ROWS = 128
#: Unit-row copies of layers with shared Gram matrices held at once.
SHARED_GROUP_BYTES = 64 << 20
FLOAT32_MAX = float(np.finfo(np.float32).max)

METRIC_COLUMNS = ("n", "sparsity", "variance_entropy", "variance_entropy_norm",
                  "variance_entropy_clean", "variance_entropy_clean_norm", "orthogonality",
                  "weight_l1", "weight_l2", "weight_max")

OK, SPARSE, LOW_DIVERSITY, RANDOM_LIKE = "ok", "sparse", "low-diversity", "random-like"
NON_FINITE = "non-finite"


@dataclass(frozen=True)
class Thresholds:
    """Limits that turn metrics into verdicts (see ``docs/quality.md`` for how they were set).

    Attributes
    ----------
    sparse : float
        A layer with at least this share of sparse filters is ``sparse``.
    low_diversity : float
        A layer whose normalised clean entropy is below this is ``low-diversity``.
    random_like : float
        A layer whose normalised entropy is at least this, with sparsity below
        ``random_sparsity``, is ``random-like``.
    random_sparsity : float
        Fresh initialisations have almost no sparse filters.
    untrained_share : float
        A model is "looks untrained" when more than this share of layers is random-like.
    sparsity_eps : float
        Relative threshold for a sparse filter: every |value| < eps * max|W|.
    """

    sparse: float = 0.5
    low_diversity: float = 0.5
    random_like: float = 0.97
    random_sparsity: float = 0.01
    untrained_share: float = 0.5
    sparsity_eps: float = 0.01


def entropy_threshold(n: int | np.ndarray, d: int = 9) -> np.ndarray:
    """Expected variance entropy of a random layer of ``n`` filters with ``d`` values each.

    For 3x3 filters (d = 9) this is the published logistic fit; for other kernel
    sizes the mean entropy of seeded Gaussian layers of the same (n, d)
    (:func:`random_entropy`), since the fit only covers 9-dimensional spectra.
    """
    if d == 9:
        scale, x0, k, offset = ENTROPY_FIT
        return scale / (1 + np.exp(-k * (np.log2(np.maximum(n, 1)) - x0))) + offset
    return np.vectorize(lambda count: random_entropy(int(count), d), otypes=[float])(n)


@lru_cache(maxsize=4096)
def random_entropy(n: int, d: int, draws: int = 16) -> float:
    """Mean variance entropy of ``draws`` seeded layers of n iid Gaussian d-vectors.

    n above 4096 uses 4096: the spectrum of so many random filters is already flat.
    """
    n = min(n, 4096)
    if n < 3 or d < 2:
        return float("nan")
    rng = np.random.default_rng(n * 1009 + d)
    samples = rng.standard_normal((draws, n, d))
    samples -= samples.mean(axis=1, keepdims=True)
    values = np.clip(np.linalg.eigvalsh(np.einsum("snd,sne->sde", samples, samples)), 0, None)
    ratios = values / values.sum(axis=1, keepdims=True)
    logs = np.log10(ratios, out=np.zeros_like(ratios), where=ratios > 0)
    return float(np.mean(-(ratios * logs).sum(axis=1)))


def sparse_mask(filters: np.ndarray, eps: float = 0.01) -> np.ndarray:
    """Boolean per filter: every value below eps * max|W| (threshold 1 for an all-zero layer).

    Examples
    --------
    >>> sparse_mask(np.array([[0.0, 0.001], [1.0, 0.0]]))
    array([ True, False])
    """
    row_peak = np.abs(filters).max(axis=1, initial=0.0)
    threshold = float(row_peak.max(initial=0.0)) * eps
    return row_peak < (threshold if threshold > 0 else 1.0)


def variance_entropy(filters: np.ndarray) -> tuple[float, float]:
    """Entropy (log10) of the variance ratios of an (n, k*k) filter matrix, and that
    entropy divided by :func:`entropy_threshold` (n)."""
    filters = np.asarray(filters, dtype=np.float64)
    mean = filters.mean(axis=0) if len(filters) else np.zeros(filters.shape[1])
    full, _ = _scatters(filters, mean, np.zeros(len(filters), bool), 0)
    entropy, normalised = _entropy_from_scatter(full[None], np.array([len(filters)]))
    return float(entropy[0]), float(normalised[0])


def _entropy_from_scatter(scatter: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = scatter.shape[-1]
    values = np.clip(np.linalg.eigvalsh(scatter), 0.0, None)
    total = values.sum(axis=1, keepdims=True)
    ratios = np.divide(values, total, out=np.zeros_like(values), where=total > 0)
    logs = np.log10(ratios, out=np.zeros_like(ratios), where=ratios > 0)
    entropy = 0.0 - (ratios * logs).sum(axis=1)
    defined = (counts >= 3) & (d > 1)  # two filters span at most one direction
    entropy[~defined] = 0.0
    normalised = np.zeros_like(entropy)
    if defined.any():
        normalised[defined] = entropy[defined] / entropy_threshold(counts[defined], d)
    return entropy, normalised


def orthogonality(weight: np.ndarray, block_rows: int = GRAM_BLOCK_ROWS) -> float:
    """1 - mean |G - I| over off-diagonal pairs of the row-normalised (c_out, rest) weight.

    G is symmetric, so only its upper block triangle is computed, in row blocks of
    ``block_rows`` (float32 products as the reference does, float64 sums). Memory: one
    float32 copy of the weight plus one block of ``block_rows`` x c_out (8 MB at
    c_out = 4096). 1.0 for one output channel.
    """
    rows = np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    scale = _inverse_norms(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    return _orthogonality(_unit_rows(rows, scale), block_rows)


def _inverse_norms(squares: np.ndarray) -> np.ndarray:
    """1 / norm per row from squared norms (a zero norm stays 1), float64."""
    norms = np.sqrt(squares)
    norms[norms == 0] = 1.0
    return 1.0 / norms


def _unit_rows(rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows times their inverse norms, as float32."""
    if scale.max(initial=0.0) < FLOAT32_MAX:
        return rows * scale.astype(np.float32)[:, None]
    # 1/norm of a row of subnormal norm overflows float32: scale that layer in float64.
    return (rows * scale[:, None]).astype(np.float32)


def _orthogonality(unit: np.ndarray, block_rows: int) -> float:
    """1 - mean |G - I| off the diagonal, G the Gram matrix of the unit rows."""
    panels = map(partial(_panel_sum, unit, block_rows), range(0, len(unit), block_rows))
    return _from_total(sum(panels), len(unit))


def _from_total(total: float, c_out: int) -> float:
    """Orthogonality from sum |G - I| over all pairs; 1.0 without pairs."""
    return 1.0 - total / (c_out * (c_out - 1)) if c_out > 1 else 1.0


def _shared_orthogonality(group: list[tuple[int, np.ndarray]],
                          pool: ThreadPoolExecutor) -> list[tuple[int, float]]:
    """Orthogonality of each (layer, unit rows) of ``group``, every panel of every
    layer one task, largest first so that the threads finish together."""
    tasks = sorted(((position, start) for position, (_, unit) in enumerate(group)
                    for start in range(0, len(unit), SHARED_PANEL_ROWS)),
                   key=lambda task: -(len(group[task[0]][1]) - task[1]))
    sums = pool.map(lambda task: _panel_sum(group[task[0]][1], SHARED_PANEL_ROWS, task[1]),
                    tasks)
    totals = [0.0] * len(group)
    for (position, _), value in zip(tasks, sums, strict=True):
        totals[position] += value
    return [(index, _from_total(total, len(unit)))
            for (index, unit), total in zip(group, totals, strict=True)]


def _panel_sum(unit: np.ndarray, block_rows: int, start: int) -> float:
    """sum |G - I| over the rows start:start + block_rows. G is symmetric: only the
    columns from ``start`` on are computed, those right of the panel's square twice."""
    stop = min(start + block_rows, unit.shape[0])
    panel = unit[start:stop] @ unit[start:].T
    panel.flat[::panel.shape[1] + 1] -= 1   # the diagonal of the square part
    np.abs(panel, out=panel)
    if stop == unit.shape[0]:
        return float(panel.sum(dtype=np.float64))
    return (float(panel[:, :stop - start].sum(dtype=np.float64))
            + 2 * float(panel[:, stop - start:].sum(dtype=np.float64)))


@lru_cache(maxsize=4)
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """Our own threads over single-threaded BLAS: numpy releases the GIL in its
    kernels, and a thread that is not scheduled waits instead of spinning."""
    return ThreadPoolExecutor(threads, thread_name_prefix="filterdb-gram")


def default_threads() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """Inspecting the loaded BLAS libraries is slow; do it once per process."""
    return ThreadpoolController()


def layer_metrics(weights: Sequence[np.ndarray], eps: float = 0.01,
                  threads: int | None = None) -> list[dict]:
    """Metrics for each 4-D weight (c_out, c_in_per_group, kh, kw).

    Small layers of equal kernel size are batched (one numpy call per statistic for
    the batch); each layer is read in a few passes (float32 in, float64 sums); the
    spectra of layers with equal kernel size go through one batched ``eigvalsh``.
    BLAS runs single-threaded; batches are spread over ``threads`` Python threads
    (default: the CPUs available), which degrade gracefully when other processes
    hold the cores, unlike a spinning BLAS thread pool.
    Returns one dict per weight with the keys of :data:`METRIC_COLUMNS`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> row = layer_metrics([rng.standard_normal((64, 64, 3, 3))])[0]
    >>> round(row["variance_entropy"], 2), row["sparsity"]
    (0.95, 0.0)
    """
    for index, weight in enumerate(weights):
        if weight.ndim != 4:
            raise ValueError(f"weight {index} has shape {weight.shape}; expected 4-D")
    weights = [np.ascontiguousarray(weight, dtype=np.float32) for weight in weights]
    batches = _batches(weights)
    threads = threads or default_threads()
    # Threads pay off only when there is enough work to share.
    parallel = threads > 1 and sum(w.size for w in weights) >= 2**20
    results: list[dict] = [{} for _ in weights]
    share_from = _shared_gram_work(weights, threads) if parallel else math.inf
    spectra: dict[int, list[tuple[int, np.ndarray, int, np.ndarray, int]]] = {}

    shared: list[tuple[int, np.ndarray]] = []    # (layer, inverse row norms) for phase 2

    def one(batch: list[int]):
        return batch, _assess_batch([weights[index] for index in batch], eps, share_from)

    with _blas_controller().limit(limits=1):
        pool = _thread_pool(threads)
        assessed = pool.map(one, batches) if parallel else map(one, batches)
        for batch, outcomes in assessed:
            for index, (row, scatters, scale) in zip(batch, outcomes, strict=True):
                results[index] = row
                if scatters is not None:
                    spectra.setdefault(row["kernel_elements"], []).append((index, *scatters))
                if scale is not None:
                    shared.append((index, scale))
        # Large Gram matrices as row panels spread over the threads (a whole layer per
        # thread leaves one thread idle behind the largest), in groups that bound the
        # unit-row copies held at once.
        group: list[tuple[int, np.ndarray]] = []
        for number, (index, scale) in enumerate(shared):
            group.append((index, _unit_rows(weights[index].reshape(len(scale), -1), scale)))
            if number + 1 == len(shared) or sum(u.nbytes for _, u in group) >= SHARED_GROUP_BYTES:
                for index, value in _shared_orthogonality(group, pool):
                    results[index]["orthogonality"] = value
                group = []
        for items in spectra.values():
            stack = np.stack([m for item in items for m in (item[1], item[3])])
            counts = np.array([c for item in items for c in (item[2], item[4])])
            entropy, normalised = _entropy_from_scatter(stack, counts)
            for position, (index, *_) in enumerate(items):
                results[index].update(
                    variance_entropy=float(entropy[2 * position]),
                    variance_entropy_norm=float(normalised[2 * position]),
                    variance_entropy_clean=float(entropy[2 * position + 1]),
                    variance_entropy_clean_norm=float(normalised[2 * position + 1]))
    return results


def _batches(weights: list[np.ndarray]) -> list[list[int]]:
    """Indices of the layers assessed together: runs of consecutive non-empty layers of
    equal kernel size up to :data:`BATCH_VALUES` values; larger or empty layers alone."""
    batches: list[list[int]] = []
    size = 0
    for index, weight in enumerate(weights):
        previous = weights[batches[-1][-1]] if batches else None
        if (previous is not None and weight.size and previous.size
                and previous.shape[2:] == weight.shape[2:]
                and size + weight.size <= BATCH_VALUES):
            batches[-1].append(index)
            size += weight.size
        else:
            batches.append([index])
            size = weight.size
    return batches


def _gram_work(weight: np.ndarray) -> int:
    """Multiply-adds of a layer's Gram matrix: c_out^2 x (c_in * k * k)."""
    return weight.shape[0] * weight.size


def _shared_gram_work(weights: list[np.ndarray], threads: int) -> float:
    """Gram work from which a layer's panels are shared by the threads: a layer with
    half of one thread's share of the whole set or more would leave the other threads
    idle behind it (measured on ResNet-50's shapes: sharing smaller layers is slower)."""
    total = sum(_gram_work(weight) for weight in weights)
    return max(SHARED_GRAM_WORK, total / (2 * threads))


def _assess_batch(weights: list[np.ndarray], eps: float,
                  share_from: float = math.inf) -> list[tuple[dict, tuple | None, Any]]:
    """Per layer of a batch of equal kernel size: its metrics row, its full and clean
    scatter matrices with their counts (None for a layer holding NaN or Inf), and, for a
    layer whose Gram work is at least ``share_from``, the inverse row norms: its Gram
    matrix is left to the caller (its row then lacks ``orthogonality``); else None.

    Per-filter statistics run on the batch's filters transposed to (k*k, n): numpy
    reduces a short last axis one row at a time, ten times slower than across rows.
    """
    kh, kw = weights[0].shape[2:]
    d = kh * kw
    counts = [w.shape[0] * w.shape[1] for w in weights]
    if not sum(counts):     # one layer without filters
        rows = weights[0].reshape(weights[0].shape[0], -1)
        row = {**{key: 0.0 for key in METRIC_COLUMNS}, "n": 0, "kernel_elements": d,
               "orthogonality": _orthogonality(rows, GRAM_BLOCK_ROWS)}
        return [(row, (np.zeros((d, d)), 0, np.zeros((d, d)), 0), None)]
    starts = np.cumsum([0, *counts[:-1]])
    if len(weights) == 1 and d == 1:
        columns = weights[0].reshape(1, -1)    # already one row of filters
    else:
        columns = np.empty((d, sum(counts)), np.float32)
        for weight, start, n in zip(weights, starts, counts, strict=True):
            columns[:, start:start + n] = weight.reshape(n, d).T
    magnitude = np.abs(columns)
    # Per filter: its largest |value| and the sum of its |values| (a 1x1 filter is its
    # value: no reduction). Sums within a filter in float32 (at most k*k values:
    # relative error below 6e-7 for 3x3), across filters in float64; numpy's 1-D
    # reduceat is fast, its 2-D one is not.
    filter_peak = magnitude[0] if d == 1 else magnitude.max(axis=0)
    l1 = np.add.reduceat(filter_peak if d == 1 else magnitude.sum(axis=0), starts,
                         dtype=np.float64)   # not finite exactly when the layer holds NaN/Inf
    del magnitude
    peak = np.maximum.reduceat(filter_peak, starts)
    threshold = peak.astype(np.float64) * eps
    threshold[threshold <= 0] = 1.0
    sparse = filter_peak < np.repeat(threshold, counts)
    n_sparse = np.add.reduceat(sparse, starts)
    means = np.stack([np.add.reduceat(values, starts, dtype=np.float64)
                      for values in columns]) / counts if d > 1 else None
    # Squared norm of every output channel: its c_in filters' squares summed.
    row_starts = np.concatenate([np.arange(0, n, w.shape[1]) + start
                                 for w, n, start in zip(weights, counts, starts, strict=True)])
    filter_squares = (np.square(columns[0]) if d == 1
                      else np.einsum("ij,ij->j", columns, columns))
    row_squares = np.add.reduceat(filter_squares, row_starts, dtype=np.float64)
    # Squares of values below ~1e-19 underflow float32: redo those filters in float64.
    tiny = np.flatnonzero(filter_squares < 1e-30)
    if tiny.size:
        values = columns[:, tiny].astype(np.float64)
        exact = np.einsum("ij,ij->j", values, values) - filter_squares[tiny]
        np.add.at(row_squares, np.searchsorted(row_starts, tiny, side="right") - 1, exact)
    row_offsets = np.cumsum([0, *(w.shape[0] for w in weights)])
    scale = _inverse_norms(row_squares)
    finite = np.isfinite(l1)
    outcomes = []
    for position, weight in enumerate(weights):
        n = counts[position]
        if not finite[position]:
            outcomes.append(({**{key: np.nan for key in METRIC_COLUMNS}, "n": n,
                              "kernel_elements": d}, None, None))
            continue
        start, layer_sparse = starts[position], int(n_sparse[position])
        first_row, last_row = row_offsets[position], row_offsets[position + 1]
        rows = weight.reshape(weight.shape[0], -1)
        shared = _gram_work(weight) >= share_from
        if d > 1:
            full, clean = _scatters(weight.reshape(n, d), means[:, position],
                                    sparse[start:start + n], layer_sparse)
        else:   # a one-dimensional spectrum has entropy 0 whatever its variance
            full = clean = np.zeros((1, 1))
        row = {"n": n, "kernel_elements": d,
               "sparsity": layer_sparse / n,
               "weight_l1": float(l1[position]),
               "weight_l2": float(np.sqrt(row_squares[first_row:last_row].sum())),
               "weight_max": float(peak[position])}
        if not shared:
            row["orthogonality"] = _orthogonality(
                _unit_rows(rows, scale[first_row:last_row]), GRAM_BLOCK_ROWS)
        outcomes.append((row, (full, n, clean, n - layer_sparse),
                         scale[first_row:last_row] if shared else None))
    return outcomes


def _scatters(filters: np.ndarray, mean: np.ndarray, sparse: np.ndarray, n_sparse: int,
              chunk_rows: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Centred scatter matrices (n - 1 times the covariance) of all (n, d) filters of
    mean ``mean`` and of the non-sparse ones.

    Centred on the exact means: the one-pass ``sum(x x^T) - n m m^T`` cancels to
    noise when filters are near copies. The clean matrix is the full one less the
    sparse filters' share when those are few and the subtraction keeps at least
    1e-6 of the full trace (1e-10 relative error); otherwise a pass over the clean ones.
    """
    n, d = filters.shape
    full = _centred_scatter(filters, mean, chunk_rows)
    n_clean = n - n_sparse
    if not n_sparse:
        return full, full
    if not n_clean:
        return full, np.zeros((d, d))
    if n_sparse <= n_clean:
        removed = filters[sparse] - mean
        shift = -removed.sum(axis=0) / n_clean     # clean mean minus the full mean
        clean = full - removed.T @ removed - n_clean * np.outer(shift, shift)
        if np.trace(clean) >= 1e-6 * np.trace(full):
            return full, clean
    kept = filters[~sparse]
    return full, _centred_scatter(kept, kept.mean(axis=0, dtype=np.float64), chunk_rows)


def _centred_scatter(filters: np.ndarray, mean: np.ndarray, chunk_rows: int) -> np.ndarray:
    """sum (x - mean)(x - mean)^T over the rows, in float64 chunks."""
    scatter = np.zeros((filters.shape[1],) * 2)
    for start in range(0, len(filters), chunk_rows):
        centred = filters[start:start + chunk_rows] - mean
        scatter += centred.T @ centred
    return scatter


def layer_verdict(metrics: dict, thresholds: Thresholds = Thresholds()) -> tuple[str, str]:
    """(verdict, reason in words) for one layer's metrics."""
    if np.isnan(metrics["sparsity"]):
        return NON_FINITE, "weights hold NaN or Inf; metrics undefined"
    if metrics["sparsity"] >= thresholds.sparse:
        return SPARSE, (f"{metrics['sparsity']:.0%} of filters are near zero "
                        f"(limit {thresholds.sparse:.0%})")
    if metrics.get("kernel_elements", 9) < 2:
        return OK, "1x1 kernels: spectrum metrics do not apply"
    if (metrics["variance_entropy_norm"] >= thresholds.random_like
            and metrics["sparsity"] < thresholds.random_sparsity):
        return RANDOM_LIKE, (f"filters as diverse as random initialisation (normalised "
                             f"entropy {metrics['variance_entropy_norm']:.2f} >= "
                             f"{thresholds.random_like})")
    if metrics["n"] >= 3 and metrics["variance_entropy_clean_norm"] < thresholds.low_diversity:
        return LOW_DIVERSITY, (f"filters are copies of few patterns (normalised clean "
                               f"entropy {metrics['variance_entropy_clean_norm']:.2f} < "
                               f"{thresholds.low_diversity})")
    return OK, ""


def model_verdict(verdicts: Sequence[str], thresholds: Thresholds = Thresholds()) -> dict:
    """Share of degenerated layers and a model-level verdict."""
    n = len(verdicts)
    random_share = sum(v == RANDOM_LIKE for v in verdicts) / n if n else 0.0
    degenerated = sum(v != OK for v in verdicts) / n if n else 0.0
    if random_share > thresholds.untrained_share:
        verdict = "looks untrained"
    elif degenerated > 0:
        verdict = "has degenerated layers"
    else:
        verdict = "ok"
    return {"layers": n, "degenerated_share": degenerated, "random_like_share": random_share,
            "verdict": verdict}


def assess_layers(weights: Sequence[np.ndarray], thresholds: Thresholds = Thresholds(),
                  threads: int | None = None) -> tuple[list[dict], dict]:
    """Metrics, verdict and reason per layer, and the model-level summary.

    Returns
    -------
    rows : list of dict
        :data:`METRIC_COLUMNS` plus ``verdict`` and ``reason`` per weight.
    summary : dict
        See :func:`model_verdict`.
    """
    rows = layer_metrics(weights, thresholds.sparsity_eps, threads)
    for row in rows:
        row["verdict"], row["reason"] = layer_verdict(row, thresholds)
    return rows, model_verdict([row["verdict"] for row in rows], thresholds)
