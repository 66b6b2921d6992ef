"""Immutable shard files: one model's filters per kernel shape, written then renamed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from .layout import Shape, filters_dataset

#: Rows per HDF5 chunk: 32768 3x3 float32 filters are 1.2 MB, a good read unit.
CHUNK_ROWS = 32768
#: Dataset holding the model's rows as JSON (attributes are capped at 64 kB).
RECORD = "record"


def read_record_json(path: Path) -> str:
    with h5py.File(path, "r") as handle:
        return handle[RECORD][()].decode()


def write_shard(path: Path, counts: dict[Shape, int],
                blocks: Callable[[Shape], Iterable[np.ndarray]], attrs: dict,
                record_json: str = "{}") -> None:
    """Write a shard atomically: a temporary file renamed to ``path`` when complete.

    The writer fsyncs shards before the commit that references them, so the
    kernel can write them back in the background meanwhile.

    Parameters
    ----------
    path : Path
        Final shard path; it appears only once complete.
    counts : dict
        Number of filters per stored kernel shape (zero allowed).
    blocks : callable
        ``blocks(shape)`` yields that shape's filters as (n, kh, kw) arrays in order.
    attrs : dict
        Provenance written as attributes (model name, sha256, ...).
    record_json : str
        The model's table rows, kept so a shard can be committed without re-reading.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w", track_order=False) as handle:
            handle.attrs.update(attrs)
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
                    raise RuntimeError(f"shard {path.name}: wrote {position} of {count} "
                                       f"{shape} filters")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
