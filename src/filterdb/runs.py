"""Whether models run: the models table's run columns, and their summary.

A build with ``--verify-run`` runs every model once (see :func:`filterdb.readers.run_model`)
and records the result in these columns of ``/models``:

``runs``
    ``yes``, ``no`` or ``not run``.
``run_reason``
    Why a model does not run or was not run; empty when it runs.
``run_input_shapes`` / ``output_shapes``
    The shapes fed and produced, one per graph input or output, e.g. ``1x3x224x224``,
    joined by ``;``; empty when the model was not run (the input shapes are kept when
    its forward pass failed).
``outputs_finite``
    ``yes`` when every output value is finite, ``no`` when some is NaN or Inf, empty
    when the model did not run.
``forward_seconds``
    The time of the one forward pass; NaN when the model did not run.

Pure functions, no files: the build, ``filterdb info`` and the reports share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .readers.running import shape_text
from .records import NOT_RUN, RUNS_NO, RUNS_YES, RunResult

#: Text columns of the models table that describe a verification run.
RUN_TEXT_COLUMNS = ("runs", "run_reason", "run_input_shapes", "output_shapes",
                    "outputs_finite")
#: All run columns, in table order.
RUN_COLUMNS = (*RUN_TEXT_COLUMNS, "forward_seconds")
#: The reason of a model built without ``--verify-run``.
NOT_VERIFIED = "not verified (built without --verify-run)"


def run_columns(result: RunResult | None) -> dict:
    """The models-table columns of a run result; None means the build did not verify.

    Examples
    --------
    >>> from filterdb.records import RunResult
    >>> run_columns(RunResult("yes", input_shapes=[(1, 3, 8, 8)], output_shapes=[(1, 10)],
    ...                       finite=True, seconds=0.5))["output_shapes"]
    '1x10'
    >>> run_columns(None)["run_reason"]
    'not verified (built without --verify-run)'
    """
    result = result or RunResult(NOT_RUN, NOT_VERIFIED)
    return {
        "runs": result.runs,
        "run_reason": result.reason,
        "run_input_shapes": shape_text(result.input_shapes),
        "output_shapes": shape_text(result.output_shapes),
        "outputs_finite": "" if result.finite is None else ("yes" if result.finite else "no"),
        "forward_seconds": float("nan") if result.seconds is None else float(result.seconds),
    }


@dataclass
class RunSummary:
    """How many models run, which do not and why, why the others were not run.

    ``counts`` has the keys ``yes``, ``no`` and ``not run``; ``failed`` lists
    (model, reason) of the models that do not run, in table order; ``not_run`` counts
    the models not run by reason; ``non_finite`` counts the models that run but output
    NaN or Inf (they are among the ``yes``).
    """

    counts: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_run: dict[str, int] = field(default_factory=dict)
    non_finite: int = 0

    @property
    def verified(self) -> int:
        """Models verified to run."""
        return self.counts[RUNS_YES]


def summarize_runs(models) -> RunSummary:
    """Summarise the run columns of a models table (``FilterDB.models``, or a mapping of
    column name -> values).

    A table without run columns (a database built before they existed) counts every
    model as not run, not verified.

    Examples
    --------
    >>> import pandas as pd
    >>> models = pd.DataFrame({"model": ["a", "b", "c"], "runs": ["yes", "no", "not run"],
    ...                        "run_reason": ["", "loading the model failed (...)", "no graph"],
    ...                        "outputs_finite": ["yes", "", ""]})
    >>> summary = summarize_runs(models)
    >>> summary.counts
    {'yes': 1, 'no': 1, 'not run': 1}
    >>> summary.failed, summary.not_run
    ([('b', 'loading the model failed (...)')], {'no graph': 1})
    """
    n = len(models["model"])
    runs = list(models["runs"]) if "runs" in models else [NOT_RUN] * n
    reasons = list(models["run_reason"]) if "run_reason" in models else [NOT_VERIFIED] * n
    finite = list(models["outputs_finite"]) if "outputs_finite" in models else [""] * n
    counts = {RUNS_YES: 0, RUNS_NO: 0, NOT_RUN: 0}
    summary = RunSummary(counts)
    for name, status, reason, ok in zip(models["model"], runs, reasons, finite, strict=True):
        status = status if status in counts else NOT_RUN
        reason = reason if isinstance(reason, str) and reason else NOT_VERIFIED
        counts[status] += 1
        if status == RUNS_NO:
            summary.failed.append((str(name), reason))
        elif status == NOT_RUN:
            summary.not_run[reason] = summary.not_run.get(reason, 0) + 1
        elif ok == "no":
            summary.non_finite += 1
    return summary


def recorded(models) -> bool:
    """Whether a models table records verification runs (a published file does not).

    Examples
    --------
    >>> recorded({"model": ["a"]}), recorded({"model": ["a"], "runs": ["yes"]})
    (False, True)
    """
    return "runs" in models


def _listed(items: list[str], limit: int | None) -> str:
    shown = items if limit is None else items[:limit]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def verified_sentence(summary: RunSummary, limit: int | None = None) -> str:
    """How many models were verified to run and which do not, in plain words.

    Parameters
    ----------
    summary : RunSummary
    limit : int, optional
        Name at most this many failed models (the rest are counted); default all.

    Examples
    --------
    >>> verified_sentence(RunSummary({"yes": 7, "no": 1, "not run": 1}, [("x", "crashed")],
    ...                              {"no graph": 1}))
    '7 of 9 models were verified to run; 1 does not: x (crashed); 1 was not run: no graph (1).'
    >>> verified_sentence(RunSummary({"yes": 0, "no": 0, "not run": 2}, [],
    ...                              {NOT_VERIFIED: 2}))
    'No model was verified to run: the database was built without --verify-run.'
    """
    counts = summary.counts
    if counts[RUNS_YES] == counts[RUNS_NO] == 0 and set(summary.not_run) == {NOT_VERIFIED}:
        return "No model was verified to run: the database was built without --verify-run."
    parts = [f"{counts[RUNS_YES]} of {sum(counts.values())} models were verified to run"]
    if summary.failed:
        verb = "does" if len(summary.failed) == 1 else "do"
        parts.append(f"{len(summary.failed)} {verb} not: " + _listed(
            [f"{model} ({reason})" for model, reason in summary.failed], limit))
    if summary.not_run:
        verb = "was" if counts[NOT_RUN] == 1 else "were"
        parts.append(f"{counts[NOT_RUN]} {verb} not run: " + ", ".join(
            f"{reason} ({n})" for reason, n in summary.not_run.items()))
    if summary.non_finite:
        parts.append(f"{summary.non_finite} of those that run output NaN or Inf")
    return "; ".join(parts) + "."
