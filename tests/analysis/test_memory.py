"""Peak memory is set by chunk_rows, not by the number of filters."""

from __future__ import annotations

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


def peak_bytes(path, chunk_rows: int) -> int:
    """Traced peak of one analysis, in a fresh process: tracemalloc sees every thread,
    and threads left by earlier tests (Dask clients) must not count."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_traced_peak, path, chunk_rows).result()


def _traced_peak(path, chunk_rows: int) -> int:
    analyze(path, by=["Task"], chunk_rows=1000)  # compiles the kernels outside the trace
    db = filterdb.open(path)
    db.models, db.layers  # noqa: B018 - tables read before measuring
    tracemalloc.start()
    try:
        # One thread: one task in flight, so the peak does not depend on how far the
        # threads ran ahead of each other (at most 2 tasks per thread, a constant).
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
    # set by the chunk: a chunk holding the whole large database costs far more
    assert peak_bytes(large, 100_000) > 3 * small_chunks[1]
