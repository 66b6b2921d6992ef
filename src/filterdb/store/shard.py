"""Immutable shard files: one model's filters per kernel shape, written then renamed."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from .layout import Shape, filters_dataset, shape_label

#: Rows per HDF5 chunk: 16384 3x3 float32 filters are 590 kB, a good read unit that
#: fits HDF5's chunk cache, so a chunk that spans two layers is written once.
CHUNK_ROWS = 16384
#: Dataset holding the model's rows as JSON (attributes are capped at 64 kB).
RECORD = "record"
#: HDF5 chunk cache per dataset while writing (holds a few chunks of any shape).
CACHE_BYTES = 16 * 2**20


def read_record_json(path: Path) -> str:
    with h5py.File(path, "r") as handle:
        return handle[RECORD][()].decode()


def temporary_shard(shards: Path) -> Path:
    """A fresh temporary name in the shards folder (writers remove stale ones on open)."""
    return shards / f".{uuid.uuid4().hex}.tmp"


def write_shard(tmp: Path, counts: dict[Shape, int],
                blocks: Callable[[Shape], Iterable[np.ndarray]],
                record_json: str, checksums: bool = True) -> dict[str, str]:
    """Write one model's filters into a temporary shard file; returns their checksums.

    Parameters
    ----------
    tmp : Path
        From :func:`temporary_shard`; :func:`seal_shard` names it when complete.
    counts : dict
        Number of filters per stored kernel shape (zero allowed).
    blocks : callable
        ``blocks(shape)`` yields that shape's filters as (n, kh, kw) arrays in order.
    record_json : str
        The model's table rows, kept so a shard can be committed without re-reading.
    checksums : bool, default True
        Hash the data on the way; a caller that hashes it elsewhere (in a thread, see
        :func:`block_checksums`) passes False and gets ``{}``.

    Returns
    -------
    dict
        Shape label -> sha256 of the float32 filter data written (see
        :func:`filter_checksums`), hashed on the way so the data is read only once.
    """
    digests = {}
    try:
        with h5py.File(tmp, "w", rdcc_nbytes=CACHE_BYTES) as handle:
            handle.create_dataset(RECORD, data=record_json, track_times=False)
            for shape, count in counts.items():
                chunks = (min(count, CHUNK_ROWS), *shape) if count else None
                dataset = handle.create_dataset(filters_dataset(shape), shape=(count, *shape),
                                                dtype=np.float32, chunks=chunks,
                                                track_times=False)
                position = 0
                digest = hashlib.sha256()
                for block in blocks(shape):
                    block = np.ascontiguousarray(block, dtype=np.float32)
                    if checksums:
                        digest.update(block)  # the buffer itself: no copy
                    dataset[position:position + len(block)] = block
                    position += len(block)
                if checksums:
                    digests[shape_label(shape)] = digest.hexdigest()
                if position != count:
                    raise RuntimeError(f"shard {tmp.name}: wrote {position} of {count} "
                                       f"{shape} filters")
        _start_writeback(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digests


def block_checksums(shapes, blocks: Callable[[Shape], Iterable[np.ndarray]]) -> dict[str, str]:
    """What :func:`write_shard` returns, from the same blocks without writing them."""
    digests = {}
    for shape in shapes:
        digest = hashlib.sha256()
        for block in blocks(shape):
            digest.update(np.ascontiguousarray(block, dtype=np.float32))
        digests[shape_label(shape)] = digest.hexdigest()
    return digests


def filter_checksums(path: Path, shapes, rows: int = 1 << 20) -> dict[str, str]:
    """Shape label -> sha256 of a shard's float32 filter rows in order (C order bytes).

    Examples
    --------
    >>> filter_checksums(Path("db.h5.shards/ab12-3x3.h5"), [(3, 3)])  # doctest: +SKIP
    {'3x3': 'e3b0c4...'}
    """
    digests = {}
    with h5py.File(path, "r") as handle:
        for shape in shapes:
            dataset = handle[filters_dataset(shape)]
            digest = hashlib.sha256()
            for at in range(0, len(dataset), rows):
                digest.update(np.ascontiguousarray(dataset[at:at + rows], dtype=np.float32))
            digests[shape_label(shape)] = digest.hexdigest()
    return digests


def _start_writeback(path: Path) -> None:
    """Start writing the file back to disk now, without waiting (Linux
    ``sync_file_range``), so the fsync before the commit finds little left to do.

    Not ``posix_fadvise(DONTNEED)``: that also drops the pages, and on Linux writes
    them back synchronously (measured: twice the system time of the whole build).
    """
    if _SYNC_FILE_RANGE is None:
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        _SYNC_FILE_RANGE(descriptor, 0, 0, _SYNC_FILE_RANGE_WRITE)   # a hint: errors ignored
    finally:
        os.close(descriptor)


def _sync_file_range():
    """libc's sync_file_range where there is one (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def seal_shard(tmp: Path, path: Path) -> None:
    """Rename a complete shard into place (its name carries the model's content hash).

    The writer fsyncs shards before the commit that references them, so the
    kernel can write them back in the background meanwhile.
    """
    os.replace(tmp, path)
