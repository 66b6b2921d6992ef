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
n x k*k filter matrix. Norms, maxima, sparse filters and scatter matrices come from
one compiled kernel (numba, imported on first use); orthogonality from a Gram matrix
computed in blocks of its upper triangle (float32 BLAS). BLAS runs single-threaded
here: the blocks are spread over our own threads, since a busy-waiting BLAS thread
pool collapses when another process holds the other core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

#: Logistic fit of the entropy of random layers against log2(n) (torchconvquality 0.3.0).
ENTROPY_FIT = (1.2618047, 2.30436435, 0.88767525, -0.31050834)
#: Values per batch of small layers assessed with one kernel call.
BATCH_VALUES = 1 << 18
#: Multiply-adds (c_out^2 x c_in x k x k) up to which a layer's Gram matrix is computed
#: by the statistics kernel in float64; larger ones are float32 BLAS products in blocks.
SMALL_GRAM_WORK = 1 << 21
#: Rows of a diagonal block of a large Gram matrix (computed whole, with syrk).
GRAM_LEAF = 256
#: Largest side of an off-diagonal block of a large Gram matrix: 4 MB of float32.
GRAM_TILE = 1024
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
    scatter = np.zeros((filters.shape[1],) * 2)
    for start in range(0, len(filters), 1 << 14):
        centred = filters[start:start + (1 << 14)] - mean
        scatter += centred.T @ centred
    entropy, normalised = _entropy_from_scatter(scatter[None], np.array([len(filters)]))
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


def orthogonality(weight: np.ndarray) -> float:
    """1 - mean |G - I| over off-diagonal pairs of the row-normalised (c_out, rest) weight.

    G is symmetric, so only its upper triangle is computed, in blocks (float32 products
    as the reference does, float64 sums; see :func:`_gram_blocks`). Memory: one block of
    at most :data:`GRAM_TILE` x :data:`GRAM_TILE` floats (4 MB). 1.0 for one output channel.
    """
    rows = np.ascontiguousarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    plan = _GramPlan(rows, squares)
    return _from_total(plan.diagonal + sum(plan.block(*b) for b in _gram_blocks(len(rows))),
                       len(rows))


def _from_total(total: float, c_out: int) -> float:
    """Orthogonality from sum |G - I| over all pairs; 1.0 without pairs."""
    return 1.0 - total / (c_out * (c_out - 1)) if c_out > 1 else 1.0


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


def _gram_blocks(c_out: int, leaf: int | None = None,
                 tile: int | None = None) -> list[tuple[int, int, int, int]]:
    """(row start, row stop, column start, column stop) of blocks covering the upper
    triangle of a c_out x c_out Gram matrix once: the rows are halved recursively, the
    rectangle between the halves cut into tiles of at most ``tile`` x ``tile``; ranges of
    at most ``leaf`` rows are diagonal blocks (computed whole). Large square products run
    near the BLAS kernel's peak; thin row panels do not."""
    leaf = leaf or GRAM_LEAF
    tile = tile or GRAM_TILE
    blocks: list[tuple[int, int, int, int]] = []
    pending = [(0, c_out)]
    while pending:
        low, high = pending.pop()
        if high - low <= leaf:
            blocks.append((low, high, low, high))
            continue
        middle = low + -(-(high - low) // 2 // 64) * 64     # halves on 64-row boundaries
        blocks += [(r, min(r + tile, middle), c, min(c + tile, high))
                   for r in range(low, middle, tile) for c in range(middle, high, tile)]
        pending += [(middle, high), (low, middle)]
    return blocks


class _GramPlan:
    """sum |G - I| of one layer's row-normalised Gram matrix, block by block.

    A block multiplies the float32 rows as they are (no normalised copy of the layer) and
    scales the absolute products by the inverse row norms afterwards, with a matrix-vector
    product: sum |s_i s_j R_ij| = s_rows . (|R| s_cols). Rows whose squared norm is
    outside [1e-20, 1e30] (products could leave float32's range) are normalised block by
    block instead. The diagonal, |s_i^2 |w_i|^2 - 1|, comes from the float64 squared norms.
    """

    def __init__(self, rows: np.ndarray, squares: np.ndarray):
        self.rows = rows
        self.scale = _inverse_norms(squares)
        self.diagonal = float(np.abs(self.scale * self.scale * squares - 1.0).sum())
        nonzero = squares[squares > 0]
        self.normalise = bool(nonzero.size) and not (
            float(nonzero.min()) >= 1e-20 and float(nonzero.max()) <= 1e30)
        self.weights = (np.ones(len(rows), np.float32) if self.normalise
                        else self.scale.astype(np.float32))

    def work(self, block: tuple[int, int, int, int]) -> int:
        r0, r1, c0, c1 = block
        return (r1 - r0) * (c1 - c0) * self.rows.shape[1]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        if self.normalise:
            return _unit_rows(self.rows[start:stop], self.scale[start:stop])
        return self.rows[start:stop]

    def block(self, r0: int, r1: int, c0: int, c1: int) -> float:
        """This block's share of sum |G - I| off the diagonal (twice for blocks off it)."""
        left = self._rows(r0, r1)
        if c0 == r0:
            products = left @ left.T      # symmetric: numpy's syrk
            products.flat[::len(products) + 1] = 0.0
        else:
            products = left @ self._rows(c0, c1).T
        np.abs(products, out=products)
        total = float(np.dot(products @ self.weights[c0:c1],
                             self.weights[r0:r1].astype(np.float64)
                             if self.normalise else self.scale[r0:r1]))
        return total if c0 == r0 else 2.0 * total


@lru_cache(maxsize=4)
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """Our own threads over single-threaded BLAS: numpy and the compiled kernels release
    the GIL, and a thread that is not scheduled waits instead of spinning."""
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

    Per layer, one compiled pass reads the weights for the norms, the maximum and the
    column sums, a second finds the sparse filters (most are told by their first value),
    a third accumulates the centred scatter matrices; small layers of equal kernel size
    go through the kernel together, with their Gram matrices in float64. Larger Gram
    matrices are float32 BLAS products in blocks (:func:`_gram_blocks`); the spectra of
    layers with equal kernel size go through one batched ``eigvalsh``. BLAS runs
    single-threaded; batches and Gram blocks are spread over ``threads`` Python threads
    (default: the CPUs available), which degrade gracefully when other processes hold
    the cores, unlike a spinning BLAS thread pool.
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
    threads = threads or default_threads()
    # Threads pay off only when there is enough work to share.
    parallel = threads > 1 and sum(w.size for w in weights) >= 2**20
    results: list[dict] = [{} for _ in weights]
    spectra: dict[int, list[tuple[int, np.ndarray, int, np.ndarray, int]]] = {}
    plans: dict[int, _GramPlan] = {}
    kernel = _stats_kernel()

    def one(batch: list[int]):
        return batch, _assess_batch([weights[index] for index in batch], eps, kernel)

    with _blas_controller().limit(limits=1):
        pool = _thread_pool(threads) if parallel else None
        batches = _batches(weights)
        assessed = pool.map(one, batches) if pool else map(one, batches)
        for batch, outcomes in assessed:
            for index, (row, scatters, squares) in zip(batch, outcomes, strict=True):
                results[index] = row
                if scatters is not None:
                    spectra.setdefault(row["kernel_elements"], []).append((index, *scatters))
                if squares is not None:
                    rows = weights[index].reshape(len(squares), -1)
                    plans[index] = _GramPlan(rows, squares)
        # Gram blocks of all large layers, largest first, so that the threads finish
        # together; summed per layer in a fixed order whatever the threads.
        tasks = sorted(((index, block) for index, plan in plans.items()
                        for block in _gram_blocks(len(plan.rows))),
                       key=lambda task: -plans[task[0]].work(task[1]))
        sums = (pool.map if pool else map)(lambda task: plans[task[0]].block(*task[1]), tasks)
        totals = {index: [plan.diagonal] for index, plan in plans.items()}
        for (index, block), value in zip(tasks, sums, strict=True):
            totals[index].append((block, value))
        for index, parts in totals.items():
            total = parts[0] + sum(value for _, value in sorted(parts[1:]))
            results[index]["orthogonality"] = _from_total(total, len(plans[index].rows))
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


def _assess_batch(weights: list[np.ndarray], eps: float,
                  kernel) -> list[tuple[dict, tuple | None, np.ndarray | None]]:
    """Per layer of a batch of equal kernel size: its metrics row, its full and clean
    scatter matrices with their counts (None for a layer holding NaN or Inf), and, for a
    layer whose Gram matrix is left to BLAS (its row then lacks ``orthogonality``), its
    squared row norms; else None."""
    kh, kw = weights[0].shape[2:]
    d = kh * kw
    if not weights[0].size:     # one layer without filters: zero rows, G = 0
        c_out = weights[0].shape[0]
        n = c_out * weights[0].shape[1]
        row = {**{key: 0.0 for key in METRIC_COLUMNS}, "n": n, "kernel_elements": d,
               "orthogonality": _from_total(float(c_out), c_out)}
        return [(row, (np.zeros((d, d)), n, np.zeros((d, d)), 0), None)]
    values = (weights[0].reshape(-1) if len(weights) == 1
              else np.concatenate([w.reshape(-1) for w in weights]))
    c_outs = np.array([w.shape[0] for w in weights], np.int64)
    c_ins = np.array([w.shape[1] for w in weights], np.int64)
    offsets = np.cumsum([0, *(w.size for w in weights)]).astype(np.int64)
    row_offsets = np.cumsum([0, *c_outs]).astype(np.int64)
    layers = len(weights)
    l1 = np.empty(layers)
    peaks = np.empty(layers, np.uint32)
    squares = np.empty(int(row_offsets[-1]))
    n_sparse = np.zeros(layers, np.int64)
    scatters = np.zeros((layers, 2, d, d))
    gram = np.full(layers, np.nan)
    kernel(values, values.view(np.uint32), offsets, c_outs, c_ins, row_offsets, d, float(eps),
           SMALL_GRAM_WORK, l1, peaks, squares, n_sparse, scatters, gram)
    outcomes = []
    for position, weight in enumerate(weights):
        c_out = weight.shape[0]
        n = c_out * weight.shape[1]
        if not np.isfinite(l1[position]):
            outcomes.append(({**{key: np.nan for key in METRIC_COLUMNS}, "n": n,
                              "kernel_elements": d}, None, None))
            continue
        layer_squares = squares[row_offsets[position]:row_offsets[position + 1]]
        row = {"n": n, "kernel_elements": d,
               "sparsity": int(n_sparse[position]) / n,
               "weight_l1": float(l1[position]),
               "weight_l2": float(np.sqrt(layer_squares.sum())),
               "weight_max": float(peaks[position:position + 1].view(np.float32)[0])}
        if not np.isnan(gram[position]):
            row["orthogonality"] = _from_total(float(gram[position]), c_out)
        outcomes.append((row, (scatters[position, 0], n, scatters[position, 1],
                               n - int(n_sparse[position])),
                         layer_squares if np.isnan(gram[position]) else None))
    return outcomes


def warm() -> None:
    """Load what the first :func:`layer_metrics` call would: numba, the compiled kernel
    (from its disk cache) and the inspection of the BLAS libraries."""
    layer_metrics([np.ones((2, 2, 3, 3), np.float32)])


@lru_cache(maxsize=1)
def _stats_kernel():
    """:func:`_layer_stats` compiled (numba, imported on first use; machine code cached
    on disk next to this module, or in numba's user cache when that folder is read-only)."""
    import numba

    return numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_layer_stats)


#: Reassociation lets the compiler vectorise the sums; no assumption about NaN or Inf
#: (a layer holding them is recognised by its non-finite L1 norm).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _layer_stats(values, bits, offsets, c_outs, c_ins, row_offsets, d, eps, small_work,
                 l1, peaks, squares, n_sparse, scatters, gram):  # pragma: no cover - compiled
    """Statistics of each layer of a batch, ``values`` the layers' float32 weights one
    after the other (``bits`` the same memory as uint32).

    Writes per layer: sum |w| (``l1``, float64), max |w| as float32 bits (``peaks``;
    the bit patterns of non-negative floats order as the floats do), the float64 squared
    norm of every output channel (``squares``), the number of sparse filters, the full
    and clean scatter matrices (``scatters[layer, 0 / 1]``) and, for a Gram matrix of at
    most ``small_work`` multiply-adds, sum |G - I| in float64 (``gram``; left as it is
    for larger ones). A layer whose ``l1`` is not finite (NaN or Inf) gets nothing more.
    """
    chunk = 256
    for layer in range(c_outs.size):
        start = offsets[layer]
        c_out = c_outs[layer]
        row_length = c_ins[layer] * d
        n = c_out * c_ins[layer]
        first = row_offsets[layer]
        # Pass 1: norms, maximum, column sums (in blocks of whole filters, vectorised).
        block = np.zeros(16 * d)
        columns = np.zeros(d)
        total = 0.0
        peak = np.uint32(0)
        layer_values = values[start:start + n * d]
        for r in range(c_out):
            # one-dimensional views: the compiler vectorises loops over them
            row = layer_values[r * row_length:(r + 1) * row_length]
            row_bits = bits[start + r * row_length:start + (r + 1) * row_length]
            square = 0.0
            absolute = 0.0
            row_peak = np.uint32(0)
            for j in range(row_length):
                value = np.float64(row[j])
                square += value * value
                absolute += abs(value)
                row_peak = max(row_peak, row_bits[j] & np.uint32(0x7FFFFFFF))
            squares[first + r] = square
            total += absolute
            peak = max(peak, row_peak)
            if d > 1:
                offset = 0
                while offset + block.size <= row_length:
                    part = row[offset:offset + block.size]
                    for t in range(block.size):
                        block[t] += part[t]
                    offset += block.size
                for f in range(offset, row_length, d):
                    for a in range(d):
                        columns[a] += row[f + a]
        for f in range(0, block.size, d):
            for a in range(d):
                columns[a] += block[f + a]
        l1[layer] = total
        peaks[layer] = peak
        if not np.isfinite(total):
            continue
        as_float = np.empty(1, np.uint32)
        as_float[0] = peak
        threshold = np.float64(as_float.view(np.float32)[0]) * eps
        if threshold <= 0:
            threshold = 1.0
        # Pass 2: sparse filters, every |value| < threshold (most fail at the first value).
        sparse = 0
        sparse_sums = np.zeros(d)
        if d == 1:
            for j in range(start, start + n):
                sparse += abs(np.float64(values[j])) < threshold
        else:
            for f in range(n):
                base = start + f * d
                below = True
                for j in range(base, base + d):
                    if not abs(np.float64(values[j])) < threshold:
                        below = False
                        break
                if below:
                    sparse += 1
                    for a in range(d):
                        sparse_sums[a] += values[base + a]
        n_sparse[layer] = sparse
        # Pass 3: the non-sparse filters centred on their mean, the sparse ones on the
        # mean of all; full = clean + n_clean (shift)(shift)^T + sparse part: sums of
        # positive semi-definite terms, nothing cancels.
        if d > 1:
            clean_count = n - sparse
            full_mean = columns / n
            clean_mean = (columns - sparse_sums) / clean_count if clean_count else full_mean
            buffers = np.empty((2, d, chunk))   # [0]: non-sparse, [1]: sparse filters
            counts = np.zeros(2, np.int64)
            sums = np.zeros((2, d, d))
            # Without sparse filters: chunks of filters transposed, then their products.
            for low in range(0, n if sparse == 0 else 0, chunk):
                count = min(chunk, n - low)
                for a in range(d):
                    centred = buffers[0, a]
                    mean = clean_mean[a]
                    column = layer_values[low * d + a:(low + count) * d:d]
                    for i in range(count):
                        centred[i] = column[i] - mean
                for a in range(d):
                    left = buffers[0, a]
                    for b in range(a, d):
                        right = buffers[0, b]
                        s = 0.0
                        for i in range(count):
                            s += left[i] * right[i]
                        sums[0, a, b] += s
            for f in range(n + 1 if sparse else 0):
                if f < n:
                    base = start + f * d
                    below = sparse > 0
                    if below:
                        for j in range(base, base + d):
                            if not abs(np.float64(values[j])) < threshold:
                                below = False
                                break
                    which = 1 if below else 0
                    centre = full_mean if below else clean_mean
                    for a in range(d):
                        buffers[which, a, counts[which]] = values[base + a] - centre[a]
                    counts[which] += 1
                for which in range(2):
                    count = counts[which]
                    if count == chunk or (f == n and count):
                        for a in range(d):
                            left = buffers[which, a]
                            for b in range(a, d):
                                right = buffers[which, b]
                                s = 0.0
                                for i in range(count):
                                    s += left[i] * right[i]
                                sums[which, a, b] += s
                        counts[which] = 0
            clean = sums[0]
            rest = sums[1]
            for a in range(d):
                for b in range(a):
                    clean[a, b] = clean[b, a]
                    rest[a, b] = rest[b, a]
            for a in range(d):
                for b in range(d):
                    shift = (clean_mean[a] - full_mean[a]) * (clean_mean[b] - full_mean[b])
                    scatters[layer, 0, a, b] = clean[a, b] + clean_count * shift + rest[a, b]
                    scatters[layer, 1, a, b] = clean[a, b]
        # Small Gram matrices here, in float64.
        if c_out * c_out * row_length <= small_work:
            pairs = 0.0
            for i in range(c_out):
                norm_i = np.sqrt(squares[first + i])
                scale_i = 1.0 / norm_i if norm_i > 0 else 1.0
                pairs += abs(scale_i * scale_i * squares[first + i] - 1.0)
                row_i = layer_values[i * row_length:(i + 1) * row_length]
                for m in range(i + 1, c_out):
                    norm_m = np.sqrt(squares[first + m])
                    scale_m = 1.0 / norm_m if norm_m > 0 else 1.0
                    row_m = layer_values[m * row_length:(m + 1) * row_length]
                    dot = 0.0
                    for j in range(row_length):
                        dot += np.float64(row_i[j]) * np.float64(row_m[j])
                    pairs += 2.0 * abs(scale_i * scale_m * dot)
            gram[layer] = pairs


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
