"""``filterdb info DB``: what a database holds, read from its tables only."""

from __future__ import annotations

from pathlib import Path

from .. import open as open_db
from ..store import layout
from .running import run_lines

NAME = "info"
HELP = "Summarise a database: models by task, category, producer, framework; filters; size."

GROUPINGS = ("Task", "Visual Category", "format", "producer", "Framework")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)


def run(args) -> int:
    from ..runs import recorded, summarize_runs
    from ..store.export import MetaOnlyDB
    from ..store.published import PublishedDB

    db = open_db(args.database)
    models = db.models
    print(f"database:  {db.path}")
    if isinstance(db, PublishedDB):
        print(f"layout:    published CNN Filter DB, /meta in {db.version} spellings; "
              f"/filters {db.stored_dtype} {db.stored_shape} (read as float32)")
        print(f"size:      {db.path.stat().st_size / 2**20:,.1f} MiB (one file)")
        print("not in the file: layer details and quality metrics (NaN), Framework, "
              "Precision, ... ('')")
    elif isinstance(db, MetaOnlyDB):
        print(f"layout:    metadata only (no filters), exported from {db.attrs['source']}")
        print(f"size:      {db.path.stat().st_size / 2**20:,.1f} MiB (one file)")
    else:
        shards = layout.shards_dir(db.path)
        size = db.path.stat().st_size + sum(p.stat().st_size for p in shards.glob("*.h5"))
        print(f"schema:    {db.attrs['schema']} {db.attrs['schema_version']} "
              f"(filterdb {db.attrs['filterdb_version']})")
        present = sum((shards / name).is_file() for name in models["shard"])
        missing = (f"; {len(models) - present} MISSING (filterdb verify)"
                   if present < len(models) else "")
        print(f"size:      {size / 2**20:,.1f} MiB ({len(models)} shard files{missing})")
    print(f"models:    {len(models)}   layers: {len(db.layers)}")
    if recorded(models):
        headline, lines = run_lines(summarize_runs(models), "models")
        print(headline)
        for line in lines:
            print(f"  {line}")
    else:
        print("runs:      not recorded (the models table has no run columns)")
    # an export holds the tables of the filters, not the filters
    print("filters described (not in this file):" if isinstance(db, MetaOnlyDB)
          else "filters stored:")
    for shape in db.shapes:
        where = "" if isinstance(db, MetaOnlyDB) else f"  /{layout.filters_dataset(shape)}"
        print(f"  {layout.shape_label(shape):>7}  {db.filter_count(shape):>15,}{where}")
    counted = sorted((c for c in models.columns if c.startswith("(") and c.endswith(" filters")),
                     key=lambda c: -int(models[c].sum()))
    print("filters by kernel shape (all layers):")
    for column in counted:
        print(f"  {column[:-len(' filters')]:>7}  {int(models[column].sum()):>15,}")
    for column in GROUPINGS:
        if column not in models:
            continue
        counts = models[column].replace("", "(empty)").value_counts()
        print(f"models by {column}:")
        for value, count in counts.items():
            print(f"  {count:>5}  {value}")
    return 0
