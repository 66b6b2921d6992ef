"""``filterdb verify DB``: integrity (exit 1 on any problem) and redundancy summary."""

from __future__ import annotations

from pathlib import Path

NAME = "verify"
HELP = ("Verify a database (schema, counts, id ranges, /meta, shard checksums) and count "
        "duplicate models, shared layers, duplicate filters and empty meta fields.")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--no-checksums", dest="checksums", action="store_false",
                        help="skip recomputing the shard checksums")
    parser.add_argument("--no-scan", dest="scan", action="store_false",
                        help="skip counting duplicate filters and shared layers")
    parser.add_argument("--workdir", type=Path,
                        help="folder for the duplicate counter's bucket files")


def run(args) -> int:
    from .. import open as open_db
    from ..errors import FilterDBError
    from ..store.export import MetaOnlyDB
    from ..store.published import PublishedDB
    from ..verify import verify

    db = open_db(args.database)
    if isinstance(db, PublishedDB):
        raise FilterDBError(f"{args.database}: a published CNN Filter DB file; verify checks "
                            "filterdb databases (filterdb convert makes one of it)")
    if isinstance(db, MetaOnlyDB):
        raise FilterDBError(f"{args.database}: tables without filters (export-meta); verify "
                            "checks filterdb databases")
    result = verify(db, args.checksums, args.scan, args.workdir)
    for problem in result.problems:
        print(problem)
    if not result.ok:
        print(f"{args.database}: {len(result.problems)} problem(s)")
        return 1
    summary = result.summary
    filters = ", ".join(f"{n:,} {s}" for s, n in summary["filters"].items())
    print(f"{args.database}: OK: {summary['models']} models, {summary['layers']} layers, "
          f"{filters} filters" + ("" if args.checksums else " (checksums not checked)"))
    for group in summary["identical_models"]:
        print(f"identical models (same conv weights): {', '.join(group)}")
    for scan in summary.get("redundancy", []):
        print(f"{scan['shape']}: {scan['duplicate_filters']:,} duplicate filters "
              f"({scan['duplicated_values']:,} distinct values repeated), "
              f"{scan['zero_filters']:,} all-zero filters, {scan['shared_layers']} layers "
              f"in {scan['shared_layer_groups']} groups shared between models")
        for example in scan["shared_layer_examples"]:
            print(f"  shared layer: {', '.join(example)}")
    empty = {c: n for c, n in summary["empty_fields"].items() if n}
    if empty:
        print("empty meta fields: " + ", ".join(f"{c} {n}" for c, n in empty.items()))
    if summary["models_without_checksum"]:
        print(f"no stored checksum (older build): {len(summary['models_without_checksum'])} "
              "model(s)")
    return 0
