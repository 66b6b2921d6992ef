"""Figures of the distribution-shift analysis (matplotlib; PNG and SVG).

Every figure function takes result objects of :mod:`filterdb.analysis.engine`
(never the raw filters) and returns a :class:`matplotlib.figure.Figure`. Figures
are built with the object-oriented API on figures that pyplot does not manage, so
nothing here selects a backend, opens a window or changes a notebook's settings;
``Figure.savefig`` renders PNG with Agg and SVG with the SVG backend, headless.

The one figure that needs the filters, the 2-D log-density of two coefficients,
takes a 2-D count array: :func:`pair_histogram` makes it in one streamed pass over
a database or selection, in bounded memory.

Examples
--------
>>> from filterdb.analysis.plots import write_figures        # doctest: +SKIP
>>> write_figures(result, "figures/", db=filterdb.open("filters.h5"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

#: Files that :func:`write_figures` writes (before the format suffix).
EXPLAINED_VARIANCE = "explained_variance"
EIGEN_IMAGES = "eigen_images"
DRIFT_BOXPLOTS = "drift_boxplots"


def figure_name(text: str) -> str:
    """File-name form of a grouping, as the analysis names its CSVs: lower case, runs
    of other characters -> ``_``.

    >>> figure_name("Visual Category")
    'visual_category'
    """
    from .groups import slug

    return slug(str(text))


def figure_bytes(fig, fmt: str = "png", dpi: int = 150) -> bytes:
    """Render a figure to bytes in any matplotlib format, e.g. to embed it in a page.

    Examples
    --------
    >>> png = figure_bytes(drift_heatmap(result.groupings["Task"]))   # doctest: +SKIP
    >>> png[:4]                                                        # doctest: +SKIP
    b'\\x89PNG'
    """
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _kernel_shape(d: int, kernel_shape) -> tuple[int, int]:
    if kernel_shape is not None:
        kh, kw = kernel_shape
        if kh * kw != d:
            raise ValueError(f"kernel shape {kh}x{kw} does not hold {d} values")
        return int(kh), int(kw)
    side = math.isqrt(d)
    if side * side != d:
        raise ValueError(f"components of length {d} are not square; pass kernel_shape")
    return side, side


# --------------------------------------------------------------------------- PCA


def cumulative_explained_variance(basis, title: str | None = None):
    """Bars: explained variance ratio per component; line: its cumulative sum.

    Parameters
    ----------
    basis : Basis
        ``explained_variance_ratio`` (d,) is used, and ``n`` for the title.
    """
    ratio = np.asarray(basis.explained_variance_ratio, dtype=float)
    steps = np.arange(len(ratio))
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    ax.bar(steps, ratio, color="0.75", label="per component")
    cumulative = np.cumsum(ratio)
    ax.plot(steps, cumulative, "o-", color="C0", label="cumulative")
    for x, y in zip(steps, cumulative, strict=True):
        ax.annotate(f"{y:.0%}", (x, y), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set_xticks(steps, [f"c{i}" for i in steps])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("explained variance ratio")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    n = getattr(basis, "n", None)
    ax.set_title(title or ("Explained variance" + (f" ({int(n):,} filters)" if n else "")))
    return fig


def eigen_images(bases, kernel_shape: tuple[int, int] | None = None, n_components=None,
                 title: str | None = None):
    """The principal components as images: one row per basis, one column per component.

    Parameters
    ----------
    bases : Basis, array or mapping
        One basis (or its ``components`` array, rows = flattened eigen-images), or
        ``{label: Basis or components}`` for one row per subset (e.g. per group).
    kernel_shape : (kh, kw), optional
        Image shape; default square (3x3 for 9 values).
    n_components : int, optional
        Columns to show; default all.
    """
    if not isinstance(bases, Mapping):
        bases = {"": bases}
    rows = {label: (np.asarray(getattr(b, "components", b), dtype=float),
                    getattr(b, "explained_variance_ratio", None)) for label, b in bases.items()}
    if not rows:
        raise ValueError("no bases to show")
    d = next(iter(rows.values()))[0].shape[1]
    first = next(iter(bases.values()))
    if kernel_shape is None and not isinstance(first, np.ndarray):
        kernel_shape = getattr(first, "shape", None)  # Basis.shape, e.g. (3, 3)
    kh, kw = _kernel_shape(d, kernel_shape)
    shown = min(n_components or d, *(c.shape[0] for c, _ in rows.values()))
    fig = _figure(1.25 * shown + 1.4, 1.35 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), shown, squeeze=False)
    limit = max(float(np.abs(c[:shown]).max()) for c, _ in rows.values()) or 1.0
    image = None
    for r, (label, (components, ratio)) in enumerate(rows.items()):
        for i in range(shown):
            ax = axes[r, i]
            image = ax.imshow(components[i].reshape(kh, kw), cmap="RdBu_r", vmin=-limit,
                              vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            heading = f"c{i}" if r == 0 else ""
            if ratio is not None:
                heading = (heading + "\n" if heading else "") + f"{float(ratio[i]):.1%}"
            ax.set_title(heading, fontsize=8)
        if label:
            axes[r, 0].set_ylabel(str(label), rotation=0, ha="right", va="center", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(title or "Eigen-images", fontsize=10)
    return fig


# --------------------------------------------------------------------------- groups


def _smooth(density: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Light Gaussian smoothing along the last axis (a KDE look); keeps each sum."""
    if sigma_bins <= 0:
        return density
    half = max(1, int(math.ceil(3 * sigma_bins)))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sigma_bins) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(density, [(0, 0)] * (density.ndim - 1) + [(half, half)], mode="edge")
    width = density.shape[-1]
    out = sum(weight * padded[..., k:k + width] for k, weight in enumerate(kernel))
    sums = density.sum(axis=-1, keepdims=True)
    got = out.sum(axis=-1, keepdims=True)
    return out * np.divide(sums, got, out=np.ones_like(got), where=got > 0)


def ridge_plot(grouping, bin_edges: np.ndarray, components: Sequence[int] | None = None,
               smooth_bins: float = 1.0, overlap: float = 1.8):
    """Coefficient densities per group (rows, stacked) and component (columns).

    Parameters
    ----------
    grouping : GroupingResult
        ``histograms`` (groups, d, bins), normalised per group and component, and
        ``labels``.
    bin_edges : array (d, bins + 1) or (bins + 1,)
        The shared histogram edges (``AnalysisResult.bin_edges``).
    components : sequence of int, optional
        Components to show; default all.
    smooth_bins : float
        Gaussian smoothing, in bins (0: the raw histograms).
    overlap : float
        Ridge height relative to the spacing between groups.
    """
    hist = np.asarray(grouping.histograms, dtype=float)
    groups, d, bins = hist.shape
    edges = np.asarray(bin_edges, dtype=float)
    if edges.ndim == 1:
        edges = np.broadcast_to(edges, (d, len(edges)))
    if edges.shape != (d, bins + 1):
        raise ValueError(f"bin_edges {edges.shape} do not match histograms {hist.shape}")
    components = list(range(d)) if components is None else list(components)
    labels = [str(label) for label in grouping.labels]
    widths = np.diff(edges, axis=1)  # (d, bins)
    density = _smooth(hist, smooth_bins) / widths[None]
    fig = _figure(1.7 * len(components) + 1.6, 0.42 * groups + 1.3)
    axes = fig.subplots(1, len(components), sharey=True, squeeze=False)[0]
    colours = _colours(groups)
    for ax, i in zip(axes, components, strict=True):
        centres = 0.5 * (edges[i, 1:] + edges[i, :-1])
        peak = float(density[:, i].max()) or 1.0
        for g in range(groups):
            base = groups - 1 - g  # first label on top
            curve = base + overlap * density[g, i] / peak
            ax.fill_between(centres, base, curve, color=colours[g], alpha=0.75, lw=0,
                            zorder=2 * g)
            ax.plot(centres, curve, color="0.15", lw=0.5, zorder=2 * g + 1)
        ax.set_title(f"c{i}", fontsize=9)
        ax.set_xlim(edges[i, 0], edges[i, -1])
        ax.tick_params(axis="x", labelsize=7)
        ax.spines[["top", "right", "left"]].set_visible(False)
    axes[0].set_yticks(np.arange(groups)[::-1], labels, fontsize=8)
    axes[0].tick_params(axis="y", length=0)
    axes[0].set_ylim(-0.1, groups - 1 + overlap + 0.1)
    fig.supxlabel("coefficient (filters scaled by their peak)", fontsize=9)
    fig.suptitle(f"Coefficient densities by {grouping.name}", fontsize=10)
    return fig


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.05, 0.9, max(n, 1))]


def drift_heatmap(grouping, annotate: bool | None = None):
    """The symmetric drift matrix of a grouping (groups sorted by mean drift).

    Parameters
    ----------
    grouping : GroupingResult
        ``drift``: square DataFrame, index = columns = labels.
    annotate : bool, optional
        Write the values in the cells; default when there are at most 12 groups.
    """
    drift = grouping.drift
    values = drift.to_numpy(dtype=float)
    labels = [str(label) for label in drift.index]
    n = len(labels)
    size = max(3.5, 0.45 * n + 2.2)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="magma_r", vmin=0)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if annotate if annotate is not None else n <= 12:
        top = np.nanmax(values) if values.size else 0
        for r in range(n):
            for c in range(n):
                ax.text(c, r, _short(values[r, c]), ha="center", va="center", fontsize=6,
                        color="white" if values[r, c] > 0.6 * top else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="weighted symmetric KL")
    ax.set_title(f"Drift by {grouping.name}", fontsize=10)
    return fig


def _short(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def drift_boxplots(groupings: Mapping[str, object] | Iterable):
    """Box plot of the pairwise drifts (upper triangle) of each grouping."""
    items = list(groupings.values()) if isinstance(groupings, Mapping) else list(groupings)
    names, data = [], []
    for grouping in items:
        values = grouping.drift.to_numpy(dtype=float)
        upper = values[np.triu_indices(len(values), k=1)]
        names.append(f"{grouping.name}\n({len(values)} groups)")
        data.append(upper[np.isfinite(upper)])
    fig = _figure(1.6 * len(items) + 2.0, 4.0)
    ax = fig.add_subplot()
    ax.boxplot(data, tick_labels=names, showfliers=True, widths=0.5,
               flierprops={"markersize": 3})
    for x, values in enumerate(data, start=1):
        jitter = np.random.default_rng(x).uniform(-0.12, 0.12, len(values))
        ax.scatter(x + jitter, values, s=5, alpha=0.5, color="C0", zorder=3)
    ax.set_ylabel("pairwise drift (weighted symmetric KL)")
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Drift between groups", fontsize=10)
    return fig


# --------------------------------------------------------------------------- 2-D density


def density_2d(counts: np.ndarray, edges_x: np.ndarray, edges_y: np.ndarray,
               pair: tuple[int, int] = (0, 1)):
    """2-D log-density histogram of two coefficients.

    Parameters
    ----------
    counts : array (bins_x, bins_y)
        Filters per cell, as :func:`pair_histogram` or ``np.histogram2d`` return it.
    edges_x, edges_y : arrays
        Cell edges of the two coefficients (uniform).
    pair : (i, j)
        The component numbers, for the labels.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.shape != (len(edges_x) - 1, len(edges_y) - 1):
        raise ValueError(f"counts {counts.shape} do not match the edges "
                         f"({len(edges_x) - 1}, {len(edges_y) - 1})")
    total = counts.sum()
    with np.errstate(divide="ignore"):
        log = np.where(counts > 0, np.log10(counts / total if total else counts), np.nan)
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()
    image = ax.imshow(log.T, origin="lower", aspect="auto", cmap="viridis",
                      extent=(edges_x[0], edges_x[-1], edges_y[0], edges_y[-1]),
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, label="log10 share of filters")
    i, j = pair
    ax.set_xlabel(f"c{i}")
    ax.set_ylabel(f"c{j}")
    ax.set_title(f"c{i} vs c{j} ({int(total):,} filters)", fontsize=10)
    return fig


def pair_histogram(source, basis, pair: tuple[int, int] = (0, 1), bins: int = 100,
                   chunk_rows: int = 1 << 20, ranges=None):
    """Stream filters once and count them on a grid of two PCA coefficients.

    Each chunk is scaled by each filter's largest absolute value (zero filters stay
    zero), centred by ``basis.mean`` and projected on the two components; memory is
    one chunk whatever the size.

    Parameters
    ----------
    source : FilterDB, Selection or iterable of arrays
        A database (all its 3x3 filters), a selection, or chunks (n, kh, kw).
    basis : Basis
        ``mean``, ``components``; ``coef_min`` / ``coef_max`` give the default ranges.
    pair : (i, j)
        Components on the x and y axes.
    bins : int or (int, int)
    chunk_rows : int
        Filters read at once.
    ranges : ((lo, hi), (lo, hi)), optional
        Default: the basis's coefficient ranges of the two components.

    Returns
    -------
    counts : int64 array (bins_x, bins_y)
        Same convention as ``np.histogram2d`` (the last cell includes its upper edge;
        values outside the ranges are not counted).
    edges_x, edges_y : float64 arrays
    """
    i, j = pair
    bx, by = (bins, bins) if np.isscalar(bins) else bins
    if ranges is None:  # the basis's ranges, widened for float32 rounding
        if not np.isfinite([basis.coef_min[k] for k in pair]
                           + [basis.coef_max[k] for k in pair]).all():
            raise ValueError("the basis has no coefficient range; pass ranges")
        ranges = tuple(_widen(float(basis.coef_min[k]), float(basis.coef_max[k]))
                       for k in (i, j))
    (x0, x1), (y0, y1) = ranges
    if not (x1 > x0 and y1 > y0):
        x1, y1 = max(x1, x0 + 1e-6), max(y1, y0 + 1e-6)
    edges_x = np.linspace(x0, x1, bx + 1)
    edges_y = np.linspace(y0, y1, by + 1)
    project = np.asarray(basis.components, dtype=np.float32)[[i, j]]  # (2, d)
    # (x / peak - mean) @ P.T = (x @ P.T) / peak - mean @ P.T
    offset = (np.asarray(basis.mean, dtype=np.float32) @ project.T)[:, None]
    counts = np.zeros(bx * by, dtype=np.int64)
    for chunk in _chunks(source, chunk_rows):
        x = np.asarray(chunk, dtype=np.float32).reshape(len(chunk), -1)
        if not len(x):
            continue
        peak = _peak(x)
        coef = project @ x.T  # (2, n): BLAS is much faster this way round than x @ P.T
        coef /= peak
        coef -= offset
        ix = _bin_index(coef[0], x0, x1, bx)
        iy = _bin_index(coef[1], y0, y1, by)
        keep = (ix >= 0) & (iy >= 0)
        counts += np.bincount(ix[keep] * by + iy[keep], minlength=bx * by)
    return counts.reshape(bx, by), edges_x, edges_y


def _peak(x: np.ndarray) -> np.ndarray:
    """Largest absolute value of each row (1 for a zero row), column by column: several
    times faster than ``np.abs(x).max(axis=1)`` on short rows."""
    peak = np.abs(x[:, 0])
    for column in range(1, x.shape[1]):
        np.maximum(peak, np.abs(x[:, column]), out=peak)
    peak[peak == 0] = 1.0
    return peak


def _widen(lo: float, hi: float) -> tuple[float, float]:
    pad = 1e-5 * max(hi - lo, abs(lo), abs(hi), 1e-12)
    return lo - pad, hi + pad


def _bin_index(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Uniform bin of each value, -1 outside [lo, hi] (hi in the last bin)."""
    position = (values.astype(np.float64) - lo) * (bins / (hi - lo))
    index = np.floor(position).astype(np.int64)
    index[values == hi] = bins - 1
    index[(index < 0) | (index >= bins) | ~np.isfinite(position)] = -1
    return index


def _chunks(source, rows: int):
    if hasattr(source, "select"):  # a FilterDB
        source = source.select()
    if hasattr(source, "iter_chunks"):
        return source.iter_chunks(rows)
    if isinstance(source, np.ndarray):
        return (source[a:a + rows] for a in range(0, len(source), rows))
    return iter(source)


# --------------------------------------------------------------------------- all


def write_figures(result, outdir, formats: Sequence[str] = ("png", "svg"), *, db=None,
                  density=None, pair: tuple[int, int] = (0, 1),
                  group_bases: Mapping[str, Mapping[str, object]] | None = None,
                  dpi: int = 150) -> list[Path]:
    """Write every figure of an analysis result; returns the files written.

    Parameters
    ----------
    result : AnalysisResult
    outdir : str or Path
        Created if missing. Files: ``explained_variance``, ``eigen_images``,
        ``ridge_<grouping>``, ``drift_<grouping>``, ``drift_boxplots`` and, with
        ``db`` or ``density``, ``density_c<i>_c<j>``; grouping names as file names
        (lower case, other characters -> ``_``).
    formats : sequence of str
        Any matplotlib format; default PNG and SVG.
    db : FilterDB or Selection, optional
        Streamed once by :func:`pair_histogram` for the 2-D density.
    density : (counts, edges_x, edges_y), optional
        A 2-D histogram made already (then ``db`` is not read). Without ``density``
        and ``db``, the c0-c1 histogram the analysis made (``result.density``) is
        used when ``pair`` is (0, 1).
    pair : (i, j)
        Components of the 2-D density.
    group_bases : {grouping: {label: Basis}}, optional
        Per-group PCA bases: ``eigen_images_<grouping>`` with one row per group.
    dpi : int
        Resolution of raster formats.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, stem: str) -> None:
        for number, fmt in enumerate(formats):
            path = outdir / f"{stem}.{fmt.lstrip('.')}"
            fig.savefig(path, dpi=dpi)
            written.append(path)
            if number == 0:  # the layout is done: keep it for the other formats
                fig.set_layout_engine("none")
        fig.clear()

    basis = result.basis
    save(cumulative_explained_variance(basis), EXPLAINED_VARIANCE)
    save(eigen_images(basis, title=f"Eigen-images ({int(basis.n):,} filters)"), EIGEN_IMAGES)
    for name, bases in (group_bases or {}).items():
        save(eigen_images(bases, title=f"Eigen-images by {name}"),
             f"{EIGEN_IMAGES}_{figure_name(name)}")
    for name, grouping in result.groupings.items():
        stem = figure_name(name)
        save(ridge_plot(grouping, result.bin_edges), f"ridge_{stem}")
        save(drift_heatmap(grouping), f"drift_{stem}")
    if result.groupings:
        save(drift_boxplots(result.groupings), DRIFT_BOXPLOTS)
    if density is None and db is not None:
        density = pair_histogram(db, basis, pair)
    if density is None and tuple(pair) == (0, 1):
        density = getattr(result, "density", None)  # made by the analysis's own pass
    if density is not None:
        counts, edges_x, edges_y = density
        save(density_2d(counts, edges_x, edges_y, pair), f"density_c{pair[0]}_c{pair[1]}")
    return written
