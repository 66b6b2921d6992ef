"""``filterdb convert PUBLISHED.h5 -o DB.h5``: a published file as a filterdb database."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "convert"
HELP = ("Convert a published CNN Filter DB file into a filterdb database with the same "
        "filter ids; streamed, resumable (run it again after an interruption).")


def add_arguments(parser) -> None:
    parser.add_argument("published", type=Path, help="published CNN Filter DB file (.h5)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="database file (.h5)")
    parser.add_argument("--batch-filters", type=int, default=None, metavar="N",
                        help="commit after at least N filters (default 67,108,864)")


def run(args) -> int:
    from tqdm import tqdm

    from ..convert import BATCH_FILTERS, convert
    from ..errors import FilterDBError

    if args.batch_filters is not None and args.batch_filters < 1:
        raise FilterDBError("--batch-filters must be at least 1")

    def bar(**kw):
        return tqdm(unit="filter", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                    disable=None, desc="convert", **kw)

    try:
        report = convert(args.published, args.output, args.batch_filters or BATCH_FILTERS,
                         progress=bar)
    except KeyboardInterrupt:
        raise FilterDBError(f"{args.output}: conversion interrupted; run the same command "
                            "again to resume") from None
    print(f"{report.database}: {report.added} models converted, {report.present} already "
          f"present; {report.filters:,} filters, ids as in {args.published}")
    return 0
