"""Immutable shard files: one model's filters per kernel shape, written then renamed."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np
from blake3 import blake3

from .layout import Shape, filters_dataset, shape_label

#: Dataset holding the model's rows as JSON (attributes are capped at 64 kB).
RECORD = "record"


def read_record_json(path: Path) -> str:
    with h5py.File(path, "r") as handle:
        return handle[RECORD][()].decode()


def temporary_shard(shards: Path) -> Path:
    """A fresh temporary name in the shards folder (writers remove stale ones on open)."""
    return shards / f".{uuid.uuid4().hex}.tmp"


def write_shard(tmp: Path, counts: dict[Shape, int],
                blocks: Callable[[Shape], Iterable[np.ndarray]],
                record_json: str, checksums: bool = True,
                durable: bool = False) -> dict[str, str]:
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
        The model's table rows (its ``layers`` give the layer boundaries of the
        checksums), kept so a shard can be committed without re-reading.
    checksums : bool, default True
        Hash the data on the way; a caller that hashes it elsewhere (the build's
        workers hash the weights once, see :func:`combine_digests`) passes False and
        gets ``{}``.
    durable : bool, default False
        Start writing the file back to disk as soon as it is complete, for a writer
        that will fsync it before its commit (``DatabaseWriter(durable=True)``).

    Returns
    -------
    dict
        Shape label -> checksum of the float32 filter data written (see
        :func:`filter_checksums`), hashed on the way so the data is read only once.
    """
    digests = {}
    layers = json.loads(record_json).get("layers", []) if checksums else []
    try:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset(RECORD, data=record_json, track_times=False)
            for shape, count in counts.items():
                # Contiguous: each block goes straight to the file, not through a chunk
                # cache (a copy of every byte, and the write held back to the close);
                # a shard is written once, in order, and read by row ranges.
                dataset = handle.create_dataset(filters_dataset(shape), shape=(count, *shape),
                                                dtype=np.float32, track_times=False)
                position = 0
                digest = LayerChecksum(layer_rows(layers, shape, count))
                for block in blocks(shape):
                    block = np.ascontiguousarray(block, dtype=np.float32)
                    if checksums:
                        digest.update(block)
                    dataset[position:position + len(block)] = block
                    position += len(block)
                if checksums:
                    digests[shape_label(shape)] = digest.hexdigest()
                if position != count:
                    raise RuntimeError(f"shard {tmp.name}: wrote {position} of {count} "
                                       f"{shape} filters")
        if durable:
            _start_writeback(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digests


def combine_digests(layer_digests: Iterable[bytes]) -> str:
    """A shape's filter checksum: BLAKE3 of its layers' BLAKE3 digests, in order.

    Hashing each layer on its own lets the build hash every conv weight once, for
    both the layer hashes and the stored filters' checksums; BLAKE3 hashes four times
    as fast as sha256 here (the file hash stays sha256, as published).
    """
    return blake3(b"".join(layer_digests)).hexdigest()


def layer_rows(layers: list[dict], shape: Shape, count: int) -> list[int]:
    """Filters per layer of ``shape`` in storage order, from a shard record's layer rows;
    one segment of ``count`` when the record does not account for every row."""
    rows = [(row["local_start"], row["n_filters"]) for row in layers
            if (row["kh"], row["kw"]) == tuple(shape) and row.get("local_start", -1) >= 0]
    sizes = [n for _, n in sorted(rows)]
    return sizes if sum(sizes) == count else [count]


class LayerChecksum:
    """:func:`combine_digests` fed with blocks that need not follow layer boundaries."""

    def __init__(self, rows: list[int]):
        self.remaining = [n for n in rows if n] or [0]   # empty layers have no digest
        self.empty = not any(rows)
        self.digests: list[bytes] = []
        self.current = blake3()

    def update(self, block: np.ndarray) -> None:
        while len(block):
            take = min(self.remaining[0], len(block)) if len(self.remaining) > 1 else len(block)
            self.current.update(block[:take].reshape(-1).view(np.uint8))  # blake3 takes bytes
            block = block[take:]
            self.remaining[0] -= take
            if self.remaining[0] <= 0 and len(self.remaining) > 1:
                self.digests.append(self.current.digest())
                self.current = blake3()
                self.remaining.pop(0)

    def hexdigest(self) -> str:
        return combine_digests([] if self.empty else [*self.digests, self.current.digest()])


def filter_checksums(path: Path, shapes, rows: int = 1 << 20) -> dict[str, str]:
    """Shape label -> checksum of a shard's float32 filter rows (:func:`combine_digests`
    over the layers its record lists).

    Examples
    --------
    >>> filter_checksums(Path("db.h5.shards/ab12-3x3.h5"), [(3, 3)])  # doctest: +SKIP
    {'3x3': 'e3b0c4...'}
    """
    digests = {}
    with h5py.File(path, "r") as handle:
        layers = json.loads(handle[RECORD][()].decode()).get("layers", [])
        for shape in shapes:
            dataset = handle[filters_dataset(shape)]
            digest = LayerChecksum(layer_rows(layers, shape, len(dataset)))
            for at in range(0, len(dataset), rows):
                digest.update(np.ascontiguousarray(dataset[at:at + rows], dtype=np.float32))
            digests[shape_label(shape)] = digest.hexdigest()
    return digests


def _start_writeback(path: Path) -> None:
    """Start writing the file back to disk (Linux ``sync_file_range``) in a background
    thread, so the fsync before the commit finds little left to do.

    In the background because submitting the pages blocks while the disk's queue is
    full, and the worker has the next model to read meanwhile. Not
    ``posix_fadvise(DONTNEED)``: that also drops the pages, and on Linux writes them
    back synchronously (measured: twice the system time of the whole build).
    """
    if _SYNC_FILE_RANGE is None:
        return
    descriptor = os.open(path, os.O_RDONLY)   # open now: the file is renamed next
    _WRITEBACK_SLOTS.acquire()   # bounds the descriptors held open by pending hints
    try:
        _writeback_thread().submit(_write_back, descriptor)
    except RuntimeError:   # interpreter shutting down: skip the hint
        os.close(descriptor)
        _WRITEBACK_SLOTS.release()


def _write_back(descriptor: int) -> None:
    try:
        _SYNC_FILE_RANGE(descriptor, 0, 0, _SYNC_FILE_RANGE_WRITE)   # a hint: errors ignored
    finally:
        os.close(descriptor)
        _WRITEBACK_SLOTS.release()


_WRITEBACK_SLOTS = threading.BoundedSemaphore(16)


@lru_cache(maxsize=1)
def _writeback_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="filterdb-writeback")


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

    A durable writer fsyncs shards before the commit that references them; the
    write-back :func:`write_shard` started meanwhile leaves little for it to do.
    """
    os.replace(tmp, path)
