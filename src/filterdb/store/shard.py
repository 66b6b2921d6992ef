"""Immutable shard files: one model's filters per kernel shape, written then renamed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from .layout import Shape, filters_dataset

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
                blocks: Callable[[Shape], Iterable[np.ndarray]], record_json: str) -> None:
    """Write one model's filters into a temporary shard file.

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
    """
    try:
        with h5py.File(tmp, "w", rdcc_nbytes=CACHE_BYTES) as handle:
            handle.create_dataset(RECORD, data=record_json, track_times=False)
            for shape, count in counts.items():
                chunks = (min(count, CHUNK_ROWS), *shape) if count else None
                dataset = handle.create_dataset(filters_dataset(shape), shape=(count, *shape),
                                                dtype=np.float32, chunks=chunks,
                                                track_times=False)
                position = 0
                for block in blocks(shape):
                    dataset[position:position + len(block)] = block
                    position += len(block)
                if position != count:
                    raise RuntimeError(f"shard {tmp.name}: wrote {position} of {count} "
                                       f"{shape} filters")
        _start_writeback(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _start_writeback(path: Path) -> None:
    """Ask the kernel to start writing the file back now (without waiting), so the
    fsync before the commit finds little left to do."""
    if hasattr(os, "posix_fadvise"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def seal_shard(tmp: Path, path: Path) -> None:
    """Rename a complete shard into place (its name carries the model's content hash).

    The writer fsyncs shards before the commit that references them, so the
    kernel can write them back in the background meanwhile.
    """
    os.replace(tmp, path)
