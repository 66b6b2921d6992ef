"""The report's sections: one small builder per section, listed in :data:`SECTIONS`.

A builder takes the :class:`~filterdb.report.ReportData` and returns a
:class:`Section` (or None to leave the section out, e.g. no analysis). Add a
section by writing a builder and appending it to ``SECTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis import plots
from ..analysis.groups import DEPTH_LABELS, depth_bin
from . import markup, readings

#: Columns of the models table the composition section counts by, when present.
COMPOSITION_COLUMNS = ("Task", "Visual Category", "Framework")
#: Layer verdicts that mean "not ok", most severe first.
BAD_VERDICTS = ("non-finite", "sparse", "low-diversity", "random-like")
#: Rows of the worst-layers table.
WORST_LAYERS = 15


@dataclass
class Section:
    """One section of the report: an anchor for links, a title and its HTML body."""

    anchor: str
    title: str
    body: str


def _png(fig, alt: str, caption: str = "") -> str:
    return markup.image(plots.figure_bytes(fig, "png", dpi=110), alt, caption)


def composition_counts(data) -> dict[str, pd.DataFrame]:
    """Models and 3x3 filters per group of each composition column and per depth bin.

    Returns
    -------
    dict of column -> DataFrame indexed by group with ``models`` and ``filters``
    (3x3 filters), largest first (depth bins shallow to deep).

    Examples
    --------
    >>> composition_counts(data)["Task"].loc["Classification", "models"]  # doctest: +SKIP
    30
    """
    models = data.models
    filters = models["filter_id_stop"] - models["filter_id_start"]
    out = {}
    for column in COMPOSITION_COLUMNS:
        if column not in models.columns:
            continue
        key = models[column].fillna("(missing)").astype(str)
        frame = pd.DataFrame({"models": key.value_counts(),
                              "filters": filters.groupby(key).sum()}).fillna(0).astype(np.int64)
        out[column] = frame.sort_values(["models", "filters"], ascending=False)
    layers = data.layers[(data.layers["kh"] == 3) & (data.layers["kw"] == 3)]
    bins = pd.Series(np.asarray(DEPTH_LABELS)[depth_bin(layers["conv_depth_norm"])],
                     index=layers.index)
    depth = pd.DataFrame({"models": layers["model_id"].groupby(bins).nunique(),
                          "filters": layers["n_filters"].groupby(bins).sum()})
    out["depth"] = depth.reindex([b for b in DEPTH_LABELS if b in depth.index]).astype(np.int64)
    return out


def _composition_figure(counts: dict[str, pd.DataFrame]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.2 + 0.25 * max(len(c) for c in counts.values())),
                 layout="constrained")
    axes = fig.subplots(1, len(counts), squeeze=False)[0]
    for ax, (column, frame) in zip(axes, counts.items(), strict=True):
        what = "filters" if column == "depth" else "models"
        labels = [str(label) for label in frame.index][::-1]
        ax.barh(labels, frame[what].to_numpy()[::-1], color="C0")
        ax.set_title(f"{what} by {column}", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    return fig


def composition(data) -> Section:
    """Models and filters by task, visual category, framework and depth."""
    counts = composition_counts(data)
    n_filters = int((data.models["filter_id_stop"] - data.models["filter_id_start"]).sum())
    body = [f"<p>{len(data.models):,} models, {len(data.layers):,} conv layers, "
            f"{n_filters:,} 3x3 filters.</p>"]
    body += [markup.reading(readings.composition(column, frame["models"], frame["filters"]))
             for column, frame in counts.items() if column != "depth"]
    body.append(_png(_composition_figure(counts), "composition charts",
                     "Models per group; 3x3 filters per normalised conv depth bin."))
    tables = []
    for column, frame in counts.items():
        rows = [[label, markup.number(row.models), markup.number(row.filters),
                 markup.percent(row.filters / max(frame["filters"].sum(), 1))]
                for label, row in zip(frame.index, frame.itertuples(), strict=True)]
        tables.append(f"<div><h3>{markup.text(column)}</h3>" + markup.table(
            [column, "models", "3x3 filters", "share of filters"], rows,
            f"composition-{plots.figure_name(column)}", [False, True, True, True]) + "</div>")
    body.append('<div class="tables">' + "".join(tables) + "</div>")
    return Section("composition", "Composition", "".join(body))


def worst_layers(data, limit: int = WORST_LAYERS) -> pd.DataFrame:
    """The layers that are not ok, most severe first, with their model's name.

    Order: by verdict (non-finite, sparse, low-diversity, random-like), then sparse
    layers by sparsity (high first), low-diversity ones by clean normalised entropy
    (low first), random-like ones by normalised entropy (high first).

    Examples
    --------
    >>> worst_layers(data, 5)[["model", "name", "verdict"]]            # doctest: +SKIP
    """
    layers = data.layers[data.layers["verdict"].isin(BAD_VERDICTS)].copy()
    names = data.models.set_index("model_id")["model"]
    layers["model"] = names.reindex(layers["model_id"]).to_numpy()
    layers["rank"] = layers["verdict"].map({v: i for i, v in enumerate(BAD_VERDICTS)})
    severity = np.select([layers["verdict"] == "sparse", layers["verdict"] == "low-diversity",
                          layers["verdict"] == "random-like"],
                         [-layers["sparsity"], layers["variance_entropy_clean_norm"],
                          -layers["variance_entropy_norm"]], 0.0)
    layers["severity"] = severity
    return layers.sort_values(["rank", "severity", "model_id", "layer"]).head(limit)


def quality(data) -> Section:
    """Verdicts per model and the worst layers, from the quality columns of the tables."""
    models = data.models
    body = [markup.reading(sentence) for sentence in readings.quality(models, data.layers)]
    verdicts = models["quality_verdict"].value_counts()
    body.append(markup.table(["verdict", "models"],
                           [[v, markup.number(c)] for v, c in verdicts.items()],
                           "quality-verdicts", [False, True]))
    order = {"looks untrained": 0, "has degenerated layers": 1}
    ranked = models.assign(_rank=models["quality_verdict"].map(order).fillna(2)) \
        .sort_values(["_rank", "degenerated_share", "model"], ascending=[True, False, True])
    extra = [c for c in ("Task", "Visual Category") if c in models.columns]
    rows = [[row["model"], *(row[c] for c in extra), markup.number(row["n_layers"]),
             row["quality_verdict"], markup.percent(row["degenerated_share"]),
             markup.percent(row["random_like_share"])] for _, row in ranked.iterrows()]
    body.append("<h3>Models</h3>" + markup.table(
        ["model", *extra, "layers", "verdict", "degenerated layers", "random-like layers"],
        rows, "quality-models", [False] * (1 + len(extra)) + [True, False, True, True]))
    worst = worst_layers(data)
    if len(worst):
        rows = [[row["model"], row["name"], markup.number(row["conv_depth_norm"], 2),
                 markup.number(row["n_filters"]), row["verdict"], markup.number(row["sparsity"]),
                 markup.number(row["variance_entropy_norm"]),
                 markup.number(row["variance_entropy_clean_norm"]), row["reason"]]
                for _, row in worst.iterrows()]
        body.append("<h3>Worst layers</h3>" + markup.table(
            ["model", "layer", "conv depth (norm.)", "filters", "verdict", "sparsity",
             "entropy (norm.)", "clean entropy (norm.)", "reason"], rows, "quality-layers",
            [False, False, True, True, False, True, True, True, False]))
    return Section("quality", "Quality per model", "".join(body))


def pca(data) -> Section | None:
    """Eigen-images and explained variance of the analysed filters."""
    if data.result is None:
        return None
    basis = data.result.basis
    body = [f"<p>{data.sample_note}</p>",
            markup.reading(readings.explained_variance(basis.explained_variance_ratio)),
            _png(plots.cumulative_explained_variance(basis), "explained variance",
                 "Explained variance ratio per principal component and cumulative."),
            _png(plots.eigen_images(basis, title=f"Eigen-images ({int(basis.n):,} filters)"),
                 "eigen-images", "The principal components of the peak-scaled filters as "
                 "3x3 images, with their share of the variance.")]
    rows = [[f"c{i}", markup.number(r), markup.number(c)] for i, (r, c) in enumerate(
        zip(basis.explained_variance_ratio, np.cumsum(basis.explained_variance_ratio),
            strict=True))]
    body.append(markup.table(["component", "explained variance ratio", "cumulative"], rows,
                           "pca-variance", [False, True, True]))
    return Section("eigen-images", "Eigen-images and explained variance", "".join(body))


def ridges(data) -> Section | None:
    """Coefficient densities per group, one ridge plot per grouping."""
    if data.result is None or not data.result.groupings:
        return None
    body = []
    for name, grouping in data.result.groupings.items():
        body.append(f"<h3>By {markup.text(name)}</h3>")
        body.append(markup.reading(readings.coefficient_means(grouping, data.result.bin_edges)))
        body.append(_png(plots.ridge_plot(grouping, data.result.bin_edges),
                         f"ridge plot by {name}",
                         "Density of each PCA coefficient per group (smoothed histograms)."))
    return Section("ridges", "Coefficient distributions (ridge plots)", "".join(body))


def drift(data) -> Section | None:
    """KL heat maps per grouping and box plots of the pairwise drifts."""
    if data.result is None or not data.result.groupings:
        return None
    groupings = data.result.groupings
    body = [markup.reading(readings.drift_spread(groupings)),
            _png(plots.drift_boxplots(groupings), "drift box plots",
                 "Pairwise drifts (weighted symmetric KL) of each grouping.")]
    for name, grouping in groupings.items():
        body.append(f"<h3>By {markup.text(name)}</h3>")
        body += [markup.reading(s) for s in readings.drift(grouping)]
        if len(grouping.drift) >= 2:
            body.append(_png(plots.drift_heatmap(grouping), f"drift heat map by {name}",
                             "Weighted symmetric KL between groups, sorted by mean drift."))
        counts = grouping.counts
        rows = [[r.group, *(markup.number(v) for v in (r.models, r.layers, r.filters))]
                for r in counts.itertuples()]
        body.append(markup.table([name, "models", "layers", "filters analysed"], rows,
                               f"drift-groups-{plots.figure_name(name)}",
                               [False, True, True, True]))
    return Section("drift", "Distribution shift (KL heat maps and box plots)", "".join(body))


#: The report's sections in order; append builders to add sections.
SECTIONS: list[Callable] = [composition, quality, pca, ridges, drift]
