"""``filterdb report DB [-o report.html]``: one self-contained HTML report of a database."""

from __future__ import annotations

import sys
from pathlib import Path

from .outputs import output_file

NAME = "report"
HELP = ("One self-contained HTML file about a database: composition, models verified to "
        "run, quality per model and worst layers, eigen-images, ridge plots, drift heat maps "
        "and box plots, the datasheet, each with a plain-words reading.")


#: The report's defaults, repeated so that building the parser imports no numpy,
#: pandas or numba (a test keeps them equal to :mod:`filterdb.report`'s).
DEFAULT_BY = ("Task", "Visual Category", "depth")
DEFAULT_MAX_FILTERS = 2_000_000


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="the HTML file (default: DB.report.html beside the database)")
    parser.add_argument("--group-by", "--by", dest="by", action="append", metavar="COLUMN",
                        help="grouping of the analysis: a model or layer column or depth; "
                             "repeat for several (default: " + ", ".join(DEFAULT_BY)
                             + ", those the database has)")
    parser.add_argument("--max-filters", type=int, default=DEFAULT_MAX_FILTERS, metavar="N",
                        help="analyse at most N 3x3 filters, the same seeded number per "
                             f"model (default {DEFAULT_MAX_FILTERS:,})")
    parser.add_argument("--bins", type=int, default=70, help="histogram bins (default 70)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--no-analysis", dest="analysis", action="store_false",
                        help="composition and quality only (no PCA, ridges or drift)")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args) -> int:
    from ..report import write_report

    output = output_file(args.output or args.database.with_name(
        args.database.name + ".report.html"), args.database)
    path = write_report(args.database, output, log=_log, by=args.by,
                        max_filters=args.max_filters, seed=args.seed, bins=args.bins,
                        analysis=args.analysis, progress=True)
    print(path)
    return 0
