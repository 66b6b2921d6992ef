"""Plain-words readings of the report's tables and figures, computed from the numbers.

Each function takes the numbers a figure shows and returns sentences; none of them
draws or formats HTML, so the report and its tests read the same values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: How KL values are written in the readings (and searched for by the tests).
KL_FORMAT = "{:.3g}"


def kl(value: float) -> str:
    """A drift value as the readings write it.

    Examples
    --------
    >>> kl(0.123456)
    '0.123'
    """
    return KL_FORMAT.format(float(value))


def _names(items, limit: int = 8) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def composition(column: str, models: pd.Series, filters: pd.Series) -> str:
    """Which group of ``column`` dominates, by models and by filters.

    Parameters
    ----------
    models, filters : Series
        Model and filter counts per group (index = group labels).

    Examples
    --------
    >>> composition("Task", pd.Series({"A": 3, "B": 1}), pd.Series({"A": 90, "B": 10}))
    'Task: A holds 3 of 4 models (75%) and 90% of the filters; 2 groups.'
    """
    top = models.idxmax()
    total = int(models.sum())
    share = filters.get(top, 0) / filters.sum() if filters.sum() else 0.0
    return (f"{column}: {top} holds {int(models[top])} of {total} models "
            f"({models[top] / total:.0%}) and {share:.0%} of the filters; "
            f"{len(models)} group{'s' if len(models) != 1 else ''}.")


def explained_variance(ratio: np.ndarray) -> str:
    """How much of the filter shape the first eigen-images carry.

    Examples
    --------
    >>> explained_variance(np.array([0.5, 0.3, 0.1, 0.05, 0.05]))[:54]
    'c0 carries 50% of the variance of the scaled filters, '
    """
    ratio = np.asarray(ratio, dtype=float)
    cumulative = np.cumsum(ratio)
    top = min(3, len(ratio))
    needed = int(np.searchsorted(cumulative, 0.9 - 1e-12) + 1)
    return (f"c0 carries {ratio[0]:.0%} of the variance of the scaled filters, "
            f"c0 to c{top - 1} together {cumulative[top - 1]:.0%}; "
            f"{min(needed, len(ratio))} of {len(ratio)} eigen-images reach 90%.")


def quality(models: pd.DataFrame, layers: pd.DataFrame) -> list[str]:
    """Untrained models, models with degenerated layers, and where those layers sit.

    Parameters
    ----------
    models : DataFrame
        ``model``, ``quality_verdict``, ``degenerated_share``.
    layers : DataFrame
        ``verdict``, ``conv_depth_norm``.

    Examples
    --------
    >>> quality(db.models, db.layers)                                # doctest: +SKIP
    ['3 of 41 models look untrained: a, b, c.', ...]
    """
    n = len(models)
    verdicts = models["quality_verdict"]
    if (verdicts == "not assessed").all():
        return ["The quality metrics were not computed when this database was built."]
    untrained = models.loc[verdicts == "looks untrained", "model"]
    degenerated = models[verdicts == "has degenerated layers"].sort_values(
        "degenerated_share", ascending=False)
    out = []
    if len(untrained):
        out.append(f"{len(untrained)} of {n} models look untrained: {_names(untrained)}.")
    else:
        out.append(f"None of the {n} models looks untrained.")
    if len(degenerated):
        worst = degenerated.iloc[0]
        out.append(f"{len(degenerated)} of {n} models have degenerated layers; the most "
                   f"affected is {worst['model']} ({worst['degenerated_share']:.0%} of its "
                   "layers).")
    bad = layers["verdict"].isin(("sparse", "low-diversity", "random-like", "non-finite"))
    if bad.any():
        deep_bad = float(layers.loc[bad, "conv_depth_norm"].median())
        deep_all = float(layers["conv_depth_norm"].median())
        where = ("deeper than" if deep_bad > deep_all else
                 "shallower than" if deep_bad < deep_all else "as deep as")
        out.append(f"{int(bad.sum())} of {len(layers)} layers are not ok; they sit {where} "
                   f"the average layer (median normalised conv depth {deep_bad:.2f} vs "
                   f"{deep_all:.2f}).")
    return out


def coefficient_means(grouping, bin_edges: np.ndarray, component: int = 0) -> str:
    """Which groups have the highest and lowest mean coefficient on a component.

    Parameters
    ----------
    grouping : GroupingResult
        ``histograms`` (groups, d, bins), ``labels``.
    bin_edges : array (d, bins + 1)

    Examples
    --------
    >>> coefficient_means(result.groupings["Task"], result.bin_edges)  # doctest: +SKIP
    'On c0, Segmentation has the highest mean coefficient (≈0.41, from its histogram) ...'
    """
    # means from the histograms' bin centres: within half a bin of the exact ones
    means = group_means(grouping, bin_edges, component)
    if len(means) < 2:
        return (f"On c{component}, the only group {grouping.labels[0]} has mean "
                f"≈{means[0]:.2f}.")
    hi, lo = int(np.argmax(means)), int(np.argmin(means))
    return (f"On c{component}, {grouping.labels[hi]} has the highest mean coefficient "
            f"(≈{means[hi]:.2f}, from its histogram) and {grouping.labels[lo]} the lowest "
            f"(≈{means[lo]:.2f}).")


def group_means(grouping, bin_edges: np.ndarray, component: int = 0) -> np.ndarray:
    """Mean coefficient of each group (label order) from its histogram's bin centres.

    Examples
    --------
    >>> group_means(result.groupings["Task"], result.bin_edges)      # doctest: +SKIP
    array([ 0.12, -0.03])
    """
    edges = np.asarray(bin_edges, dtype=float)
    edges = edges[component] if edges.ndim == 2 else edges
    centres = 0.5 * (edges[1:] + edges[:-1])
    return np.asarray(grouping.histograms, dtype=float)[:, component] @ centres


def drift(grouping) -> list[str]:
    """The pair that drifts most (against the median pair) and the most distinct group.

    Examples
    --------
    >>> drift(result.groupings["Task"])                              # doctest: +SKIP
    ['Segmentation drifts most from Classification (KL 0.12, 3.0x the median ...', ...]
    """
    matrix = grouping.drift.to_numpy(dtype=float)
    labels = [str(label) for label in grouping.drift.index]
    n = len(labels)
    if n < 2:
        return [f"{grouping.name}: one group only ({_names(labels)}), so no drift."]
    i, j = divmod(int(np.argmax(matrix)), n)
    caution = _small_groups(grouping, (labels[i], labels[j]))
    if n == 2:
        return [f"{labels[j]} and {labels[i]} differ by KL {kl(matrix[i, j])}." + caution]
    median = float(np.median(matrix[np.triu_indices(n, 1)]))
    ratio = (f", {matrix[i, j] / median:.1f}x the median {kl(median)} of the "
             f"{n * (n - 1) // 2} pairs") if median > 0 else ""
    first = f"{labels[j]} drifts most from {labels[i]} (KL {kl(matrix[i, j])}{ratio})." + caution
    mean = matrix.sum(axis=1) / (n - 1)
    top = int(np.argmax(mean))
    subject = labels[top]
    if grouping.name == "depth":  # label order is shallow to deep
        rank = list(grouping.labels).index(grouping.drift.index[top])
        if rank in (0, len(grouping.labels) - 1):
            end = "deepest" if rank else "shallowest"
            subject = f"The {end} depth bin ({labels[top]})"
    second = (f"{subject} is the most distinct {grouping.name} group: mean KL "
              f"{kl(mean[top])} to the others, against {kl(float(np.median(mean)))} for the "
              "median group.")
    return [first, second]


def _small_groups(grouping, labels, models: int = 3) -> str:
    """A warning when a group of the pair holds fewer than ``models`` models: sparse
    groups drift by sampling noise too (see the bootstrap intervals of ``analyze``)."""
    counts = getattr(grouping, "counts", None)
    if counts is None or not {"group", "models"} <= set(counts.columns):
        return ""
    per_group = dict(zip(counts["group"].astype(str), counts["models"], strict=True))
    small = [f"{label} holds only {int(per_group[label])} model"
             + ("s" if per_group[label] != 1 else "")
             for label in dict.fromkeys(labels) if per_group.get(label, models) < models]
    return (" " + " and ".join(small) + ", so part of this is sampling noise.") if small else ""


def drift_spread(groupings) -> str:
    """Which grouping separates filters most: the largest median pairwise drift.

    Examples
    --------
    >>> drift_spread(result.groupings)                               # doctest: +SKIP
    'Groups differ most by Task (median pairwise KL 0.05) and least by depth (0.01).'
    """
    medians = {}
    for name, grouping in groupings.items():
        matrix = grouping.drift.to_numpy(dtype=float)
        if len(matrix) >= 2:
            medians[name] = float(np.median(matrix[np.triu_indices(len(matrix), 1)]))
    if not medians:
        return "No grouping has two groups, so there is no drift to compare."
    most = max(medians, key=medians.get)
    least = min(medians, key=medians.get)
    if most == least:
        return f"Median pairwise drift by {most}: KL {kl(medians[most])}."
    return (f"Groups differ most by {most} (median pairwise KL {kl(medians[most])}) "
            f"and least by {least} ({kl(medians[least])}).")


def runs(models) -> str:
    """How many models were verified to run and which do not; "not recorded" for a table
    without run columns (a published file).

    Examples
    --------
    >>> runs(pd.DataFrame({"model": ["a", "b"], "runs": ["yes", "no"],
    ...                    "run_reason": ["", "crashed"]}))
    '1 of 2 models were verified to run; 1 does not: b (crashed).'
    >>> runs(pd.DataFrame({"model": ["a"]}))
    'Whether the models run is not recorded in this file (its models table has no run columns).'
    """
    from ..runs import recorded, summarize_runs, verified_sentence

    if not recorded(models):
        return ("Whether the models run is not recorded in this file (its models table has "
                "no run columns).")
    return verified_sentence(summarize_runs(models), limit=8)


def datasheet(sheet: dict) -> str:
    """How much of the datasheet is answered, and how.

    Parameters
    ----------
    sheet : dict
        :func:`filterdb.datasheet.compute`'s result.

    Examples
    --------
    >>> datasheet({"sections": {"A": [{"source": "computed"}, {"source": "open"}]},
    ...            "open": ["x"]}).split("; ")
    ['1 of 2 datasheet questions are answered (1 computed from the database, 0 from provided \
prose)', '1 is open.']
    """
    rows = [row for section in sheet["sections"].values() for row in section]
    computed = sum(row["source"].startswith("computed") for row in rows)
    provided = sum(row["source"] == "provided" for row in rows)
    n_open = len(sheet["open"])
    return (f"{len(rows) - n_open} of {len(rows)} datasheet questions are answered "
            f"({computed} computed from the database, {provided} from provided prose); "
            f"{n_open} {'is' if n_open == 1 else 'are'} open.")
