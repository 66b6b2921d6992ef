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
from ..datasheet import OPEN, identical_text, licence_text, version_text
from ..runs import RUNS_YES, recorded, summarize_runs
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
        key = models[column].fillna("(missing)").astype(str).replace("", "(empty)")
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


def verification(data) -> Section:
    """How many models were verified to run, those that do not and why, those not run."""
    models = data.models
    body = [markup.reading(readings.runs(models))]
    if recorded(models):
        summary = summarize_runs(models)
        body.append(markup.table(["runs", "models"],
                                 [[k, markup.number(v)] for k, v in summary.counts.items()],
                                 "runs-counts", [False, True]))
        if summary.failed:
            body.append("<h3>Models that do not run</h3>" + markup.table(
                ["model", "reason"], summary.failed, "runs-failed"))
        if summary.not_run:
            body.append("<h3>Models not run</h3>" + markup.table(
                ["reason", "models"], [[r, markup.number(n)] for r, n in summary.not_run.items()],
                "runs-not-run", [False, True]))
        body.append(_non_finite(models))
    return Section("runs", "Models verified to run", "".join(body))


def _non_finite(models: pd.DataFrame) -> str:
    """The models that run but output NaN or Inf, with their output shapes."""
    if "outputs_finite" not in models:
        return ""
    bad = models[(models["runs"] == RUNS_YES) & (models["outputs_finite"] == "no")]
    if bad.empty:
        return ""
    shapes = bad["output_shapes"] if "output_shapes" in bad else pd.Series("", bad.index)
    return "<h3>Models whose outputs hold NaN or Inf</h3>" + markup.table(
        ["model", "output shapes"], list(zip(bad["model"], shapes, strict=True)),
        "runs-non-finite")


def datasheet(data) -> Section:
    """The datasheet's versions, licence, computed facts and questions (open ones marked),
    from the same :func:`filterdb.datasheet.compute` data as ``filterdb datasheet``."""
    sheet = data.datasheet
    if sheet is None:
        return Section("datasheet", "Datasheet",
                       markup.reading(f"{data.datasheet_note[:1].upper()}"
                                      f"{data.datasheet_note[1:]}."))
    body = [markup.reading(readings.datasheet(sheet)), _versions(sheet),
            _licence(sheet["dataset"]["license"]), _facts(sheet["facts"], data.datasheet_note),
            _questions(sheet)]
    return Section("datasheet", "Datasheet", "".join(body))


def _versions(sheet: dict) -> str:
    body = f"<h3>Version</h3><p>{markup.text(version_text(sheet['dataset']))}</p>"
    if not sheet["versions"]:
        return body + "<p>No release recorded yet.</p>"
    rows = [[v["version"], v["date"], v["doi"], v["comment"]] for v in sheet["versions"]]
    return body + markup.table(["version", "date", "DOI", "comment"], rows,
                               "datasheet-versions")


def _licence(licence: dict) -> str:
    if not licence.get("name"):
        return ("<h3>Licence and attribution</h3><p>No licence is recorded in this file; "
                "the licence question is open.</p>")
    return f"<h3>Licence and attribution</h3><p>{markup.text(licence_text(licence))}</p>"


def _counts_table(header: list[str], counts: dict, table_id: str) -> str:
    rows = [[key, markup.number(n)] for key, n in counts.items()]
    return markup.table(header, rows, table_id, [False, True])


def _facts(facts: dict, note: str) -> str:
    """Instances per shape, composition, missing fields, redundancies and quality."""
    tables = [
        "<div><h3>Filters stored</h3>" + _counts_table(
            ["shape", "filters"], facts["filters"], "datasheet-filters") + "</div>",
        "<div><h3>Filters of all shapes</h3>" + _counts_table(
            ["shape", "filters (all layers)"], facts["filters_all_shapes"],
            "datasheet-filters-all-shapes") + "</div>"]
    tables += [f"<div><h3>Models per {markup.text(column)}</h3>" + _counts_table(
        [column, "models"], counts, f"datasheet-models-{plots.figure_name(column)}")
        + "</div>" for column, counts in facts["groupings"].items()]
    tables.append("<div><h3>Missing information</h3>" + _counts_table(
        ["field", "models with it empty"], facts["empty_fields"], "datasheet-empty-fields")
        + "</div>")
    body = ['<div class="tables">' + "".join(tables) + "</div>", "<h3>Redundancies</h3>"]
    words = identical_text(facts["identical_models"])
    body.append(f"<p>{markup.text(words[:1].upper() + words[1:])}.</p>")
    if "redundancy" in facts:
        rows = [[r["shape"], *(markup.number(r[k]) for k in (
            "filters", "duplicate_filters", "zero_filters", "shared_layers",
            "shared_layer_groups"))] for r in facts["redundancy"]]
        body.append(markup.table(["shape", "filters", "duplicates of an earlier filter",
                                  "all-zero filters", "layers shared between models",
                                  "groups of shared layers"], rows, "datasheet-redundancy",
                                 [False] + [True] * 5))
    else:
        body.append(f"<p>Duplicate filters: {markup.text(note or 'not counted')}.</p>")
    body.append(f"<h3>Degenerated layers and untrained models</h3><p>"
                f"{markup.text(_quality_words(facts))}</p>")
    return "<h3>Facts computed from the database</h3>" + "".join(body)


def _quality_words(facts: dict) -> str:
    if not facts.get("layers_assessed"):
        return "Layer quality was not assessed (no quality metrics in this file)."
    share = facts["degenerated_layers"] / facts["layers_assessed"]
    words = (f"{facts['degenerated_layers']:,} of {facts['layers_assessed']:,} assessed "
             f"layers ({share:.1%}) are degenerated")
    untrained = facts.get("untrained_models", [])
    return words + f"; {len(untrained)} model(s) look untrained" + (
        ": " + ", ".join(untrained) if untrained else "") + "."


def _questions(sheet: dict) -> str:
    rows = [[section, row["question"], OPEN if row["source"] == OPEN else row["answer"],
             row["source"]]
            for section, questions in sheet["sections"].items() for row in questions]
    return "<h3>Questions</h3>" + markup.table(["section", "question", "answer", "source"],
                                               rows, "datasheet-questions")


#: The report's sections in order; append builders to add sections.
SECTIONS: list[Callable] = [composition, verification, quality, pca, ridges, drift, datasheet]
