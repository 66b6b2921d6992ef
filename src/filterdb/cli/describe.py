"""``filterdb describe DB [--from datasheet.yaml] [--title ...]``: dataset metadata."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatabaseError

NAME = "describe"
HELP = ("Show or set the dataset metadata (title, creators, licence, contact, funding, "
        "DOI) and datasheet answers.")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("--from", dest="source", type=Path,
                        help="YAML file with 'dataset:' fields and/or datasheet 'answers:'")
    parser.add_argument("--title")
    parser.add_argument("--creator", dest="creators", action="append",
                        help="a creator (repeat for several; replaces the list)")
    parser.add_argument("--description")
    parser.add_argument("--contact")
    parser.add_argument("--funding")
    parser.add_argument("--doi")
    parser.add_argument("--license", dest="license_name",
                        help="licence name (default CC BY-SA 4.0)")
    parser.add_argument("--license-url")
    parser.add_argument("--attribution", help="the attribution the licence asks for")


def run(args) -> int:
    from ..store import dataset
    from ..store.writer import DatabaseWriter

    if not args.database.is_file():
        raise DatabaseError(f"{args.database}: no such database file")
    fields, answers = dataset.read_publication(args.source) if args.source else ({}, None)
    if answers:
        from ..datasheet import check_answers

        check_answers(answers, str(args.source))
    fields.update({key: getattr(args, key) for key in ("title", "creators", "description",
                                                       "contact", "funding", "doi")
                   if getattr(args, key) is not None})
    licence = {key: value for key, value in (("name", args.license_name),
                                             ("title", args.license_name),
                                             ("url", args.license_url),
                                             ("attribution", args.attribution)) if value}
    if licence:
        fields["license"] = {**fields.get("license", {}), **licence}
    if not fields and answers is None:
        import filterdb

        print(json.dumps(filterdb.open(args.database).dataset_info, indent=2))
        return 0
    with DatabaseWriter(args.database) as writer:
        info = dataset.described(writer.dataset, fields, str(args.source or args.database))
        writer.update_dataset(info, answers)
    print(f"{args.database}: dataset metadata updated")
    return 0
