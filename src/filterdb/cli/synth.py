"""``filterdb synth -o DB --filters N``: a synthetic database of N 3x3 filters."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "synth"
HELP = ("Write a synthetic filter database (many models and layers, several tasks and "
        "categories) of exactly N 3x3 filters, for tests and benchmarks.")


def _count(text: str) -> int:
    """``10000000``, ``10e6`` or ``10M`` -> 10000000."""
    factors = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
    text = text.strip().replace("_", "").replace(",", "")
    try:
        if text and text[-1].lower() in factors:
            value = float(text[:-1]) * factors[text[-1].lower()]
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"not a count: {text!r}") from None
    if value != int(value):
        raise ValueError(f"not a whole number: {text!r}")
    return int(value)


def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="database file to create (.h5); must not exist")
    parser.add_argument("--filters", type=_count, required=True,
                        help="3x3 filters to write, e.g. 10000000, 10e6 or 10M")
    parser.add_argument("--models", type=int, default=None,
                        help="models (default one per 500,000 filters, 8 to 647)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same database")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes writing shards (default 1)")


def run(args) -> int:
    from ..synthetic_db import write_synthetic_db

    if args.workers < 1:
        print("filterdb: error: --workers must be at least 1", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\rsynth: {done:,} / {total:,} filters", end="", file=sys.stderr,
                  flush=True)

    result = write_synthetic_db(args.output, args.filters, n_models=args.models,
                                seed=args.seed, workers=args.workers, progress=progress)
    if tty:
        print(file=sys.stderr)
    print(f"wrote {result['path']}: {result['models']:,} models, {result['layers']:,} layers, "
          f"{result['filters']:,} 3x3 filters in {result['seconds']:.1f} s "
          f"({result['filters'] / max(result['seconds'], 1e-9):,.0f} filters/s)")
    return 0
