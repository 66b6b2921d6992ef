"""Mapped views of shard rows (store.direct.map_rows) and the analysis passes that use them."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import filterdb
from filterdb.analysis import analyze, passes
from filterdb.store import direct, layout

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="needs /proc/self/maps")


def mapped_files() -> set[str]:
    """Files mapped into this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps
                if len(line.split(maxsplit=5)) == 6}


def test_mapped_rows_equal_the_stored_rows_and_are_unmapped_when_dropped(zoo_db):
    shards = sorted(layout.shards_dir(zoo_db).glob("*.h5"))
    rng = np.random.default_rng(3)
    for path in shards[:4]:
        where = direct.extents(path, layout.FILTERS)
        with h5py.File(path, "r") as handle:
            stored = handle[layout.FILTERS][...].reshape(-1, 9)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(10):
                start, stop = np.sort(rng.choice(len(stored) + 1, 2, replace=False))
                rows = direct.map_rows(fd, where, int(start), int(stop))
                assert rows.shape == (stop - start, 9) and rows.dtype == np.float32
                assert rows.flags.c_contiguous and rows.flags.writeable  # the kernels' type
                np.testing.assert_array_equal(rows, stored[start:stop])
                assert str(path) in mapped_files()
                del rows
                assert str(path) not in mapped_files()
            assert direct.map_rows(fd, where, 0, len(stored) + 1) is None
            assert direct.map_rows(fd, where, 5, 5) is None
        finally:
            os.close(fd)


def test_rows_across_runs_are_not_mapped(tmp_path):
    path = tmp_path / "chunked.h5"
    values = np.arange(12 * 9, dtype=np.float32).reshape(12, 3, 3)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(layout.FILTERS, shape=values.shape, dtype=np.float32,
                                        chunks=(4, 3, 3))
        for chunk in (2, 0, 1):  # allocated in this order: chunk 2 lies before chunk 0
            dataset[4 * chunk:4 * chunk + 4] = values[4 * chunk:4 * chunk + 4]
    where = direct.extents(path, layout.FILTERS)
    assert len(where.starts) == 2  # chunks 0 and 1 back to back, chunk 2 elsewhere
    fd = os.open(path, os.O_RDONLY)
    try:
        np.testing.assert_array_equal(direct.map_rows(fd, where, 1, 8),
                                      values[1:8].reshape(7, 9))
        np.testing.assert_array_equal(direct.map_rows(fd, where, 9, 12),
                                      values[9:12].reshape(3, 9))
        assert direct.map_rows(fd, where, 6, 10) is None
    finally:
        os.close(fd)


def unmappable(*args, **kwargs):
    raise OSError("cannot map this file")


@pytest.mark.parametrize("where", [None, {"conv_depth_norm": (0.2, 0.7)}])
def test_mapped_and_read_passes_give_the_same_bits(zoo_db, monkeypatch, where):
    """Mapped spans, and files that cannot be mapped (read instead), give one result:
    the pieces are the same, blocks of READ_ROWS cut inside the spans."""
    monkeypatch.setattr(passes, "READ_ROWS", 700)
    mapped = []

    def counted(*args):
        rows = map_rows(*args)
        mapped.append(rows is not None)
        return rows

    map_rows = direct.map_rows
    monkeypatch.setattr(direct, "map_rows", counted)
    kwargs = {"by": ["Task", "depth"], "where": where, "chunk_rows": 2500, "threads": 1}
    viewed = analyze(zoo_db, **kwargs)
    assert mapped and all(mapped)
    mapped.clear()
    with monkeypatch.context() as patch:
        patch.setattr(mmap, "mmap", unmappable)
        read = analyze(zoo_db, **kwargs)
    assert mapped and not any(mapped)
    assert viewed.n_filters == read.n_filters == len(filterdb.open(zoo_db).select(
        **(where or {})))
    for name in ("mean", "components", "explained_variance", "coef_min", "coef_max"):
        np.testing.assert_array_equal(getattr(viewed.basis, name), getattr(read.basis, name))
    np.testing.assert_array_equal(viewed.density[0], read.density[0])
    for name in ("Task", "depth"):
        np.testing.assert_array_equal(viewed.groupings[name].raw_counts,
                                      read.groupings[name].raw_counts)
        assert viewed.groupings[name].raw_counts.sum() == viewed.n_filters * 9


def test_no_mapping_outlives_the_analysis(zoo_db):
    shards = {str(p) for p in layout.shards_dir(zoo_db).glob("*.h5")}
    result = analyze(zoo_db, by=["Task"], chunk_rows=3000, threads=2)
    assert result.n_filters > 0
    assert not shards & mapped_files()
