"""Peak memory is set by chunk_rows, not by the number of filters."""

from __future__ import annotations

import mmap
import multiprocessing
import tracemalloc
from concurrent.futures import ProcessPoolExecutor

import pytest

import filterdb
from filterdb.analysis import analyze

from .conftest import make_db


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    small = make_db(tmp_path_factory.mktemp("mem_small"), 4, (16, 32, 48), seed=11)
    large = make_db(tmp_path_factory.mktemp("mem_large"), 16, (16, 32, 48), seed=11)
    return small, large


def peak_bytes(path, chunk_rows: int, mapped: bool = True) -> int:
    """Traced peak of one analysis, in a fresh process: tracemalloc sees every thread,
    and threads left by earlier tests (Dask clients) must not count. ``mapped=False``:
    no file can be mapped, so the passes read the rows into buffers."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_traced_peak, path, chunk_rows, mapped).result()


def _unmappable(*args, **kwargs):
    raise OSError("no mapping")


def _traced_peak(path, chunk_rows: int, mapped: bool) -> int:
    if not mapped:
        mmap.mmap = _unmappable  # a fresh process of its own
    analyze(path, by=["Task"], chunk_rows=1000)  # compiles the kernels outside the trace
    db = filterdb.open(path)
    db.models, db.layers  # noqa: B018 - tables read before measuring
    tracemalloc.start()
    try:
        # one thread: with two, the peak depends on how the tasks in flight interleave
        # (up to 1.4x between runs)
        analyze(db, by=["Task", "depth"], chunk_rows=chunk_rows, threads=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_follows_chunk_rows_not_size(two_sizes):
    small, large = two_sizes
    n_small = len(filterdb.open(small).select())
    n_large = len(filterdb.open(large).select())
    assert n_large > 4 * n_small > 20_000
    small_chunks = peak_bytes(small, 1000), peak_bytes(large, 1000)
    # independent of N: 5x the filters, (almost) the same peak
    assert small_chunks[1] < 1.25 * small_chunks[0]
    # read into buffers, set by the chunk: a chunk holding the whole large database
    # reads it into one buffer (36 bytes a filter)
    assert peak_bytes(large, 100_000, mapped=False) > 36 * n_large
    # mapped rows are the page cache, not the heap (they count in RSS while mapped,
    # at most a chunk per task in flight): the traced peak does not grow with the chunk
    assert peak_bytes(large, 100_000) < 1.25 * small_chunks[1]
