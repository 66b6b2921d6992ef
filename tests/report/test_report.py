"""``filterdb report``: sections, numbers equal to the database's tables, readings equal
to the analysis's values, self-containment, escaping and errors."""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.analysis import analyze
from filterdb.report import collect, readings, render
from filterdb.report.sections import worst_layers
from filterdb.store.dataset import LICENSE

from .conftest import Tables

SECTION_IDS = ["composition", "runs", "quality", "eigen-images", "ridges", "drift", "datasheet"]
GROUPINGS = ["Task", "Visual Category", "depth"]


def text_of(document: str) -> str:
    """The page's text, tags dropped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", document))


def test_cli_writes_one_self_contained_file(small_report, small_html):
    path, stderr = small_report
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # nothing beside it
    for step in ("report: reading and analysing", "report: drawing the figures",
                 f"report: wrote {path}"):
        assert step in stderr
    assert re.findall(r'<section id="([^"]+)"', small_html) == SECTION_IDS
    # 1 composition chart, 2 PCA figures, one ridge per grouping, box plots, heat maps
    images = re.findall(r'<img src="([^"]*)"', small_html)
    assert len(images) == 1 + 2 + 3 + 1 + 3
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for attribute in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', small_html):
        assert attribute.startswith(("data:", "#")), attribute
    assert not re.search(r"<(script|link|iframe|object|embed)\b", small_html)
    # the only address is the licence's, as text (its paragraph and the questions table)
    assert re.findall(r"https?://[^\s<]+", small_html) == [LICENSE["url"]] * 2


def test_composition_tables_equal_the_models_table(small_db, small_tables):
    models = filterdb.open(small_db).models
    filters = models["filter_id_stop"] - models["filter_id_start"]
    for column in ("Task", "Visual Category", "Framework"):
        rows = small_tables[f"composition-{column.lower().replace(' ', '_')}"]
        assert rows[0] == [column, "models", "3x3 filters", "share of filters"]
        shown = {r[0]: (int(r[1].replace(",", "")), int(r[2].replace(",", ""))) for r in rows[1:]}
        expected = {key: (int((models[column] == key).sum()), int(filters[models[column] == key]
                                                                   .sum()))
                    for key in models[column].unique()}
        assert shown == expected
    layers = filterdb.open(small_db).layers
    depth = small_tables["composition-depth"]
    assert sum(int(r[2].replace(",", "")) for r in depth[1:]) == int(
        layers.loc[(layers["kh"] == 3) & (layers["kw"] == 3), "n_filters"].sum())


def test_an_empty_index_field_is_shown_as_empty_in_composition():
    """As info, analyze and the datasheet call it, not a blank cell."""
    from types import SimpleNamespace

    import pandas as pd

    from filterdb.report.sections import composition_counts

    models = pd.DataFrame({"Task": ["Classification", ""], "Visual Category": ["", ""],
                           "Framework": ["ONNX", "ONNX"], "filter_id_start": [0, 10],
                           "filter_id_stop": [10, 15]})
    layers = pd.DataFrame({"kh": [3], "kw": [3], "conv_depth_norm": [0.0], "model_id": [0],
                           "n_filters": [15]})
    tables = composition_counts(SimpleNamespace(models=models, layers=layers))
    assert tables["Task"].loc["(empty)", "filters"] == 5
    assert list(tables["Visual Category"].index) == ["(empty)"]


def test_quality_tables_equal_the_tables(small_db, small_tables, small_data):
    db = filterdb.open(small_db)
    models = db.models.set_index("model")
    rows = small_tables["quality-models"]
    assert rows[0][:1] == ["model"] and len(rows) - 1 == len(models)
    header = rows[0]
    for row in rows[1:]:
        cells = dict(zip(header, row, strict=True))
        model = models.loc[cells["model"]]
        assert cells["verdict"] == model["quality_verdict"]
        assert cells["degenerated layers"] == f"{model['degenerated_share']:.0%}"
        assert cells["random-like layers"] == f"{model['random_like_share']:.0%}"
        assert int(cells["layers"]) == model["n_layers"]
    # untrained and degenerated models first
    verdicts = [dict(zip(header, r, strict=True))["verdict"] for r in rows[1:]]
    assert verdicts == sorted(verdicts, key=lambda v: v == "ok")
    bad = db.layers[db.layers["verdict"] != "ok"]
    shown = small_tables["quality-layers"][1:]
    assert len(shown) == min(len(bad), 15) > 0
    assert {(r[0], r[1], r[4]) for r in shown} == {
        (models.index[models["model_id"] == m][0], n, v)
        for m, n, v in bad[["model_id", "name", "verdict"]].itertuples(index=False)}
    counts = {r[0]: int(r[1]) for r in small_tables["quality-verdicts"][1:]}
    assert counts == db.models["quality_verdict"].value_counts().to_dict()


def test_readings_agree_with_the_analysis(small_db, small_html):
    """Recompute the drift with the engine and find the sentences the numbers imply."""
    page = text_of(small_html)
    result = analyze(small_db, by=GROUPINGS)
    for name in GROUPINGS:
        drift = result.groupings[name].drift
        values = drift.to_numpy()
        i, j = np.unravel_index(np.argmax(values), values.shape)
        pair_median = np.median(values[np.triu_indices(len(values), 1)])
        assert (f"{drift.index[j]} drifts most from {drift.index[i]} "
                f"(KL {values[i, j]:.3g}, {values[i, j] / pair_median:.1f}x the median "
                f"{pair_median:.3g}") in page
        mean = values.sum(axis=1) / (len(values) - 1)
        assert f"mean KL {mean.max():.3g} to the others" in page
        # the most distinct group is the last in drift order (sorted by mean drift)
        assert drift.index[int(np.argmax(mean))] == drift.index[-1]
    ratio = result.basis.explained_variance_ratio
    assert (f"c0 carries {ratio[0]:.0%} of the variance of the scaled filters, "
            f"c0 to c2 together {ratio[:3].sum():.0%}") in page
    medians = {name: np.median(g.drift.to_numpy()[np.triu_indices(len(g.drift), 1)])
               for name, g in result.groupings.items()}
    most = max(medians, key=medians.get)
    assert f"Groups differ most by {most} (median pairwise KL {medians[most]:.3g})" in page
    rows = {r[0]: r for r in pd.DataFrame(result.groupings["Task"].counts).to_numpy()}
    assert rows  # the group table below each heat map lists the analysed filters
    for group, models, layers, n in rows.values():
        assert f"{group} {models} {layers} {n:,}" in re.sub(r"\s+", " ", page)


def test_quality_reading_names_untrained_models():
    models = pd.DataFrame({"model": ["a", "b", "c", "d"],
                           "quality_verdict": ["looks untrained", "ok", "looks untrained",
                                               "has degenerated layers"],
                           "degenerated_share": [1.0, 0.0, 0.8, 0.25]})
    layers = pd.DataFrame({"verdict": ["random-like", "ok", "sparse", "ok"],
                           "conv_depth_norm": [1.0, 0.0, 0.9, 0.5]})
    sentences = readings.quality(models, layers)
    assert sentences[0] == "2 of 4 models look untrained: a, c."
    assert sentences[1].startswith("1 of 4 models have degenerated layers; the most affected "
                                   "is d (25% of its layers)")
    assert "2 of 4 layers are not ok; they sit deeper than the average layer" in sentences[2]


def test_depth_reading_names_the_deepest_bin(small_data):
    grouping = small_data.result.groupings["depth"]
    values = np.zeros((3, 3))
    values[2, :2] = values[:2, 2] = [0.3, 0.1]  # 0.9-1.0 is far from both others
    values[0, 1] = values[1, 0] = 0.01
    labels = ["0.0-0.1", "0.4-0.5", "0.9-1.0"]
    fake = type(grouping)(name="depth", labels=labels, histograms=grouping.histograms[:3],
                          counts=grouping.counts, contributions=grouping.contributions,
                          drift=pd.DataFrame(values, index=labels, columns=labels))
    first, second = readings.drift(fake)
    assert first == "0.9-1.0 drifts most from 0.0-0.1 (KL 0.3, 3.0x the median 0.1 of the 3 pairs)."
    assert second.startswith("The deepest depth bin (0.9-1.0) is the most distinct depth group")


HOSTILE = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"


def hostile_report(small_db) -> str:
    data = collect(small_db, by=["Task", "depth"])
    data.models.loc[0, "model"] = HOSTILE
    same_task = data.models["Task"] == data.models.loc[0, "Task"]
    data.models.loc[same_task, "Task"] = FORMULA
    data.models.loc[1, "Visual Category"] = '"><img src=x onerror=alert(2)>'
    data.models.loc[2, ["runs", "run_reason"]] = ["no", FORMULA]
    data.datasheet["versions"] = [{"version": "1.0.0", "date": "2026-01-01", "doi": FORMULA,
                                   "comment": HOSTILE}]
    data.datasheet["sections"]["Motivation"][0].update(answer=HOSTILE, source="provided")
    return render(data)


def test_database_strings_are_escaped_and_not_formulas(small_db):
    document = hostile_report(small_db)
    assert HOSTILE not in document and "<img src=x" not in document
    assert html.escape(HOSTILE) in document
    tables = Tables(document).tables
    cells = [cell for rows in tables.values() for row in rows for cell in row]
    assert HOSTILE in cells  # shown as text
    assert not [c for c in cells if c.startswith(("=", "+", "@"))]
    assert "'" + FORMULA in cells
    # negative numbers stay numbers
    assert not [c for c in cells if c.startswith("'-")]


def test_max_filters_samples_per_model(small_db, cli, tmp_path):
    path = tmp_path / "r.html"
    result = cli("report", small_db, "-o", path, "--max-filters", "60", "--group-by", "Task")
    assert result.returncode == 0, result.stderr
    page = text_of(path.read_text())
    n_models = len(filterdb.open(small_db).models)
    match = re.search(r"([\d,]+) of ([\d,]+) 3x3 filters analysed: at most (\d+) per model", page)
    assert match and int(match[3]) == 60 // n_models
    assert int(match[1]) <= 60
    assert "By Task" in page and "By depth" not in page


def test_no_analysis_and_default_output(small_db, cli, tmp_path):
    copy = tmp_path / "db"
    shutil.copytree(small_db.parent, copy)
    result = cli("report", copy / small_db.name, "--no-analysis")
    assert result.returncode == 0, result.stderr
    out = copy / (small_db.name + ".report.html")
    assert result.stdout.strip() == str(out)
    assert re.findall(r'<section id="([^"]+)"', out.read_text()) == [
        "composition", "runs", "quality", "datasheet"]


@pytest.mark.parametrize("make", ["missing", "text", "hdf5"])
def test_bad_input_is_one_line_exit_2(cli, tmp_path, make):
    path = tmp_path / "x.h5"
    if make == "text":
        path.write_text("not a database")
    elif make == "hdf5":
        import h5py

        h5py.File(path, "w").close()
    result = cli("report", path, "-o", tmp_path / "r.html")
    assert result.returncode == 2
    assert result.stderr.startswith("filterdb: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_worst_layers_order(small_data):
    worst = worst_layers(small_data)
    ranks = worst["rank"].tolist()
    assert ranks == sorted(ranks)
    random_like = worst[worst["verdict"] == "random-like"]["variance_entropy_norm"].tolist()
    assert random_like == sorted(random_like, reverse=True)


def test_two_groups_and_a_small_group(small_data):
    labels = ["A", "B"]
    counts = pd.DataFrame({"group": labels, "models": [1, 5], "layers": [1, 5],
                           "filters": [9, 45]})
    fake = replace(small_data.result.groupings["Task"], labels=labels, counts=counts,
                   drift=pd.DataFrame([[0, 0.2], [0.2, 0]], index=labels, columns=labels))
    assert readings.drift(fake) == [
        "B and A differ by KL 0.2. A holds only 1 model, so part of this is sampling noise."]


def test_unknown_grouping_is_an_error(small_db, cli, tmp_path):
    result = cli("report", small_db, "-o", tmp_path / "r.html", "--group-by", "Nonsense")
    assert result.returncode == 2
    assert "no column 'Nonsense' to group by" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_database_without_quality_metrics(small_zoo, tmp_path):
    from filterdb.build import BuildOptions, build

    database = tmp_path / "plain.h5"
    build(small_zoo.parent, database, index=small_zoo,
          options=BuildOptions(workers=1, quality=False))
    document = text_of(render(collect(database, analysis=False)))
    assert "The quality metrics were not computed when this database was built." in document
    assert "Worst layers" not in document


def test_mean_coefficient_readings_say_they_come_from_the_histograms():
    """Bin centres give the means within half a bin: the reading marks them as such."""
    from types import SimpleNamespace

    from filterdb.report.readings import coefficient_means

    edges = np.linspace(-1.0, 1.0, 5)  # centres -0.75, -0.25, 0.25, 0.75
    histograms = np.zeros((2, 1, 4))
    histograms[0, 0, 3] = histograms[1, 0, 0] = 1.0
    grouping = SimpleNamespace(labels=["a", "b"], histograms=histograms)
    assert coefficient_means(grouping, edges) == (
        "On c0, a has the highest mean coefficient (≈0.75, from its histogram) and b the "
        "lowest (≈-0.75).")
