"""The work of one build worker: read a model, assess it, write its shard.

Kept free of pandas and of the index and writer modules, so that worker
processes start small and fast.
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import json
import mmap
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from blake3 import blake3

from . import extraction, layer_quality
from .errors import MissingDependencyError, ModelReadError, WorkerStartError
from .readers import Limits, RunLimits, member_files, open_model, parse_input_shapes, run_model
from .records import NOT_RUN, RUNS_NO, RunResult
from .runs import run_columns
from .store import layout
from .store.entry import ModelEntry
from .store.shard import (
    combine_digests,
    filter_checksums,
    read_record_json,
    seal_shard,
    temporary_shard,
    write_shard,
)

ADDED, PRESENT, SKIPPED, FAILED = "added", "present", "skipped", "failed"
#: A model the index does not select (its Selection is not 1) under --only-selected.
NOT_SELECTED = "not selected"
NOT_ASSESSED = "not assessed"
#: Index column giving a model's input shapes for a verification run.
INPUT_SHAPE_COLUMN = "Input Shape"
#: Quality columns of the layers table ("n" is already there as n_filters).
QUALITY_LAYER_COLUMNS = tuple(c for c in layer_quality.METRIC_COLUMNS if c != "n") + (
    "verdict", "reason")


@dataclass
class ModelOutcome:
    """What happened to one model of the zoo."""

    model: str
    path: str
    status: str
    reason: str = ""
    model_id: int | None = None
    filters: dict[str, int] = field(default_factory=dict)
    nan_count: int = 0
    inf_count: int = 0
    quality_verdict: str = ""
    degenerated_share: float = 0.0
    runs: str = ""
    run_reason: str = ""
    outputs_finite: str = ""


@dataclass
class Job:
    name: str
    path: Path
    meta: dict[str, str]
    known_hashes: dict[str, str]
    shards: Path
    shapes: tuple[tuple[int, int], ...]
    limits: Limits
    thresholds: layer_quality.Thresholds | None  # None: no quality metrics
    threads: int = 1
    run: RunLimits | None = None  # None: models are not run
    require_run: bool = False
    durable: bool = False  # the writer fsyncs shards before committing them
    #: In a worker process: end the process when the model takes longer (seconds).
    timeout: float | None = None


class WorkerPool(ProcessPoolExecutor):
    """Worker processes for :func:`process_model`, started at once (see
    :func:`start_workers`); each reports when it is up."""

    def __init__(self, count: int, method: str, quality: bool = False):
        super().__init__(count, mp_context=multiprocessing.get_context(method),
                         initializer=init_worker, initargs=(quality, os.getpid()))
        # the pool starts a process per task while none is idle
        try:
            self.started = [self.submit(_started) for _ in range(count)]
        except BaseException:  # Ctrl-C while a worker starts: it would wait for ever
            self.kill()
            raise

    def kill(self) -> None:
        """End the worker processes now and drop the queued tasks: for an interrupt,
        where shutting down would wait for the workers, and a worker still starting
        waits for ever for the start-up data the interrupted parent did not send."""
        for process in list((self._processes or {}).values()):
            process.kill()
        self.shutdown(wait=False, cancel_futures=True)

    def came_up(self) -> bool:
        """Whether any worker started. False when the pool broke before: its processes
        die as they start, which is no model's fault."""
        return any(future.done() and not future.cancelled() and future.exception() is None
                   for future in self.started)


def start_workers(count: int, quality: bool = False) -> WorkerPool:
    """``count`` worker processes for :func:`process_model`, started now; with
    ``quality``, each also loads the compiled quality metrics as it starts.

    Each new process imports this module (numpy, h5py, ...) while the caller goes on:
    the build's main process imports its table libraries (pandas, PyTables) and plans
    the zoo meanwhile, instead of starting the workers after that. A process with one
    thread forks its workers, which then find the modules it has already imported (an
    interpreter start and numpy's import less per worker); one with more threads (a
    notebook, a thread pool, a BLAS library's threads) spawns fresh interpreters,
    since a forked child could inherit a lock that another thread held.
    """
    return WorkerPool(count, "fork" if _single_threaded() else "spawn", quality)


def _single_threaded() -> bool:
    """Whether this process runs one thread, native threads included (Linux only)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _started() -> None:
    """The first task of a worker: it is up and has imported this module."""


def init_worker(quality: bool = False, parent: int | None = None) -> None:
    """Set up a worker process: Ctrl-C is the main process's to handle (it commits
    what is ready and stops), the worker ends with the main process ``parent``, and
    malloc is tuned for one model after another. With ``quality``, the metrics'
    compiled kernel is loaded now (0.4 s here), while the main process still plans
    the zoo, instead of when the first model waits for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _end_with(parent)
    tune_malloc()
    if quality:
        layer_quality.warm()


def _end_with(parent: int) -> None:
    """Have the kernel kill this worker when the build process dies (Linux's
    ``PR_SET_PDEATHSIG``): killed or crashed, it cannot shut its workers down, and a
    worker left behind waits forever for tasks on a pipe it holds open itself."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request
        os._exit(1)


#: prctl option: the signal this process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def tune_malloc() -> None:
    """glibc malloc, for a process that reads one model after another.

    - One arena for all threads: by default every hashing and metrics thread keeps an
      arena of its own, each holding on to the memory a model freed (measured: ~25 MB
      per worker).
    - Blocks up to 32 MB (glibc's largest mmap threshold) come from the heap, and up to
      256 MB of freed heap are kept instead of being returned to the system after each
      model: otherwise the next model's buffers are new pages that the kernel faults in
      and zeroes again (measured on the benchmark zoo: half of the build's system time,
      about 1.4 s of CPU). The peak is unchanged: that memory was in use before.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not glibc
        return
    mallopt(M_ARENA_MAX, 1)
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


#: glibc mallopt parameters (malloc.h).
M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -8, -3, -1


def process_model(job: Job) -> ModelEntry | ModelOutcome:
    """Read one model and write its shard; never raises for a bad model file.

    The file's sha256 is computed in a thread while the model is read, assessed and
    written, the weights' hashes and the stored filters' checksums (one pass) in
    another while it is assessed and written (hashlib, blake3, numpy and h5py release
    the GIL); the shard gets its content-hash name afterwards. When appending, known
    models and shards a killed build left behind are recognised by the hash before
    the model is read. In a worker it runs under :func:`timed`, ``job.timeout`` its
    deadline.
    """
    try:
        hasher = _hashing_threads()  # the file and the weights, side by side
        # Its own read of the file: hashing the bytes the reader read would keep them
        # in memory beside the parsed model until the hash is done (+1x the file).
        hashing = hasher.submit(model_sha256, job.path)
        if job.known_hashes:  # appending: recognise known models before reading them
            known = _known(job, hashing.result())
            if known is not None:
                return known
        record = open_model(job.path, job.limits)
        layers = extraction.ordered_layers(record)
        if not layers:
            raise ModelReadError(job.path, "no convolution layers with 2-D kernels")
        # Hashed in a thread while the metrics are computed and the shard is written.
        hashing_weights = hasher.submit(weight_digests, layers, job.shapes)
        quality, verdict = (
            layer_quality.assess_layers([layer.weight for layer in layers], job.thresholds,
                                        job.threads)
            if job.thresholds is not None else _not_assessed(len(layers)))
        model_digest, layer_digests, filter_digests, non_finite = hashing_weights.result()
        rows = extraction.layer_rows(layers, non_finite)
        for row, values, digest in zip(rows, quality, layer_digests, strict=True):
            row.update({key: values[key] for key in QUALITY_LAYER_COLUMNS})
            row["weights_blake3"] = digest
        summary = extraction.model_summary(record, layers)
        summary.update(quality_verdict=verdict["verdict"],
                       degenerated_share=verdict["degenerated_share"],
                       random_like_share=verdict["random_like_share"],
                       weights_blake3=model_digest)
        summary.update(_run_columns(job))
        entry = ModelEntry(model=job.name, sha256="", source_path=str(job.path),
                           shard="", meta=dict(job.meta), summary=summary, layers=rows)
        counts = {shape: summary["shape_counts"].get(shape, 0) for shape in job.shapes}
        tmp = temporary_shard(job.shards)
        write_shard(tmp, counts, lambda shape: extraction.filters_by_shape(layers, shape),
                    json.dumps(_entry_json(entry)), checksums=False,
                    durable=job.durable)
        entry.summary["filters_blake3"] = filter_digests
        entry.sha256 = hashing.result()
        if entry.sha256 in job.known_hashes:
            tmp.unlink(missing_ok=True)
            return present(job.name, job.path, job.known_hashes[entry.sha256])
        entry.shard = layout.shard_name(entry.sha256, job.shapes)
        seal_shard(tmp, job.shards / entry.shard)
        return entry
    except DoesNotRun as error:
        return ModelOutcome(job.name, str(job.path), FAILED, error.reason, runs=RUNS_NO,
                            run_reason=error.run_reason)
    except ModelReadError as error:
        return ModelOutcome(job.name, str(job.path), FAILED, error.reason)
    except OSError as error:
        return ModelOutcome(job.name, str(job.path), FAILED,
                            f"cannot read ({error.strerror or error})")
    except Exception as error:  # a reader bug must not end the build; report it per model
        return ModelOutcome(job.name, str(job.path), FAILED,
                            f"unexpected {type(error).__name__}: {error}")


#: Why worker processes that die at once failed: no model is to blame.
NO_START = ("worker processes exit as they start, before reading any model; from a "
            "Python script, call build() under `if __name__ == \"__main__\":` (or use "
            "workers=0: models read in this process, without isolation)")


def read_alone(function, path, *args, timeout: float | None = None):
    """``function(*args)``, which reads the model file ``path``, in a worker process of
    its own; its result, or its exception re-raised here.

    Raises
    ------
    ModelReadError
        When the process dies (a crash in a native library, e.g. on a damaged file) or
        is stopped after ``timeout`` seconds (a hang).
    WorkerStartError
        When the worker exits as it starts (no model is to blame).
    """
    with start_workers(1) as solo:
        started = time.monotonic()
        try:
            return solo.submit(timed, function, timeout, *args).result()
        except (KeyboardInterrupt, SystemExit):
            solo.kill()
            raise
        except BrokenProcessPool:
            if not solo.came_up():
                raise WorkerStartError(NO_START) from None
            if timeout and time.monotonic() - started >= timeout:
                reason = f"still being read after {timeout:g} s (stopped)"
            else:
                reason = ("reading it killed the worker process (a crash in a native "
                          "library, e.g. on a damaged file)")
            raise ModelReadError(path, reason) from None


def timed(function, timeout: float | None, *args):
    """``function(*args)`` in a worker process that ends itself if the call takes
    longer than ``timeout`` seconds (None: no limit). faulthandler's watchdog is a C
    thread: it fires even while a native library (HDF5 on a damaged file) holds the
    GIL and never returns. The caller then fails the model alone."""
    if not timeout:
        return function(*args)
    faulthandler.dump_traceback_later(timeout, exit=True, file=_devnull())
    try:
        return function(*args)
    finally:
        faulthandler.cancel_dump_traceback_later()


@lru_cache(maxsize=1)
def _devnull():
    """Where the watchdog writes its traceback: the build reports the model in one line."""
    return open(os.devnull, "w")  # noqa: SIM115 - open for the life of the worker


def _known(job: Job, sha256: str) -> ModelOutcome | ModelEntry | None:
    if sha256 in job.known_hashes:
        return present(job.name, job.path, job.known_hashes[sha256])
    shard = job.shards / layout.shard_name(sha256, job.shapes)
    entry = _entry_from_shard(shard, job, sha256) if shard.exists() else None
    if entry is not None:  # this build decides whether and how the model is run
        entry.summary.update(_run_columns(job))
    return entry


class DoesNotRun(ModelReadError):
    """A model that fails to run, in a build that requires models to run."""

    def __init__(self, path, run_reason: str):
        super().__init__(path, f"does not run: {run_reason}")
        self.run_reason = run_reason


def _run_columns(job: Job) -> dict:
    """The run columns of the job's model: run once when the build verifies runs.

    Raises
    ------
    DoesNotRun
        When the model fails to run and the build requires models to run.
    """
    if job.run is None:
        return run_columns(None)
    text = job.meta.get(INPUT_SHAPE_COLUMN, "")
    try:
        shapes = parse_input_shapes(text) if text else None
    except ValueError as error:
        return run_columns(RunResult(NOT_RUN, f"{INPUT_SHAPE_COLUMN} in the index: {error}"))
    try:
        result = run_model(job.path, shapes, job.run)
    except MissingDependencyError as error:  # the model is fine; this machine cannot run it
        result = RunResult(NOT_RUN, error.reason)
    if result.runs == RUNS_NO and job.require_run:
        raise DoesNotRun(job.path, result.reason)
    return run_columns(result)


def _not_assessed(n_layers: int) -> tuple[list[dict], dict]:
    """Quality fields of a build run without metrics: NaN, verdict "not assessed"."""
    row = {key: float("nan") for key in layer_quality.METRIC_COLUMNS}
    row.update(verdict=NOT_ASSESSED, reason="")
    return [dict(row) for _ in range(n_layers)], {
        "verdict": NOT_ASSESSED, "degenerated_share": float("nan"),
        "random_like_share": float("nan")}


def present(name: str, path, existing: str) -> ModelOutcome:
    return ModelOutcome(name, str(path), PRESENT, f"same content as {existing}")


def _entry_json(entry: ModelEntry) -> dict:
    summary = dict(entry.summary)
    summary["shape_counts"] = [[*shape, n] for shape, n in summary["shape_counts"].items()]
    return {"summary": summary, "layers": entry.layers}


def _entry_from_shard(shard: Path, job: Job, sha256: str) -> ModelEntry | None:
    """Reuse a complete shard a killed build left behind for the same file."""
    try:
        data = json.loads(read_record_json(shard))
    except (OSError, KeyError, ValueError):
        return None
    summary = data["summary"]
    summary["shape_counts"] = {(kh, kw): n for kh, kw, n in summary["shape_counts"]}
    # The record is written before the filters, so their checksums are not in it.
    summary["filters_blake3"] = filter_checksums(shard, job.shapes)
    return ModelEntry(model=job.name, sha256=sha256, source_path=str(job.path),
                      shard=shard.name, meta=dict(job.meta), summary=summary,
                      layers=data["layers"])


#: float32 values hashed and checked at a time: 1 MB, well inside the L2 cache.
HASH_PIECE = 1 << 18


def weight_digests(layers, shapes) -> tuple[str, list[str], dict[str, str], list[dict]]:
    """One BLAKE3 pass over a model's conv weights, in storage order, gives four things.

    - The model's weights hash (over its layers' hashes, sorted): two files holding
      the same network, whatever their name, format or the order in which they list
      its layers (a graph's depth order, a state dict's parameter order), give the same
      one, where the file hash cannot see it.
    - Each layer's hash (its shape and the digest of its float32 values): a layer
      shared between different models gets the same one.
    - The stored filters' checksum per shape (:func:`combine_digests` of the digests
      of that shape's layers), which ``filterdb verify`` recomputes from the shard.
    - Each layer's NaN and Inf counts, checked piece by piece while the piece is in
      the CPU cache after hashing (a second pass over the weights costs its memory
      traffic again).
    """
    layer_hashes, by_shape = [], {shape: [] for shape in shapes}
    non_finite = []
    for layer in layers:
        weight = np.ascontiguousarray(layer.weight, dtype=np.float32)
        flat, digest, finite = weight.reshape(-1), blake3(), True
        for start in range(0, flat.size, HASH_PIECE):
            piece = flat[start:start + HASH_PIECE]
            digest.update(piece.view(np.uint8))  # a view: no copy
            finite = finite and bool(np.isfinite(piece).all())
        values = digest.digest()
        layer_hashes.append(blake3(json.dumps(weight.shape).encode() + values).hexdigest())
        if layer.kernel_shape in by_shape and weight.size:
            by_shape[layer.kernel_shape].append(values)
        non_finite.append({"nan_count": 0, "inf_count": 0} if finite
                          else extraction.non_finite_counts(flat))
    model_hash = blake3("".join(sorted(layer_hashes)).encode()).hexdigest()
    return model_hash, layer_hashes, {layout.shape_label(shape): combine_digests(digests)
                                      for shape, digests in by_shape.items()}, non_finite


@lru_cache(maxsize=1)
def _hashing_threads() -> ThreadPoolExecutor:
    """The worker's two hashing threads, kept for all its models."""
    return ThreadPoolExecutor(2, thread_name_prefix="filterdb-hash")


def model_sha256(path: Path) -> str:
    """sha256 of a model's file, or of the bytes of its files one after another (a
    sharded checkpoint's index, then its shards in the index's order)."""
    digest = hashlib.sha256()
    for part in [path, *member_files(path)]:
        _hash_file(digest, part)
    return digest.hexdigest()


def _hash_file(digest, path: Path, window: int = 8 << 20) -> None:
    """Hash a file into ``digest`` from a read-only mapping, window by window; each
    window's pages are dropped from the mapping once hashed, so the mapping adds one
    window to the process's memory, and no copy of the file is made. Files that cannot
    be mapped (empty, special) are read in blocks."""
    with open(path, "rb", buffering=0) as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            buffer = memoryview(bytearray(1 << 20))  # one buffer: no allocation per block
            while count := handle.readinto(buffer):
                digest.update(buffer[:count])
            return
        with mapped, memoryview(mapped) as view:
            for start in range(0, len(view), window):
                with view[start:start + window] as piece:
                    digest.update(piece)
                    if hasattr(mapped, "madvise"):
                        mapped.madvise(mmap.MADV_DONTNEED, start, len(piece))
