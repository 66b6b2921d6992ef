"""``filterdb remove DB --model NAME --reason TEXT``: take a model out (an erratum)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatabaseError

NAME = "remove"
HELP = ("Remove a model from every table and view, atomically; later ids move down "
        "(recorded in the changelog).")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--model", required=True, help="model name as in the models table")
    parser.add_argument("--reason", required=True, help="why (goes into the changelog)")


def run(args) -> int:
    from ..store.writer import DatabaseWriter

    if not args.database.is_file():
        raise DatabaseError(f"{args.database}: no such database file")
    with DatabaseWriter(args.database) as writer:
        entry = writer.remove(args.model, args.reason)
    print(f"{args.database}: {entry['comment']}; version now {entry['version']}")
    return 0
