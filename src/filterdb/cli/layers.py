"""``filterdb layers DB [--model NAME]``: the per-layer table."""

from __future__ import annotations

from pathlib import Path

from .. import open as open_db
from ..errors import FilterDBError

NAME = "layers"
HELP = "List conv layers with depths, shapes and filter id ranges."

COLUMNS = ["model", "layer", "name", "op_type", "depth", "conv_depth", "conv_depth_norm",
           "c_out", "c_in_per_group", "groups", "kh", "kw", "n_filters",
           "filter_id_start", "filter_id_stop"]


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def run(args) -> int:
    db = open_db(args.database)
    table = db.layers.join(db.models.set_index("model_id")["model"], on="model_id")
    if args.model is not None:
        table = table[table["model"] == args.model]
        if table.empty:
            raise FilterDBError(f"{db.path}: no model named {args.model!r}")
    table = table[COLUMNS]
    import pandas as pd

    from ..csvsafe import to_csv

    if args.csv:
        print(to_csv(table, index=False), end="")
    else:
        with pd.option_context("display.max_rows", None, "display.width", 200,
                               "display.max_columns", None):
            print(table.to_string(index=False))
    return 0
