"""Direct reads of uncompressed shard datasets: file offsets from HDF5 once, then ``pread``.

A shard's filters are a chunked (or contiguous) float32 dataset without filters
(no compression, no shuffle, no checksum), so a run of rows is a run of bytes in the
file. Reading them with ``os.preadv`` skips HDF5's per-read selection and chunk
machinery (several times the cost of the copy itself) and runs without Python's lock,
so reads overlap with computation in other threads. Anything else (filters, another
byte order, unallocated chunks, virtual or external storage) returns ``None`` from
:func:`extents`, and callers read through h5py as before.

Rows that lie in one run can also be mapped (:func:`map_rows`): a view of the page
cache itself, without the copy a read makes.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np

#: The only on-disk element type read directly (the store writes it).
DTYPE = np.dtype("<f4")


@dataclass(frozen=True)
class Extents:
    """Where the rows of one dataset lie in its file.

    Attributes
    ----------
    rows : int
        Rows of the dataset.
    row_bytes : int
    starts : int64 (runs,)
        First row of each run of rows stored back to back, ascending, ``starts[0] == 0``.
    offsets : int64 (runs,)
        File offset of each run's first row.
    """

    rows: int
    row_bytes: int
    starts: np.ndarray
    offsets: np.ndarray


def extents(path: Path, name: str) -> Extents | None:
    """The :class:`Extents` of dataset ``name`` in ``path``, or None if it cannot be read
    directly. Cached per file (path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    return _extents(str(path), name, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _extents(path: str, name: str, size: int, mtime: int) -> Extents | None:
    with h5py.File(path, "r") as handle:
        dataset = handle.get(name)
        if not isinstance(dataset, h5py.Dataset) or dataset.dtype != DTYPE \
                or dataset.ndim < 1 or dataset.is_virtual or dataset.external:
            return None
        plist = dataset.id.get_create_plist()
        if plist.get_nfilters():
            return None
        rows = int(dataset.shape[0])
        row_bytes = DTYPE.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
        if rows == 0:
            return Extents(0, row_bytes, np.zeros(1, np.int64), np.zeros(1, np.int64))
        if dataset.chunks is None:
            offset = dataset.id.get_offset()
            if offset is None:
                return None
            return Extents(rows, row_bytes, np.zeros(1, np.int64),
                           np.array([offset], np.int64))
        if tuple(dataset.chunks[1:]) != tuple(dataset.shape[1:]):
            return None
        chunk_rows = int(dataset.chunks[0])
        chunk_bytes = chunk_rows * row_bytes
        count = dataset.id.get_num_chunks()
        if count != -(-rows // chunk_rows):
            return None  # unallocated chunks read as the fill value: let HDF5 do it
        chunks = _chunk_infos(dataset.id, count)
        if len(chunks) != count or any(
                info.byte_offset is None or info.size != chunk_bytes or info.filter_mask
                for info in chunks):
            return None
        first = np.array([info.chunk_offset[0] for info in chunks], np.int64)
        where = np.array([info.byte_offset for info in chunks], np.int64)
    order = np.argsort(first)
    first, where = first[order], where[order]
    if not np.array_equal(first, np.arange(count, dtype=np.int64) * chunk_rows):
        return None
    # merge chunks that lie back to back in the file into runs
    joined = np.r_[False, where[1:] == where[:-1] + chunk_bytes]
    return Extents(rows, row_bytes, first[~joined], where[~joined])


def _chunk_infos(dataset_id, count: int) -> list:
    """Storage info of every chunk: one walk of the chunk index (``H5Dchunk_iter``,
    HDF5 1.10.10, 1.12.3 and later) where available: a third of the time of a query
    per chunk."""
    infos: list = []
    try:
        dataset_id.chunk_iter(infos.append)
    except (AttributeError, NotImplementedError):  # pragma: no cover - older HDF5
        return [dataset_id.get_chunk_info(i) for i in range(count)]
    return infos


def read_rows(fd: int, where: Extents, start: int, stop: int, out: np.ndarray) -> None:
    """Rows ``start:stop`` of the dataset into ``out`` (C-contiguous, ``(stop - start) *
    row_bytes`` bytes), read from the open file ``fd``."""
    if not 0 <= start <= stop <= where.rows:
        raise IndexError(f"rows {start}:{stop} outside 0:{where.rows}")
    target = memoryview(out.reshape(-1).view(np.uint8))
    if len(target) != (stop - start) * where.row_bytes:
        raise ValueError("out does not hold the rows")
    run = int(np.searchsorted(where.starts, start, side="right")) - 1
    row = start
    while row < stop:
        end = min(stop, int(where.starts[run + 1]) if run + 1 < len(where.starts)
                  else where.rows)
        offset = int(where.offsets[run]) + (row - int(where.starts[run])) * where.row_bytes
        _pread(fd, target[(row - start) * where.row_bytes:(end - start) * where.row_bytes],
               offset)
        row = end
        run += 1


def _pread(fd: int, target: memoryview, offset: int) -> None:
    while len(target):
        done = os.preadv(fd, [target], offset)
        if done <= 0:
            raise OSError(f"short read at offset {offset} of a shard")
        target, offset = target[done:], offset + done


def map_rows(fd: int, where: Extents, start: int, stop: int) -> np.ndarray | None:
    """Rows ``start:stop`` of the dataset as float32 ``(stop - start, row_bytes // 4)``,
    a view of the file ``fd`` mapped into memory; None when the rows do not lie in one
    run of the file or the file cannot be mapped (read them with :func:`read_rows`).

    The analysis reads every filter three times; a mapped view hands the page cache to
    the kernels without the copy into a buffer that a read makes. The mapping covers
    just these rows and lives as long as the view (and arrays made from it): it is
    unmapped when the last of them is dropped, so hold the view only while it is used
    (its file pages count in the process's RSS while mapped). It is a private
    copy-on-write mapping (``ACCESS_COPY``): nothing reaches the file, and the view
    is writeable, which keeps the kernels' argument type (numba compiles read-only
    arrays as another type); nothing writes to it.
    """
    if not 0 <= start < stop <= where.rows:
        return None
    run = int(np.searchsorted(where.starts, start, side="right")) - 1
    if run + 1 < len(where.starts) and stop > where.starts[run + 1]:
        return None
    offset = int(where.offsets[run]) + (start - int(where.starts[run])) * where.row_bytes
    skip = offset % mmap.ALLOCATIONGRANULARITY
    size = (stop - start) * where.row_bytes
    try:
        mapping = mmap.mmap(fd, skip + size, access=mmap.ACCESS_COPY, offset=offset - skip)
    except (OSError, ValueError):
        return None
    if hasattr(mapping, "madvise"):  # read ahead the whole range, in order
        mapping.madvise(mmap.MADV_SEQUENTIAL)
        mapping.madvise(mmap.MADV_WILLNEED)
    rows = np.frombuffer(mapping, DTYPE, size // DTYPE.itemsize, skip)
    return rows.reshape(stop - start, where.row_bytes // DTYPE.itemsize)
