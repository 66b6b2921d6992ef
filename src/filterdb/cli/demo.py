"""``filterdb demo [-o DIR]``: generate a small zoo, build its database, summarise it."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from ..synthetic import generate_zoo
from . import build as build_command
from . import info as info_command

NAME = "demo"
HELP = "Generate a small model zoo, build its filter database and summarise it."


def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("demo"),
                        help="folder for the zoo and the database (default ./demo)")
    parser.add_argument("--models", type=int, default=15, help="models to generate")
    parser.add_argument("--workers", type=int, default=2)


def run(args) -> int:
    zoo = args.output / "zoo"
    database = args.output / "filters.h5"
    print(f"demo: generating {args.models} models in {zoo}", file=sys.stderr)
    index = generate_zoo(zoo, n_models=args.models, widths=(16, 32, 64), depth=5)
    status = build_command.run(Namespace(zoo=zoo, output=database, index=index,
                                         workers=args.workers, shapes="3x3,1x1,5x5",
                                         strict=False, quality=True,
                                         allow_unsafe_pickle=False))
    if status:
        return status
    info_command.run(Namespace(database=database))
    print(f"demo: database {database}; open it with filterdb.open({str(database)!r})")
    return 0
