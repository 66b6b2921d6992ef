"""Figures of the distribution-shift analysis, and the streamed 2-D histogram."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import filterdb
from filterdb.analysis import analyze, plots
from filterdb.synthetic_db import write_synthetic_db


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "synth.h5"
    write_synthetic_db(path, 120_000, n_models=16, seed=2)
    return filterdb.open(path)


@pytest.fixture(scope="module")
def result(synth):
    return analyze(synth, by=["Task", "Visual Category", "depth"], chunk_rows=20_000)


def _scaled(x):
    x = x.reshape(len(x), -1).astype(np.float64)
    peak = np.abs(x).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    return x / peak


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def _check_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


def test_write_figures(result, synth, tmp_path):
    written = plots.write_figures(result, tmp_path / "figs", db=synth)
    names = {p.name for p in written}
    expected = {"explained_variance", "eigen_images", "ridge_task", "ridge_visual_category",
                "ridge_depth", "drift_task", "drift_visual_category", "drift_depth",
                "drift_boxplots", "density_c0_c1"}
    assert names == {f"{stem}.{fmt}" for stem in expected for fmt in ("png", "svg")}
    for path in written:
        assert path.is_file()
        (_check_png if path.suffix == ".png" else _check_svg)(path)


def test_write_figures_uses_the_analysis_density(result, synth, tmp_path):
    assert result.density is not None
    written = plots.write_figures(result, tmp_path, formats=("png",))
    assert tmp_path / "density_c0_c1.png" in written
    # the analysis's c0-c1 histogram and a streamed one over the same cells agree
    counts, ex, ey = result.density
    streamed, _, _ = plots.pair_histogram(synth, result.basis, ranges=((ex[0], ex[-1]),
                                                                       (ey[0], ey[-1])),
                                          bins=(len(ex) - 1, len(ey) - 1))
    assert counts.sum() == streamed.sum() == len(synth.select())
    assert np.abs(counts - streamed).sum() <= 0.001 * counts.sum()


def test_write_figures_formats_pair_and_group_bases(result, synth, tmp_path):
    counts = np.ones((10, 12))
    natural = analyze(synth, by=["Task"], where={"Visual Category": "natural"}).basis
    bases = {"all": result.basis, "natural": natural}
    written = plots.write_figures(
        result, tmp_path, formats=("pdf",), density=(counts, np.arange(11.0), np.arange(13.0)),
        pair=(1, 3), group_bases={"Visual Category": bases})
    names = {p.name for p in written}
    assert "density_c1_c3.pdf" in names and "eigen_images_visual_category.pdf" in names
    assert all(p.read_bytes()[:4] == b"%PDF" for p in written)


def test_figure_contents(result):
    fig = plots.cumulative_explained_variance(result.basis)
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), np.cumsum(result.basis.explained_variance_ratio))

    fig = plots.eigen_images(result.basis)
    assert len([ax for ax in fig.axes if ax.images]) == 9
    fig = plots.eigen_images({"a": result.basis, "b": result.basis.components}, n_components=4)
    assert len([ax for ax in fig.axes if ax.images]) == 8

    task = result.groupings["Task"]
    fig = plots.ridge_plot(task, result.bin_edges)
    axes = [ax for ax in fig.axes if ax.collections]
    assert len(axes) == 9
    assert len(axes[0].collections) == len(task.labels)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [str(x) for x in task.labels]

    fig = plots.drift_heatmap(task)
    image = fig.axes[0].images[0].get_array()
    assert np.allclose(image, task.drift.to_numpy())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(task.drift.columns)

    fig = plots.drift_boxplots(result.groupings)
    assert len(fig.axes[0].get_xticklabels()) == 3


def test_smoothing_keeps_each_sum():
    rng = np.random.default_rng(0)
    hist = rng.random((3, 9, 70))
    hist /= hist.sum(axis=2, keepdims=True)
    smooth = plots._smooth(hist, 1.0)
    assert np.allclose(smooth.sum(axis=2), 1)
    assert np.abs(np.diff(smooth, axis=2)).mean() < np.abs(np.diff(hist, axis=2)).mean()


def test_shape_mismatches_are_errors(result):
    task = result.groupings["Task"]
    with pytest.raises(ValueError, match="bin_edges"):
        plots.ridge_plot(task, result.bin_edges[:, :10])
    with pytest.raises(ValueError, match="edges"):
        plots.density_2d(np.ones((4, 4)), np.arange(6.0), np.arange(5.0))
    with pytest.raises(ValueError, match="square"):
        plots.eigen_images(np.eye(8))


def test_figure_names():
    assert plots.figure_name("Visual Category") == "visual_category"
    assert plots.figure_name("Task") == "task"
    assert plots.figure_name("conv_depth_norm (0.1 bins)").startswith("conv_depth_norm_0_1_bins")


def _coefficients(x, basis, pair):
    s = _scaled(x)
    return ((s - basis.mean) @ basis.components.T)[:, list(pair)]


def test_pair_histogram_equals_histogram2d(result):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 3, 3)).astype(np.float32)
    x[:10] = 0  # zero filters stay zero
    basis = result.basis
    coef = _coefficients(x, basis, (0, 2))
    ranges = ((np.quantile(coef[:, 0], 0.05), np.quantile(coef[:, 0], 0.95)),
              (coef[:, 1].min(), coef[:, 1].max()))
    expected, ex, ey = np.histogram2d(coef[:, 0], coef[:, 1], bins=(30, 20), range=ranges)
    chunks = [x[a:a + 700] for a in range(0, len(x), 700)]
    counts, edges_x, edges_y = plots.pair_histogram(chunks, basis, (0, 2), bins=(30, 20),
                                                    ranges=ranges)
    assert np.allclose(edges_x, ex) and np.allclose(edges_y, ey)
    # float32 projection: a value on a cell edge may land in the neighbour cell
    assert abs(int(counts.sum()) - int(expected.sum())) <= 2
    assert np.abs(counts - expected).sum() <= 10
    assert counts.dtype == np.int64


def test_pair_histogram_streams_a_database(result, synth):
    counts, ex, ey = plots.pair_histogram(synth, result.basis, bins=50, chunk_rows=10_000)
    assert counts.shape == (50, 50)
    assert counts.sum() == len(synth.select())  # default ranges hold every filter
    selection = synth.select(Task="Classification")
    part, _, _ = plots.pair_histogram(selection, result.basis, bins=50, chunk_rows=3000)
    coef = _coefficients(selection.read(), result.basis, (0, 1))
    expected, _, _ = np.histogram2d(coef[:, 0], coef[:, 1], bins=(ex, ey))
    assert np.abs(part - expected).sum() <= 10
    assert part.sum() == len(selection)


def test_no_pyplot_and_no_backend_change(tmp_path):
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from filterdb.analysis import plots\n"
        "fig = plots.density_2d(np.ones((3, 3)), np.arange(4.0), np.arange(4.0))\n"
        f"fig.savefig({str(tmp_path / 'x.png')!r}); fig.savefig({str(tmp_path / 'x.svg')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").stat().st_size > 0


def test_import_is_light():
    code = ("import sys\nimport filterdb.analysis.plots\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
