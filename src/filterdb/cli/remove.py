"""``filterdb remove DB --model NAME --reason TEXT``: take a model out (an erratum)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BuildInterrupted, DatabaseError

NAME = "remove"
HELP = ("Remove a model from every table and view, atomically; later ids move down "
        "(recorded in the changelog).")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--model", required=True, help="model name as in the models table")
    parser.add_argument("--reason", required=True, help="why (goes into the changelog)")


def run(args) -> int:
    from ..store import dataset
    from ..store.writer import DatabaseWriter

    if not args.database.is_file():
        raise DatabaseError(f"{args.database}: no such database file")
    try:
        with DatabaseWriter(args.database) as writer:
            done = (None if args.model in writer.known_names
                    else dataset.last_removal(writer.dataset, args.model))
            if done is not None:
                # Running a remove again after a crash: the commit happened; a kill
                # between it and deleting the model's shard left that shard orphaned.
                writer.remove_orphan_shards()
                print(f"{args.database}: {args.model} already removed "
                      f"(version {done['version']})")
                return 0
            entry = writer.remove(args.model, args.reason)
    except KeyboardInterrupt:
        raise BuildInterrupted(f"{args.database}: remove interrupted; {args.model} is either "
                               "still in the database or removed from every table, never "
                               "in between. Run the same command again to complete "
                               "it.") from None
    print(f"{args.database}: {entry['comment']}; version now {entry['version']}")
    return 0
