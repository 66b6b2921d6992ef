"""``filterdb datasheet DB [-o DATASHEET.md] [--answers FILE]``."""

from __future__ import annotations

import sys
from pathlib import Path

from .outputs import output_file

NAME = "datasheet"
HELP = ("Write the dataset's datasheet (Markdown): facts computed from the database, prose "
        "from datasheet.yaml answers, unanswered questions listed as open.")


def add_arguments(parser) -> None:
    parser.add_argument("database", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="Markdown file (default stdout)")
    parser.add_argument("--answers", type=Path,
                        help="YAML with 'answers:' (default: those stored in the database)")
    parser.add_argument("--no-scan", dest="scan", action="store_false",
                        help="do not read the filters to count duplicates")


def run(args) -> int:
    from .. import open as open_db
    from ..datasheet import check_answers, compute, render_markdown
    from ..store.dataset import read_publication

    if args.output:
        output_file(args.output, args.database)
    answers = read_publication(args.answers)[1] if args.answers else None
    if answers:
        check_answers(answers, str(args.answers))
    data = compute(open_db(args.database), answers, scan=args.scan)
    text = render_markdown(data)
    if args.output:
        args.output.write_text(text)
        print(f"{args.output}: datasheet written; {len(data['open'])} open question(s)",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
