"""``filterdb build ZOO --index INDEX -o DB``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..store import layout
from .running import add_run_arguments, run_limits, run_lines

NAME = "build"
HELP = "Build or extend a filter database from a folder of models."
#: Default --model-timeout in seconds: long enough for any real model on a slow machine.
MODEL_TIMEOUT = 3600.0
#: Names of ignored zoo files listed on the summary line (all are in the build report).
IGNORED_SHOWN = 5


def add_arguments(parser) -> None:
    parser.add_argument("zoo", type=Path, help="folder of model files (searched recursively)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="database file (.h5)")
    parser.add_argument("--index", type=Path, help="meta index, CSV or YAML, one row per model")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--shapes", default=None,
                        help="extra kernel shapes to store beside 3x3, e.g. 5x5,1x3")
    parser.add_argument("--count-duplicates", action="store_true",
                        help="after the build, count exact duplicate filters of the whole "
                             "database (one more pass over every filter, as verify does)")
    parser.add_argument("--no-quality", dest="quality", action="store_false",
                        help="skip the layer quality metrics (faster; verdicts 'not assessed')")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="let PyTorch files unpickle any object: RUNS CODE from the files")
    parser.add_argument("--only-selected", action="store_true",
                        help="build only the models whose index row has Selection 1; the "
                             "others are reported as not selected")
    parser.add_argument("--durable", action="store_true",
                        help="fsync every shard and the master at each commit, so committed "
                             "models also survive a power failure or OS crash (waits for the "
                             "disk; without it a killed build still loses nothing committed)")
    parser.add_argument("--model-timeout", type=float, default=MODEL_TIMEOUT,
                        metavar="SECONDS",
                        help="a model still being read after this "
                             f"long fails and the build goes on (default {MODEL_TIMEOUT:g}; "
                             "0: no limit)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on index problems and on any model that cannot be read")
    add_run_arguments(parser, "--verify-run", "verify_run",
                      "run every model once on a random input and record whether it runs")
    parser.add_argument("--require-run", action="store_true",
                        help="do not add models that fail to run (implies --verify-run)")


def run(args) -> int:
    # numpy's BLAS starts a thread per core, which spins when it starts; the build
    # never uses them (the quality metrics run BLAS in threads of their own), and a
    # process of one thread can fork its workers (see start_workers).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ..worker import NOT_ASSESSED, start_workers

    shapes = None
    if args.shapes:
        try:
            shapes = tuple(layout.parse_shape(s) for s in args.shapes.split(","))
        except ValueError as error:
            print(f"filterdb: error: --shapes: {error}", file=sys.stderr)
            return 2
    if args.workers < 1:
        print("filterdb: error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.model_timeout < 0:
        print("filterdb: error: --model-timeout must be 0 (no limit) or more",
              file=sys.stderr)
        return 2
    if not args.output.parent.exists():  # a new folder for the database, as synth makes
        try:
            args.output.parent.mkdir(parents=True)
        except OSError as error:
            print(f"filterdb: error: {args.output}: cannot make its folder "
                  f"({error.strerror or error})", file=sys.stderr)
            return 2
    # The workers start first: they import their modules while this process imports
    # the rest (pandas and PyTables for the tables) and plans the zoo.
    pool = start_workers(args.workers, args.quality)
    from ..build import ADDED, FAILED, NOT_SELECTED, PRESENT, SKIPPED, BuildOptions, build
    from ..errors import one_line
    from ..readers import Limits
    from .progress import BuildProgress

    limits = run_limits(args) if args.verify_run or args.require_run else None
    options = BuildOptions(workers=args.workers, shapes=shapes, strict=args.strict,
                           quality=args.quality, only_selected=args.only_selected,
                           count_duplicates=args.count_duplicates,
                           limits=Limits(allow_unsafe_pickle=args.allow_unsafe_pickle),
                           run=limits, require_run=args.require_run, durable=args.durable,
                           model_timeout=args.model_timeout or None)
    with BuildProgress() as progress:
        report = build(args.zoo, args.output, args.index, options, on_outcome=progress.update,
                       pool=pool)
    for finding in report.findings:
        print(f"index: {one_line(finding)}", file=sys.stderr)
    if report.ignored:
        shown = ", ".join(one_line(Path(p).name) for p in report.ignored[:IGNORED_SHOWN])
        more = (f" and {len(report.ignored) - IGNORED_SHOWN} more"
                if len(report.ignored) > IGNORED_SHOWN else "")
        print(f"zoo: {len(report.ignored)} file(s) that no reader recognises, not built: "
              f"{shown}{more}", file=sys.stderr)
    for outcome in report.outcomes:
        if outcome.status in (FAILED, SKIPPED):
            print(f"{outcome.status}: {one_line(f'{outcome.path}: {outcome.reason}')}",
                  file=sys.stderr)
        elif outcome.nan_count or outcome.inf_count:
            print(f"warning: {one_line(outcome.path)}: {outcome.nan_count} NaN and "
                  f"{outcome.inf_count} Inf weights (kept)", file=sys.stderr)
    flagged = [o for o in report.outcomes
               if o.status == ADDED and o.quality_verdict not in ("ok", NOT_ASSESSED)]
    for outcome in sorted(flagged, key=lambda o: -o.degenerated_share):
        print(f"quality: {one_line(outcome.model)}: {outcome.quality_verdict} "
              f"({outcome.degenerated_share:.0%} of layers degenerated)", file=sys.stderr)
    added = report.filters_added()
    stored = _stored_shapes(report.database)
    counts = {label: ", ".join(f"{n:,} {s}" for s, n in added.items() if (s in stored) == kept)
              for label, kept in (("stored", True), ("counted", False))}
    shapes_text = (f"{counts['stored']} filters added" if counts["stored"]
                   else "no filters added")
    if counts["counted"]:
        shapes_text += f" (counted, not stored: {counts['counted']})"
    not_selected = (f", {report.count(NOT_SELECTED)} not selected" if args.only_selected
                    else "")
    if not report.planned and not report.outcomes:
        print(f"filterdb: error: {one_line(str(args.zoo))}: no model files found (ONNX, "
              "PyTorch, safetensors, Keras or TFLite)", file=sys.stderr)
    print(f"{report.database}: {report.count(ADDED)} added, {report.count(PRESENT)} already "
          f"present, {report.count(SKIPPED)} skipped, {report.count(FAILED)} failed"
          f"{not_selected}; {shapes_text} in {report.seconds:.1f} s")
    if limits is not None:
        # With --require-run, the models that do not run are listed as failed above.
        headline, lines = run_lines(report.run_summary(), "models of this build",
                                    failed=None if args.require_run else " (kept)")
        print(headline)
        for line in lines:
            print(line, file=sys.stderr)
    for line in completeness_lines(report.completeness):
        print(line, file=sys.stderr)
    print(f"build report: {layout.report_path(Path(report.database))}")
    nothing_built = not Path(report.database).exists()
    problems = report.count(FAILED) + report.count(SKIPPED) + len(report.findings)
    return 1 if nothing_built or (args.strict and problems) else 0


def completeness_lines(completeness: dict) -> list[str]:
    """Empty meta fields and layers shared between models, one line each (none if all
    is complete and nothing is shared)."""
    from ..errors import one_line

    if not completeness:
        return []
    models = completeness["models"]
    empty = {c: n for c, n in completeness["empty_fields"].items() if n}
    lines = []
    if empty:
        lines.append("completeness: empty meta fields (of the database's "
                     f"{models} models): " + ", ".join(f"{one_line(c)} {n}"
                                                       for c, n in empty.items()))
    if completeness["shared_layers"]:
        example = " = ".join(completeness["shared_layer_examples"][0])
        lines.append(f"redundancy: {completeness['shared_layers']} layers equal a layer of "
                     f"another model ({completeness['shared_layer_groups']} groups, e.g. "
                     f"{one_line(example)})")
    for scan in completeness.get("duplicate_filters", []):
        lines.append(f"redundancy: {scan['duplicate_filters']:,} of {scan['filters']:,} "
                     f"{scan['shape']} filters repeat an earlier one "
                     f"({scan['duplicated_values']:,} values occur more than once; "
                     f"{scan['zero_filters']:,} all-zero)")
    return lines


def _stored_shapes(database) -> set[str]:
    """Labels of the kernel shapes the database stores (none if it was not made)."""
    from .. import open as open_db
    from ..errors import FilterDBError

    try:
        return {layout.shape_label(shape) for shape in open_db(database).shapes}
    except (FilterDBError, OSError):
        return set()
