"""Drift between groups of filters: symmetric KL divergence of coefficient histograms.

For groups P and Q with normalised histograms ``P_i``, ``Q_i`` per component i:

    drift(P, Q) = sum_i w_i * (KL(P_i || Q_i) + KL(Q_i || P_i)),   natural log,

with ``w`` the explained variance ratio of the basis. Histograms are normalised to
sum 1, then every empty bin is set to float32 machine epsilon and the histogram
renormalised to sum 1 (so every KL term is finite).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

EPS = float(np.finfo(np.float32).eps)


def normalise(counts: np.ndarray) -> np.ndarray:
    """Histograms ``(..., bins)`` -> probabilities, empty bins = float32 eps, sum 1.

    An all-zero histogram gives NaN (no distribution).
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total
    p[p == 0] = EPS
    return p / p.sum(axis=-1, keepdims=True)


def contributions(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted symmetric KL per component between all pairs of groups.

    Parameters
    ----------
    p : (groups, components, bins)
        Normalised histograms (see :func:`normalise`).
    weights : (components,)

    Returns
    -------
    numpy.ndarray
        ``(groups, groups, components)``; summed over the last axis it is the drift
        matrix. Exactly symmetric, zero on the diagonal, non-negative.
    """
    p = np.asarray(p, dtype=np.float64)
    log_p = np.log(p)
    weights = np.asarray(weights, dtype=np.float64)
    out = np.empty((len(p), len(p), p.shape[1]))
    for a in range(len(p)):
        # sum_b (p_a - q_b)(log p_a - log q_b) = KL(p||q) + KL(q||p), term by term >= 0
        out[a] = ((p[a] - p) * (log_p[a] - log_p)).sum(axis=-1) * weights
    return out


def drift_order(matrix: np.ndarray) -> np.ndarray:
    """Group order by increasing mean drift to the other groups (ties: original order)."""
    n = len(matrix)
    mean = matrix.sum(axis=1) / max(n - 1, 1)
    return np.argsort(mean, kind="stable")


def drift_frame(matrix: np.ndarray, labels: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, index=pd.Index(labels, name="group"),
                         columns=pd.Index(labels))
    return frame


def bootstrap_draws(n_models: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Per replicate, how often each model is drawn (``n_models`` draws with replacement).

    The stream is a function of ``seed`` only (``numpy.random.default_rng([seed, 0xB007])``,
    ``integers(0, n_models, n_models)`` per replicate).
    """
    rng = np.random.default_rng([seed, 0xB007])
    for _ in range(replicates):
        yield np.bincount(rng.integers(0, n_models, n_models), minlength=n_models)


def bootstrap_drifts(pair_counts: np.ndarray, pair_group: np.ndarray, pair_model: np.ndarray,
                     n_groups: int, n_models: int, weights: np.ndarray, replicates: int,
                     seed: int) -> np.ndarray:
    """Drift matrices of model-bootstrap replicates.

    Every replicate draws ``n_models`` models with replacement (seeded); a group's
    histogram is the sum of the drawn models' histograms in that group, each model
    counted as often as it was drawn. Pairs with a group that received no filters are
    NaN in that replicate.

    Parameters
    ----------
    pair_counts : int64 (pairs, components, bins)
        Histogram of every (model, group) pair that holds filters.
    pair_group, pair_model : (pairs,)
        Group code and model index (0 .. n_models - 1) of each pair.

    Returns
    -------
    numpy.ndarray
        ``(replicates, groups, groups)`` float64.
    """
    order = np.lexsort((pair_model, pair_group))
    counts = pair_counts[order].reshape(len(order), -1).astype(np.float64)
    groups = pair_group[order]
    models = pair_model[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    present = groups[starts]
    shape = pair_counts.shape[1:]
    out = np.full((replicates, n_groups, n_groups), np.nan)
    for r, draws in enumerate(bootstrap_draws(n_models, replicates, seed)):
        weighted = counts * draws[models][:, None]
        hist = np.zeros((n_groups, counts.shape[1]))
        hist[present] = np.add.reduceat(weighted, starts, axis=0)
        valid = hist.sum(axis=1) > 0
        if valid.sum() < 2:
            continue
        p = normalise(hist[valid].reshape(-1, *shape))
        matrix = contributions(p, weights).sum(axis=-1)
        index = np.flatnonzero(valid)
        out[r][np.ix_(index, index)] = matrix
    return out


def intervals(drift: pd.DataFrame, replicate_drifts: np.ndarray, order: np.ndarray,
              level: float) -> pd.DataFrame:
    """Percentile intervals of every pair of groups (upper triangle, drift order).

    ``replicate_drifts`` is indexed in label order; ``order`` maps drift order to it.
    Columns: ``group_a``, ``group_b``, ``drift`` (point estimate), ``low``, ``high``
    (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates, numpy's
    default linear interpolation), ``mean`` (mean of the replicates; ``mean - drift``
    estimates the bias), ``replicates`` (replicates in which both groups received
    filters; the others are left out).
    """
    labels = list(drift.index)
    alpha = (1 - level) / 2
    rows = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            values = replicate_drifts[:, order[i], order[j]]
            values = values[~np.isnan(values)]
            low, high, mean = ((np.quantile(values, alpha), np.quantile(values, 1 - alpha),
                                values.mean()) if len(values) else (np.nan,) * 3)
            rows.append((labels[i], labels[j], float(drift.iat[i, j]), float(low),
                         float(high), float(mean), len(values)))
    return pd.DataFrame(rows, columns=["group_a", "group_b", "drift", "low", "high", "mean",
                                       "replicates"])
