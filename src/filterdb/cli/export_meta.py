"""``filterdb export-meta DB -o meta.h5``: the metadata-only release file."""

from __future__ import annotations

from pathlib import Path

from .outputs import output_file

NAME = "export-meta"
HELP = ("Write a metadata-only release file (models, layers, /meta, dataset metadata, "
        "datasheet; no filters) that info and datasheet can open.")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write (.h5)")
    parser.add_argument("--no-scan", dest="scan", action="store_false",
                        help="do not read the filters to count duplicates for the datasheet")


def run(args) -> int:
    from .. import open as open_db
    from ..store.export import export_meta

    output_file(args.output, args.database)
    out = export_meta(open_db(args.database), args.output, scan=args.scan)
    print(f"{out}: {out.stat().st_size:,} bytes")
    return 0
