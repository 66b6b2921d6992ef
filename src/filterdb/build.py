"""The one orchestrator of a build: plan the zoo, read models in workers, commit in order.

Workers read one model each, write its immutable shard and return only metadata,
so memory is bounded by the largest model per worker, not by the zoo. The main
process commits finished models in name order, which makes the database the same
whatever the worker count or completion order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import layer_quality
from .errors import BuildInterrupted, IndexFileError, ModelReadError, WorkerStartError
from .index import SELECTION, is_selected, plan_zoo
from .readers import Limits, RunLimits, is_model_file, member_files
from .runs import summarize_runs
from .store import dataset, layout
from .store.entry import ModelEntry
from .store.writer import DatabaseWriter
from .worker import (
    ADDED,
    FAILED,
    NO_START,
    NOT_SELECTED,
    PRESENT,
    SKIPPED,
    Job,
    ModelOutcome,
    WorkerPool,
    present,
    process_model,
    read_alone,
    start_workers,
    timed,
)


@dataclass
class BuildOptions:
    """How to build: worker processes, stored kernel shapes, strictness, reader limits,
    whether (with which thresholds) to compute the layer quality metrics, and whether
    to build only the models the index selects (``Selection`` 1)."""

    #: Worker processes that read the models. 0: read them in this process, without
    #: the isolation from a crash or hang in a native library that workers give (for
    #: a script that cannot start processes).
    workers: int = 1
    shapes: tuple[tuple[int, int], ...] | None = None
    strict: bool = False
    limits: Limits = field(default_factory=Limits)
    thresholds: layer_quality.Thresholds = field(default_factory=layer_quality.Thresholds)
    quality: bool = True
    count_duplicates: bool = False  # after the build, count exact duplicate filters
    commit_seconds: float = 1.0
    only_selected: bool = False
    run: RunLimits | None = None  # run every model once within these limits
    require_run: bool = False  # a model that fails to run is not added
    #: fsync shards and master at every commit (power-failure safe; waits for the disk)
    durable: bool = False
    #: A model still being read after this many seconds fails (its worker is ended;
    #: not with workers=0); None: no limit. A hang inside a native library cannot be
    #: stopped else.
    model_timeout: float | None = 3600.0


@dataclass
class BuildReport:
    """The machine-readable result of a build; ``save`` writes it as JSON."""

    database: str
    zoo: str
    index: str | None
    workers: int
    planned: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)
    #: Files under the zoo that no reader recognises: not built.
    ignored: list[str] = field(default_factory=list)
    outcomes: list[ModelOutcome] = field(default_factory=list)
    interrupted: bool = False
    #: Of the whole database after the build: empty meta fields per index column and
    #: layers shared between models (see :mod:`filterdb.redundancy`).
    completeness: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def filters_added(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.status == ADDED:
                for shape, n in outcome.filters.items():
                    totals[shape] = totals.get(shape, 0) + n
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summary"] = {s: self.count(s) for s in (ADDED, PRESENT, SKIPPED, FAILED)}
        if self.count(NOT_SELECTED):  # only builds with --only-selected have them
            data["summary"][NOT_SELECTED] = self.count(NOT_SELECTED)
        data["filters_added"] = self.filters_added()
        data["runs"] = asdict(self.run_summary())
        return data

    def run_summary(self):
        """Runs of this build's models (added, or failed because they do not run)."""
        ran = [o for o in self.outcomes if o.runs]
        return summarize_runs({"model": [o.model for o in ran], "runs": [o.runs for o in ran],
                               "run_reason": [o.run_reason for o in ran],
                               "outputs_finite": [o.outputs_finite for o in ran]})

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)


def build(zoo, database, index=None, options: BuildOptions | None = None,
          on_outcome: Callable[[ModelOutcome, BuildReport], None] | None = None,
          pool: WorkerPool | None = None) -> BuildReport:
    """Build or extend a filter database from a folder of models.

    Parameters
    ----------
    zoo : str or Path
        Folder of model files (searched recursively) or one model file.
    database : str or Path
        Master HDF5 file to create or append to.
    index : str or Path, optional
        Meta index (CSV or YAML), one row per model. A ``datasheet.yaml`` beside it
        (dataset fields and datasheet answers, see :mod:`filterdb.store.dataset`) is
        stored in the database.
    options : BuildOptions, optional
    on_outcome : callable, optional
        Called with each model's outcome as it is decided (for progress display).
    pool : WorkerPool, optional
        The ``options.workers`` worker processes from
        :func:`~filterdb.worker.start_workers`, started by the caller before its own
        imports; the build shuts it down. By default the build starts them.

    Returns
    -------
    BuildReport
        Also saved as ``DATABASE.build.json``.

    Raises
    ------
    IndexFileError
        With ``strict``, when zoo and index disagree; with ``only_selected``, when the
        index has no ``Selection`` column.

    Examples
    --------
    >>> report = build("zoo/", "db.h5", index="zoo/index.csv")   # doctest: +SKIP
    >>> report.count("added")                                       # doctest: +SKIP
    12
    """
    options = options or BuildOptions()
    if type(options.workers) is not int or options.workers < 0:
        raise ValueError(f"workers must be a whole number, at least 0 (got "
                         f"{options.workers!r})")
    try:
        return _build(zoo, database, index, options, on_outcome, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _build(zoo, database, index, options: BuildOptions, on_outcome,
           pool: WorkerPool | None) -> BuildReport:
    started = time.perf_counter()
    database = Path(database)
    plan = plan_zoo(zoo, is_model_file, index, member_files)
    if options.strict and plan.findings:
        raise IndexFileError(f"{index or zoo}: {len(plan.findings)} index problem(s), "
                             f"first: {plan.findings[0]}")
    left_out = []
    if options.only_selected:
        if not any(SELECTION in m.meta for m in plan.models):
            raise IndexFileError(f"{index or zoo}: --only-selected needs a meta index with a "
                                 f"{SELECTION} column")
        left_out = [m for m in plan.models if not is_selected(m.meta)]
        plan.models = [m for m in plan.models if is_selected(m.meta)]
    report = BuildReport(database=str(database), zoo=str(zoo),
                         index=str(index) if index else None, workers=options.workers,
                         planned=len(plan.models), findings=list(plan.findings),
                         ignored=[str(p) for p in plan.ignored])
    notify = on_outcome or (lambda outcome, report: None)
    publication = _read_publication(index)  # a bad file fails before any work
    for model in left_out:  # listed first: decided before anything is read
        report.outcomes.append(ModelOutcome(model.name, str(model.path), NOT_SELECTED,
                                            f"{SELECTION} is not 1 in the index"))
    with DatabaseWriter(database, options.shapes, durable=options.durable) as writer:
        # a model whose shard is gone is read again: its worker writes the shard anew
        missing = writer.missing_shards
        known = {sha: name for sha, name in writer.known_hashes.items() if sha not in missing}
        jobs = [Job(planned.name, planned.path, planned.meta, known,
                    writer.shards, writer.shapes, options.limits,
                    options.thresholds if options.quality else None,
                    max(1, layer_quality.default_threads() // max(1, options.workers)),
                    options.run, options.require_run, options.durable,
                    options.model_timeout if options.workers else None)
                for planned in plan.models]
        try:
            _run(jobs, writer, options, report, notify, pool, missing)
            _store_publication(writer, publication)
            report.completeness = _completeness(writer, options.count_duplicates)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            report.seconds = time.perf_counter() - started
            if not report.interrupted:
                writer.remove_orphan_shards()
            report.save(layout.report_path(database))
    if report.interrupted:
        raise BuildInterrupted(f"{database}: build interrupted; {report.count(ADDED)} model(s) "
                            "committed. Run the same command again to resume.")
    return report


def _run(jobs: list[Job], writer: DatabaseWriter, options: BuildOptions,
         report: BuildReport, notify, pool: WorkerPool | None, missing: set[str]) -> None:
    """Process jobs, committing finished models in job order; ``missing``: the sha256 of
    stored models whose shard file is gone (the jobs read them again)."""
    results: dict[int, ModelEntry | ModelOutcome] = {}
    next_commit = 0
    committed_hashes = dict(writer.known_hashes)
    stored_shards = (dict(zip(writer.models["sha256"], writer.models["shard"], strict=True))
                     if missing else {})
    committed_names = set(writer.known_names)
    committed_weights = dict(writer.known_weights)
    committer = _Committer(writer, options.commit_seconds, report, notify)

    stored_index = _stored_index(writer)

    def settle(final: bool) -> None:
        nonlocal next_commit
        while next_commit in results:
            job = jobs[next_commit]
            result = results.pop(next_commit)
            next_commit += 1
            if isinstance(result, ModelOutcome):
                outcome = result
                if outcome.status == PRESENT:
                    outcome.reason += _index_changes(job, stored_index)
            elif result.sha256 in committed_hashes:
                outcome = present(result.model, result.source_path,
                                  committed_hashes[result.sha256])
                if result.sha256 in missing and result.shard == stored_shards.get(
                        result.sha256):
                    outcome.reason += "; its missing shard was written again"
                outcome.reason += _index_changes(job, stored_index)
            elif result.model in committed_names:
                outcome = ModelOutcome(result.model, result.source_path, SKIPPED,
                                       "another model of this name is already in the database")
            elif (weights := result.summary.get("weights_blake3")) in committed_weights:
                twin = committed_weights[weights]
                outcome = ModelOutcome(result.model, result.source_path, SKIPPED,
                                       f"duplicate: {result.model} has the same conv weights "
                                       f"as {twin}")
            else:
                committed_hashes[result.sha256] = result.model
                if weights:
                    committed_weights[weights] = result.model
                committed_names.add(result.model)
                committer.ready.append(result)
                continue
            report.outcomes.append(outcome)
            notify(outcome, report)
        committer.poll(final)

    try:
        if options.workers == 0:
            for number, job in enumerate(jobs):
                results[number] = process_model(job)
                settle(final=False)
        else:
            _run_pooled(jobs, options.workers, pool, results, settle)
    finally:
        settle(final=True)
        committer.close()


def _run_pooled(jobs: list[Job], workers: int, pool: WorkerPool | None,
                results: dict, settle: Callable[[bool], None]) -> None:
    """Process jobs in worker processes; a model whose reading kills its worker (a fault
    in a native library on a damaged file) fails alone and the build goes on.

    A dead worker breaks the whole pool, and every unfinished job with it. Jobs reach the
    workers in order, so the crash was one of the first ``workers + 1`` unfinished ones
    (those in flight): each of them is run again alone in a fresh process; the rest go
    on in a new pool.
    """
    remaining = list(range(len(jobs)))
    while remaining:
        quality = any(jobs[number].thresholds is not None for number in remaining)
        with pool or start_workers(workers, quality) as pool:
            unfinished = _drain(pool, jobs, remaining, results, settle)
        if unfinished and not pool.came_up():
            raise WorkerStartError(NO_START)
        pool = None
        suspects, remaining = unfinished[:workers + 1], unfinished[workers + 1:]
        for number in suspects:
            results[number] = _alone(jobs[number])
            settle(False)


def _drain(pool: WorkerPool, jobs: list[Job], numbers: list[int], results: dict,
           settle: Callable[[bool], None]) -> list[int]:
    """Run the jobs ``numbers`` in ``pool`` until done or the pool breaks; returns the
    unfinished ones, in order."""
    pending = {pool.submit(timed, process_model, jobs[number].timeout, jobs[number]): number
               for number in numbers}
    unfinished = []
    try:
        while pending:
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                number = pending.pop(future)
                try:
                    results[number] = future.result()
                except BrokenProcessPool:
                    unfinished.append(number)
            settle(False)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return sorted(unfinished)


def _alone(job: Job) -> ModelEntry | ModelOutcome:
    """``process_model(job)`` in a process of its own: a failed model if it dies."""
    try:
        return read_alone(process_model, job.path, job, timeout=job.timeout)
    except ModelReadError as error:
        return ModelOutcome(job.name, str(job.path), FAILED, error.reason)


def _completeness(writer: DatabaseWriter, count_duplicates: bool) -> dict:
    """What the tables show without reading filters: empty meta fields, shared layers;
    with ``count_duplicates``, exact duplicate filters per stored shape, which takes a
    pass over every filter of the database (as ``filterdb verify`` does)."""
    from . import redundancy  # pandas: imported once the models run

    if writer.models.empty:
        return {}
    completeness = {
        "models": len(writer.models),
        "empty_fields": redundancy.empty_fields_of(writer.models, writer.index_columns),
        **redundancy.shared_layers_of(writer.models, writer.layers)}
    if count_duplicates:
        from .store.reader import FilterDB

        db = FilterDB(writer.path)  # the committed state; readers take no lock
        completeness["duplicate_filters"] = [
            {key: scan[key] for key in ("shape", "filters", "duplicate_filters",
                                        "duplicated_values", "zero_filters")}
            for scan in (redundancy.scan_filters(db, shape, workdir=writer.path.parent)
                         for shape in writer.shapes)]
    return completeness


def _stored_index(writer: DatabaseWriter) -> dict[str, dict[str, str]]:
    """Model name -> its stored index fields, as text ("" where empty)."""
    import pandas as pd

    if not writer.known_names:
        return {}
    models = writer.models
    columns = [c for c in writer.index_columns if c in models]
    return {str(row["model"]): {c: "" if pd.isna(row[c]) else str(row[c]) for c in columns}
            for row in models[["model", *columns]].to_dict("records")}


def _index_changes(job: Job, stored_index: dict[str, dict[str, str]]) -> str:
    """For a model already present: how its index row now differs from the stored one
    (a build adds models; it does not rewrite the fields of stored ones)."""
    stored = stored_index.get(job.name)
    if stored is None:
        return ""
    # an empty field gives nothing (the stored Framework and Precision were filled in
    # from the file), so it is no change
    changes = [f"{column}: {stored[column]!r} -> {value!r}" for column, value in
               job.meta.items() if column in stored and str(value).strip()
               and stored[column] != str(value)]
    if not changes:
        return ""
    return (f"; its index row differs from the stored one ({', '.join(changes)}), not "
            "updated")


def _read_publication(index) -> tuple[Path, dict, dict] | None:
    """``datasheet.yaml`` beside the index: (path, dataset fields, answers), or None."""
    path = Path(index).parent / dataset.DATASHEET_FILE if index is not None else None
    if path is None or not path.is_file():
        return None
    from .datasheet import check_answers

    fields, answers = dataset.read_publication(path)
    check_answers(answers, str(path))
    return path, fields, answers


def _store_publication(writer: DatabaseWriter, publication) -> None:
    """Store the dataset fields and datasheet answers when they changed."""
    if publication is None or writer.models.empty:
        return
    path, fields, answers = publication
    info = dataset.described(writer.dataset, fields, str(path))
    if info != writer.dataset or answers != writer.answers:
        writer.update_dataset(info, answers)


class _Committer:
    """Commits ready models in a background thread, one commit in flight at a time, so
    reading goes on while shards are synced and the master is rewritten.

    Commits rewrite the whole master, so they are spaced to cost at most ~10 % of
    the build (and at least ``min_seconds`` apart).
    """

    def __init__(self, writer: DatabaseWriter, min_seconds: float, report: BuildReport,
                 notify):
        self.writer, self.min_seconds = writer, min_seconds
        self.report, self.notify = report, notify
        self.ready: list[ModelEntry] = []
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="filterdb-commit")
        self.inflight: Future | None = None
        self.last = time.monotonic()
        self.cost = 0.0

    def poll(self, final: bool) -> None:
        """Report a finished commit and start the next one when due; with ``final``,
        commit everything that is ready before returning."""
        while True:
            if self.inflight is not None and (final or self.inflight.done()):
                self._finish()
            due = time.monotonic() - self.last >= max(self.min_seconds, 10 * self.cost)
            if self.inflight is None and self.ready and (final or due):
                entries, self.ready = self.ready, []
                self.inflight = self.thread.submit(self._commit, entries)
            if not final or (self.inflight is None and not self.ready):
                return

    def _commit(self, entries: list[ModelEntry]) -> tuple[list[ModelEntry], list[int]]:
        began = time.monotonic()
        ids = self.writer.commit(entries)
        self.cost = time.monotonic() - began
        return entries, ids

    def _finish(self) -> None:
        inflight, self.inflight = self.inflight, None
        entries, ids = inflight.result()
        self.last = time.monotonic()
        for entry, model_id in zip(entries, ids, strict=True):
            outcome = _added(entry, model_id)
            self.report.outcomes.append(outcome)
            self.notify(outcome, self.report)

    def close(self) -> None:
        self.thread.shutdown(wait=True)


def _added(entry: ModelEntry, model_id: int) -> ModelOutcome:
    counts = entry.summary["shape_counts"]
    return ModelOutcome(entry.model, entry.source_path, ADDED, model_id=model_id,
                        filters={layout.shape_label(s): n for s, n in counts.items()},
                        nan_count=sum(r["nan_count"] for r in entry.layers),
                        inf_count=sum(r["inf_count"] for r in entry.layers),
                        quality_verdict=entry.summary["quality_verdict"],
                        degenerated_share=entry.summary["degenerated_share"],
                        runs=entry.summary["runs"], run_reason=entry.summary["run_reason"],
                        outputs_finite=entry.summary["outputs_finite"])


