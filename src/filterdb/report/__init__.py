"""One self-contained HTML report of a filter database.

:func:`collect` reads the tables and runs the distribution-shift analysis (on a
seeded sample of at most ``max_filters`` filters); :func:`render` turns that into
one HTML document, section by section (:data:`~filterdb.report.sections.SECTIONS`);
:func:`write_report` does both and writes the file. Figures are PNGs embedded as
``data:`` URIs and the CSS is inline: the file opens offline, alone, anywhere.

Examples
--------
>>> from filterdb.report import write_report                      # doctest: +SKIP
>>> write_report("demo/filters.h5", "report.html", by=["Task", "depth"])  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import FilterDBError
from . import markup
from .sections import SECTIONS, Section

#: Default groupings of the analysis: those of the paper.
DEFAULT_BY = ("Task", "Visual Category", "depth")
#: Default cap on the filters analysed: a few seconds per pass.
DEFAULT_MAX_FILTERS = 2_000_000

__all__ = ["DEFAULT_BY", "DEFAULT_MAX_FILTERS", "SECTIONS", "ReportData", "Section",
           "collect", "render", "write_report"]


@dataclass
class ReportData:
    """What the section builders read.

    Attributes
    ----------
    path : Path
        The database file.
    models, layers : DataFrame
        The database's tables.
    result : AnalysisResult or None
        The distribution-shift analysis (None when skipped).
    sample_note : str
        How the analysed filters were chosen, in words.
    datasheet : dict or None
        :func:`filterdb.datasheet.compute` of the database (None when it failed).
    datasheet_note : str
        Why the datasheet is missing, or why it counts no duplicate filters ("" if it does).
    """

    path: Path
    models: pd.DataFrame
    layers: pd.DataFrame
    result: object | None
    sample_note: str
    datasheet: dict | None = None
    datasheet_note: str = ""


def per_model_cap(models: pd.DataFrame, max_filters: int) -> int | None:
    """Filters per model that keep the analysis at most ``max_filters`` (None: all fit).

    Examples
    --------
    >>> per_model_cap(pd.DataFrame({"filter_id_start": [0, 10], "filter_id_stop": [10, 30]}), 8)
    4
    """
    total = int((models["filter_id_stop"] - models["filter_id_start"]).sum())
    if max_filters < 1:
        raise FilterDBError("--max-filters must be at least 1")
    if total <= max_filters:
        return None
    return max(1, max_filters // max(len(models), 1))


def collect(db, by: Sequence[str] | None = None, max_filters: int = DEFAULT_MAX_FILTERS,
            seed: int = 0, bins: int = 70, analysis: bool = True,
            progress=None) -> ReportData:
    """Read the tables and run the analysis the report shows.

    Parameters
    ----------
    db : FilterDB or path
    by : sequence of str, optional
        Groupings of the analysis (model or layer columns, or ``depth``); a column the
        database lacks is an error. Default :data:`DEFAULT_BY`, leaving out the columns
        the database lacks.
    max_filters : int
        Analyse at most this many 3x3 filters: above it, the same seeded number per
        model (``analyze(balanced=...)``), so big models do not drown small ones.
    seed : int
    bins : int
        Histogram bins per component.
    analysis : bool
        False: tables only (composition and quality).
    progress : None, True or callable
        Progress of the analysis passes, as :func:`filterdb.analysis.analyze` takes it.

    Examples
    --------
    >>> data = collect("demo/filters.h5", by=["Task"], max_filters=100_000)  # doctest: +SKIP
    >>> data.result.groupings["Task"].drift                           # doctest: +SKIP
    """
    from ..analysis import analyze
    from ..analysis.groups import DEPTH
    from ..store.detect import open_database
    from ..store.export import MetaOnlyDB

    if isinstance(db, (str, os.PathLike)):
        db = open_database(db)
    models, layers = db.models, db.layers
    if models.empty:
        raise FilterDBError(f"{db.path}: the database holds no models")
    columns = set(models.columns) | set(layers.columns)
    groupings = [name for name in (DEFAULT_BY if by is None else by)
                 if name in columns or name == DEPTH]
    if by is not None and len(groupings) < len(by):
        missing = [name for name in by if name not in groupings]
        raise FilterDBError(f"no column {', '.join(map(repr, missing))} to group by; choose "
                            "from depth, " + ", ".join(sorted(map(str, columns))))
    cap = per_model_cap(models, max_filters)
    result, note = None, "No analysis."
    n_filters = int((models["filter_id_stop"] - models["filter_id_start"]).sum())
    if isinstance(db, MetaOnlyDB):
        analysis, note = False, "No analysis: a metadata-only file holds no filters."
    if analysis and n_filters >= 2:
        try:
            result = analyze(db, by=groupings, bins=bins, balanced=cap, seed=seed,
                             progress=progress)
        except ValueError as error:
            raise FilterDBError(f"{db.path}: {error}") from None
        note = (f"All {result.n_filters:,} 3x3 filters analysed." if cap is None else
                f"{result.n_filters:,} of {n_filters:,} 3x3 filters analysed: at most "
                f"{cap:,} per model, drawn with seed {seed} (--max-filters "
                f"{max_filters:,}).")
    sheet, sheet_note = _datasheet(db, analysis, max_filters)
    return ReportData(path=Path(db.path), models=models, layers=layers, result=result,
                      sample_note=note, datasheet=sheet, datasheet_note=sheet_note)


def _datasheet(db, analysis: bool, max_filters: int) -> tuple[dict | None, str]:
    """The datasheet's data, and a note on what it lacks.

    Counting duplicate filters reads every filter, so it is done only within the
    report's filter budget (``--max-filters``) and never with ``--no-analysis``.
    """
    from ..datasheet import compute

    stored = sum(int(db.filter_count(shape)) for shape in db.shapes)
    if getattr(db, "exported_facts", None) is not None:  # compute uses the exported counts
        scan, note = False, "not counted when the file was exported (export-meta --no-scan)"
    elif not analysis:
        scan, note = False, "not counted: --no-analysis reads no filter"
    elif stored > max_filters:
        scan, note = False, (f"not counted: the database holds {stored:,} filters, more "
                             f"than --max-filters {max_filters:,} (filterdb datasheet counts "
                             "them)")
    else:
        scan, note = True, ""
    try:
        return compute(db, scan=scan), note
    except (FilterDBError, OSError) as error:
        return None, f"the datasheet could not be computed: {error}"


def render(data: ReportData, sections: Iterable[Callable] | None = None) -> str:
    """The report as one HTML document.

    Examples
    --------
    >>> html = render(collect("demo/filters.h5"))                    # doctest: +SKIP
    """
    built = [section(data) for section in (SECTIONS if sections is None else sections)]
    parts = [(s.anchor, s.title, s.body) for s in built if s is not None]
    figures = 0 if data.result is None else len(data.result.groupings)
    subtitle = (f"{data.path.name}: {len(data.models):,} models, {len(data.layers):,} conv "
                f"layers; {figures} grouping{'s' if figures != 1 else ''} analysed.")
    return markup.page(f"Filter database report: {data.path.name}", subtitle, parts)


def write_report(db, output, *, log: Callable[[str], None] | None = None, **options) -> Path:
    """Collect, render and write the report to ``output`` (folders created).

    Parameters
    ----------
    db : FilterDB or path
    output : str or Path
    log : callable, optional
        Called with one line per step (collecting, rendering).
    **options
        Passed to :func:`collect` (``by``, ``max_filters``, ``seed``, ``bins``,
        ``analysis``, ``progress``).

    Examples
    --------
    >>> write_report("demo/filters.h5", "demo/report.html", max_filters=500_000)  # doctest: +SKIP
    PosixPath('demo/report.html')
    """
    from ..store.detect import open_database

    log = log or (lambda line: None)
    if isinstance(db, (str, os.PathLike)):
        db = open_database(db)  # a bad path fails here, before any progress line
    log(f"report: reading and analysing {db.path}")
    data = collect(db, **options)
    log("report: drawing the figures")
    document = render(data)
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(document, encoding="utf-8")
    except OSError as error:
        raise FilterDBError(f"cannot write the report {output}: {error.strerror}") from None
    log(f"report: wrote {output} ({math.ceil(len(document) / 1024):,} KiB)")
    return output
