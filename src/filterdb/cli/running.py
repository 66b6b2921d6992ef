"""Options and output shared by the commands that run models (build, check)."""

from __future__ import annotations

from ..errors import FilterDBError

#: RunLimits' defaults, repeated so that the CLI starts without numpy (a test keeps
#: them equal).
DEFAULT_SECONDS, DEFAULT_MEMORY_GIB = 120.0, 4.0


def add_run_arguments(parser, flag: str, dest: str, help: str) -> None:
    """``flag`` (switching runs on, stored in ``dest``) and the limits of a run."""
    parser.add_argument(flag, dest=dest, action="store_true", help=help)
    parser.add_argument("--run-timeout", type=float, default=DEFAULT_SECONDS,
                        metavar="SECONDS",
                        help=f"kill a model's run after this long (default "
                             f"{DEFAULT_SECONDS:g})")
    parser.add_argument("--run-memory", type=float, default=DEFAULT_MEMORY_GIB,
                        metavar="GIB",
                        help=f"address-space limit of a model's run in GiB (default "
                             f"{DEFAULT_MEMORY_GIB:g})")


def run_limits(args):
    """The :class:`~filterdb.readers.RunLimits` the options ask for.

    Raises
    ------
    FilterDBError
        When a limit is not positive.
    """
    from ..readers import RunLimits

    if args.run_timeout <= 0 or args.run_memory <= 0:
        raise FilterDBError("--run-timeout and --run-memory must be positive")
    return RunLimits(seconds=args.run_timeout, memory_bytes=int(args.run_memory * 2**30))


def run_lines(summary, where: str, failed: str | None = "") -> tuple[str, list[str]]:
    """A headline counting the runs, one line per model that does not run (ending with
    ``failed``; none when ``failed`` is None) and one per reason models were not run.

    Examples
    --------
    >>> from filterdb.runs import RunSummary
    >>> run_lines(RunSummary({"yes": 2, "no": 1, "not run": 0}, [("m", "crashed")]), "models")
    ('runs: 2 of 3 models verified to run, 1 do not run, 0 not run', ['does not run: m: crashed'])
    """
    counts = summary.counts
    headline = (f"runs: {counts['yes']} of {sum(counts.values())} {where} verified to run, "
                f"{counts['no']} do not run, {counts['not run']} not run")
    if summary.non_finite:
        headline += f"; {summary.non_finite} of those that run output NaN or Inf"
    lines = [] if failed is None else [f"does not run: {model}: {reason}{failed}"
                                       for model, reason in summary.failed]
    lines += [f"not run: {count} model(s): {reason}" for reason, count in summary.not_run.items()]
    return headline, lines
