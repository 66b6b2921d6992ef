"""``filterdb check MODEL``: degeneration metrics and verdicts per conv layer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .build import MODEL_TIMEOUT
from .running import add_run_arguments, run_limits

NAME = "check"
HELP = "Check one model's conv layers for degeneration (sparsity, entropy, orthogonality)."

COLOURS = {"ok": "32", "sparse": "31", "low-diversity": "33", "random-like": "35",
           "non-finite": "31"}
SHORT = {"variance_entropy": "entropy", "variance_entropy_norm": "entropy_n",
         "variance_entropy_clean": "clean", "variance_entropy_clean_norm": "clean_n",
         "orthogonality": "orthog"}


def add_arguments(parser) -> None:
    parser.add_argument("model", type=Path, help="model file in any format filterdb reads")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="let PyTorch files unpickle any object: RUNS CODE from the file")
    parser.add_argument("--model-timeout", type=float, default=MODEL_TIMEOUT,
                        metavar="SECONDS",
                        help="stop reading the model after this long (default "
                             f"{MODEL_TIMEOUT:g}; 0: no limit)")
    add_run_arguments(parser, "--run", "run_model",
                      "also run the model once on a random input (exit status 1 when it "
                      "does not run)")
    parser.add_argument("--input-shape", metavar="SHAPES",
                        help="input shapes of the run, e.g. 1x3x224x224 (several: "
                             "separated by ';'); default: the model's declared shapes")


def run(args) -> int:
    # As build does: numpy starts no BLAS threads (the metrics use threads of their
    # own), so this process has one thread and forks its reader quickly.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ..api import QUALITY_COLUMNS, quality
    from ..csvsafe import to_csv
    from ..errors import FilterDBError, ModelReadError
    from ..readers import Limits
    from ..worker import read_alone

    if args.model_timeout < 0:
        raise FilterDBError("--model-timeout must be 0 (no limit) or more")
    if args.run_model:  # the run's options are checked before the model is read
        _run_options(args)
    # Read in a worker process: a crash or hang of a native library on a damaged file
    # is one line, as in a build.
    try:
        table = read_alone(quality, args.model, args.model, None, None,
                           Limits(allow_unsafe_pickle=args.allow_unsafe_pickle),
                           timeout=args.model_timeout or None)
    except FilterDBError:
        raise
    except Exception as error:  # a reader's bug: one line naming the file, as in a build
        raise ModelReadError(args.model, f"unexpected {type(error).__name__}: {error}"
                             ) from None
    summary = table.attrs["summary"]
    if args.format == "json":
        records = table[list(QUALITY_COLUMNS)].astype(object)
        records = records.where(records.notna(), None)  # NaN is not JSON: null
        print(json.dumps(records.to_dict("records"), indent=2, allow_nan=False))
    elif args.format == "csv":
        print(to_csv(table, index=False), end="")
    else:
        print(_render(table, colour=sys.stdout.isatty()))
        print(f"\n{args.model}: {summary['verdict']}; {summary['layers']} conv layers, "
              f"{summary['degenerated_share']:.0%} degenerated, "
              f"{summary['random_like_share']:.0%} random-like")
    return _run(args) if args.run_model else 0


def _run(args) -> int:
    """Run the model; one line on stdout after a table, on stderr after JSON or CSV (which
    stay parseable). Exit status 1 when the model does not run."""
    from ..readers import run_model
    from ..records import RUNS_NO, RUNS_YES

    shapes, limits = _run_options(args)
    result = run_model(args.model, shapes, limits)
    if result.runs == RUNS_YES:
        outputs = ", ".join("x".join(map(str, shape)) for shape in result.output_shapes)
        finite = "finite" if result.finite else "NOT finite (NaN or Inf)"
        line = (f"{args.model}: runs: yes; outputs {outputs} ({finite}); forward pass "
                f"{result.seconds:.3g} s")
    else:
        line = f"{args.model}: runs: {result.runs} ({result.reason})"
    print(line, file=sys.stdout if args.format == "table" else sys.stderr)
    return 1 if result.runs == RUNS_NO else 0


def _run_options(args):
    """The run's input shapes and limits, or one line for a bad option."""
    from ..errors import FilterDBError
    from ..readers import parse_input_shapes

    try:
        shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    except ValueError as error:
        raise FilterDBError(f"--input-shape: {error}") from None
    return shapes, run_limits(args)


def _render(table, colour: bool) -> str:
    shown = table.rename(columns=SHORT)
    text = shown.drop(columns=["reason"]).to_string(
        index=False, float_format=lambda v: f"{v:.3f}")
    lines = text.splitlines()
    out = [lines[0]]
    for line, (_, row) in zip(lines[1:], table.iterrows(), strict=True):
        if colour:
            line = line.replace(row["verdict"],
                                f"\033[{COLOURS.get(row['verdict'], '0')}m{row['verdict']}\033[0m")
        out.append(line + (f"  {row['reason']}" if row["reason"] else ""))
    return "\n".join(out)
