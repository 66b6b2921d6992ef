"""``filterdb release DB --version X --comment TEXT [--doi DOI]``: record a release."""

from __future__ import annotations

from pathlib import Path

from ..errors import BuildInterrupted, DatabaseError

NAME = "release"
HELP = "Record a release (semantic version greater than the last, comment, optional DOI)."


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--version", required=True, help="semantic version, e.g. 1.0.0")
    parser.add_argument("--comment", required=True, help="what this release contains/changes")
    parser.add_argument("--doi", default="", help="DOI the release is published under")


def run(args) -> int:
    from ..store import dataset
    from ..store.writer import DatabaseWriter

    if not args.database.is_file():
        raise DatabaseError(f"{args.database}: no such database file")
    doi = f" (DOI {args.doi})" if args.doi else ""
    try:
        with DatabaseWriter(args.database) as writer:
            # A release killed around its commit leaves the user unsure whether it
            # happened; running it again must then succeed without a second entry.
            if dataset.is_released_as(writer.dataset, args.version, args.comment, args.doi):
                print(f"{args.database}: already released {args.version}{doi}")
                return 0
            try:
                info = dataset.release(writer.dataset, args.version, args.comment, args.doi,
                                       models=len(writer.models),
                                       filters=writer.filter_count((3, 3)))
            except ValueError as error:
                raise DatabaseError(f"{args.database}: {error}") from None
            writer.update_dataset(info)
    except KeyboardInterrupt:
        raise BuildInterrupted(f"{args.database}: release interrupted; the database is "
                               "either unchanged or released, never in between. Run the "
                               "same command again to complete it.") from None
    print(f"{args.database}: released {args.version}{doi}")
    return 0
