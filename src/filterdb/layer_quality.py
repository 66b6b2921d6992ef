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

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController

#: Logistic fit of the entropy of random layers against log2(n) (torchconvquality 0.3.0).
ENTROPY_FIT = (1.2618047, 2.30436435, 0.88767525, -0.31050834)
#: Rows of the Gram matrix per block: bounds memory at ~block x c_out floats.
GRAM_BLOCK_ROWS = 256

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
    return _sparse_rows(np.abs(filters), eps)


def _sparse_rows(magnitude: np.ndarray, eps: float) -> np.ndarray:
    threshold = float(magnitude.max(initial=0.0)) * eps
    return (magnitude < (threshold if threshold > 0 else 1.0)).all(axis=1)


def variance_entropy(filters: np.ndarray) -> tuple[float, float]:
    """Entropy (log10) of the variance ratios of an (n, k*k) filter matrix, and that
    entropy divided by :func:`entropy_threshold` (n)."""
    filters = np.asarray(filters, dtype=np.float64)
    entropy, normalised = _entropy_from_scatter(_scatter(filters)[None], np.array([len(filters)]))
    return float(entropy[0]), float(normalised[0])


def _scatter(rows: np.ndarray, chunk_rows: int = 1 << 16) -> np.ndarray:
    """Centred sum of outer products (n - 1 times the covariance) of (n, d) rows.

    Two passes: the mean first, then products of centred float64 chunks; the
    one-pass ``sum(x x^T) - n m m^T`` cancels to noise when filters are near copies.
    """
    d = rows.shape[1]
    scatter = np.zeros((d, d))
    if len(rows) == 0:
        return scatter
    mean = rows.mean(axis=0, dtype=np.float64)
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start:start + chunk_rows] - mean
        scatter += chunk.T @ chunk
    return scatter


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
    ``block_rows`` (float32 products as the reference does, float64 sums). Rows are
    normalised in float64 first. Memory: one float32 copy of the weight plus one
    block of ``block_rows`` x c_out (8 MB at c_out = 4096). 1.0 for one output channel.
    """
    rows = np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    return _orthogonality(rows, norms, block_rows)


def _orthogonality(rows: np.ndarray, norms: np.ndarray, block_rows: int) -> float:
    c_out = rows.shape[0]
    if c_out < 2:
        return 1.0
    # Normalise in float64 (1/norm of a tiny row overflows float32), store as float32.
    scale = 1.0 / np.where(norms == 0, 1.0, norms)
    unit = np.empty(rows.shape, dtype=np.float32)
    for start in range(0, c_out, block_rows):
        unit[start:start + block_rows] = rows[start:start + block_rows] * scale[
            start:start + block_rows, None]

    def block_sum(start: int) -> float:
        """sum |G - I| over the rows of one block; G is symmetric, so only the columns
        from the block's first row on are computed and the rest counted twice."""
        stop = min(start + block_rows, c_out)
        block = unit[start:stop] @ unit[start:].T
        index = np.arange(stop - start)
        block[index, index] -= 1
        np.abs(block, out=block)
        square = float(block[:, :stop - start].sum(dtype=np.float64))
        return square + 2 * float(block[:, stop - start:].sum(dtype=np.float64))

    total = sum(map(block_sum, range(0, c_out, block_rows)))
    return 1.0 - total / (c_out * (c_out - 1))


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

    Each layer is read in a few passes (float32 in, float64 sums); the spectra of
    layers with equal kernel size go through one batched ``eigvalsh``. BLAS runs
    single-threaded; layers are spread over ``threads`` Python threads (default:
    the CPUs available), which degrade gracefully when other processes hold the
    cores, unlike a spinning BLAS thread pool.
    Returns one dict per weight with the keys of :data:`METRIC_COLUMNS`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> row = layer_metrics([rng.standard_normal((64, 64, 3, 3))])[0]
    >>> round(row["variance_entropy"], 2), row["sparsity"]
    (0.95, 0.0)
    """
    results: list[dict] = []
    spectra: dict[int, list[tuple[int, np.ndarray, int, np.ndarray, int]]] = {}
    for index, weight in enumerate(weights):
        if weight.ndim != 4:
            raise ValueError(f"weight {index} has shape {weight.shape}; expected 4-D")

    def one(weight):
        return _one_layer(np.asarray(weight, dtype=np.float32), eps)

    threads = threads or default_threads()
    # Threads pay off only when there is enough work to share.
    parallel = threads > 1 and len(weights) > 1 and sum(w.size for w in weights) >= 2**20
    with _blas_controller().limit(limits=1):
        assessed = _thread_pool(threads).map(one, weights) if parallel else map(one, weights)
        for index, (row, scatters) in enumerate(assessed):
            results.append(row)
            if scatters is not None:
                spectra.setdefault(row["kernel_elements"], []).append((index, *scatters))
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


def _one_layer(weight: np.ndarray, eps: float):
    """Sparsity, norms and orthogonality of one float32 layer, plus its full and clean
    scatter matrices with their counts (None for a layer holding NaN or Inf)."""
    c_out, c_in, kh, kw = weight.shape
    n, d = c_out * c_in, kh * kw
    if not np.isfinite(weight).all():
        return {**{key: np.nan for key in METRIC_COLUMNS}, "n": n, "kernel_elements": d}, None
    filters = weight.reshape(n, d)
    magnitude = np.abs(filters)
    sparse = _sparse_rows(magnitude, eps)
    n_sparse = int(sparse.sum())
    full = _scatter(filters)
    clean = full if n_sparse == 0 else _scatter(filters[~sparse])
    rows = weight.reshape(c_out, -1)
    row_norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    row = {"n": n, "kernel_elements": d,
           "sparsity": n_sparse / n if n else 0.0,
           "orthogonality": _orthogonality(rows, row_norms, GRAM_BLOCK_ROWS),
           "weight_l1": float(magnitude.sum(dtype=np.float64)),
           "weight_l2": float(np.sqrt(np.square(row_norms).sum())),
           "weight_max": float(magnitude.max(initial=0.0))}
    return row, (full, n, clean, n - n_sparse)


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
