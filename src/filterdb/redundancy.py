"""Redundancy and completeness of a database, from its table interface only.

Counts identical models (same conv weights), layers shared between different
models, exact duplicate filters and empty meta fields. Duplicate filters are
counted in bounded memory: a 64-bit hash per filter row goes into one of
``2**bits`` bucket files on disk by its top bits, then each bucket is sorted and
counted on its own, so memory is one bucket (about ``bucket_bytes``), whatever
the number of filters (1.46e9 filters: 11.7 GB of hashes in 64 buckets of
~180 MB).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .store import layout

#: Target size of one bucket file of row hashes (the memory a bucket count needs ~3x).
BUCKET_BYTES = 256 * 2**20
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def row_hashes(filters: np.ndarray) -> np.ndarray:
    """64-bit hash of each filter (FNV-1a over its float32 words, then a splitmix64
    finaliser); -0.0 counts as 0.0, so equal values give equal hashes.

    Examples
    --------
    >>> f = np.zeros((3, 3, 3), np.float32); f[2, 0, 0] = 1
    >>> h = row_hashes(f); bool(h[0] == h[1]), bool(h[0] == h[2])
    (True, False)
    """
    words = (np.asarray(filters, dtype=np.float32).reshape(len(filters), -1) + np.float32(0)
             ).view(np.uint32).astype(np.uint64)
    h = np.full(len(words), _FNV_OFFSET, dtype=np.uint64)
    for column in words.T:
        h ^= column
        h *= _FNV_PRIME
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def empty_fields(db) -> dict[str, int]:
    """Index column -> number of models whose field is empty (every index column).

    Examples
    --------
    >>> empty_fields(db)["Paper"]      # doctest: +SKIP
    3
    """
    stored = getattr(db, "attrs", {}).get("index_columns", "[]")
    return empty_fields_of(db.models, json.loads(stored))


def empty_fields_of(models: pd.DataFrame, index_columns: list[str]) -> dict[str, int]:
    """:func:`empty_fields` from a models table and the index columns it was built with."""
    declared = list(layout.INDEX_COLUMNS) + list(index_columns)
    columns = [c for c in dict.fromkeys(declared) if c in models.columns]
    out = {}
    for column in columns:
        values = models[column]
        out[column] = int((values.isna() | (values.astype(str).str.strip() == "")).sum())
    return out


def identical_models(db) -> list[list[str]]:
    """Groups of models with the same conv weights (from the stored weights hash)."""
    models = db.models
    if "weights_blake3" not in models:
        return []
    known = models[models["weights_blake3"].astype(str) != ""]
    groups = known.groupby("weights_blake3", sort=False)["model"].apply(list)
    return sorted(g for g in groups if len(g) > 1)


def shared_layers_of(models: pd.DataFrame, layers: pd.DataFrame) -> dict:
    """Layers equal to a layer of another model, from the stored per-layer weight hashes
    (no filter is read); the keys of :func:`scan_filters`' ``shared_*`` entries.

    Examples
    --------
    >>> shared_layers_of(db.models, db.layers)["shared_layers"]     # doctest: +SKIP
    2
    """
    if "weights_blake3" not in layers:
        return {"shared_layers": 0, "shared_layer_groups": 0, "shared_layer_examples": []}
    known = layers[layers["weights_blake3"].astype(str) != ""]
    return _shared_layers(known, known["weights_blake3"].tolist(), models)


def scan_filters(db, shape=(3, 3), workdir=None, bucket_bytes: int = BUCKET_BYTES,
                 chunk_rows: int = 1 << 18) -> dict:
    """Exact duplicate filters, all-zero filters and layers shared between models.

    Parameters
    ----------
    db : FilterDB-like
        Needs ``layers`` (``filter_id_start``/``stop``, ``kh``, ``kw``, ``model_id``),
        ``filter_count(shape)`` and ``select(shape).iter_chunks(rows)``.
    shape : (kh, kw)
    workdir : path, optional
        Where the bucket files go (a temporary folder inside it); default the system's.
    bucket_bytes : int
        Target bucket size; memory is about three buckets.

    Returns
    -------
    dict
        ``filters``, ``duplicate_filters`` (rows equal to an earlier row),
        ``duplicated_values`` (distinct filters that occur more than once),
        ``zero_filters``, ``buckets``, ``shared_layers`` (layers equal to a layer of
        another model), ``shared_layer_groups`` and ``shared_layer_examples`` (up to
        five groups of ``model/layer`` names).

    Examples
    --------
    >>> scan_filters(db)["duplicate_filters"]     # doctest: +SKIP
    1024
    """
    total = int(db.filter_count(shape))
    bits = min(12, max(0, math.ceil(math.log2(max(1, total * 8 / bucket_bytes)))))
    layers = db.layers
    layers = layers[(layers["kh"] == shape[0]) & (layers["kw"] == shape[1])
                    & (layers["n_filters"] > 0)].sort_values("filter_id_start")
    stops = layers["filter_id_stop"].to_numpy()
    layer_digests: list[str] = []
    digest = hashlib.sha256()
    zero = 0
    with tempfile.TemporaryDirectory(prefix="filterdb-dups-", dir=workdir) as tmp:
        paths = [Path(tmp) / f"{b:04x}.u64" for b in range(1 << bits)]
        handles = [open(p, "ab") for p in paths]  # noqa: SIM115 - closed below
        try:
            position, current = 0, 0
            for chunk in db.select(shape).iter_chunks(chunk_rows):
                zero += int((chunk.reshape(len(chunk), -1) == 0).all(axis=1).sum())
                hashes = row_hashes(chunk)
                _to_buckets(hashes, bits, handles)
                offset = 0
                while offset < len(hashes):
                    take = min(len(hashes) - offset, int(stops[current]) - position)
                    digest.update(hashes[offset:offset + take].tobytes())
                    offset += take
                    position += take
                    if position == stops[current]:
                        layer_digests.append(digest.hexdigest())
                        digest = hashlib.sha256()
                        current += 1
        finally:
            for handle in handles:
                handle.close()
        duplicates = duplicated_values = 0
        for path in paths:
            values = np.fromfile(path, dtype=np.uint64)
            path.unlink()
            if len(values) < 2:
                continue
            values.sort()
            boundaries = np.flatnonzero(np.r_[True, values[1:] != values[:-1], True])
            counts = np.diff(boundaries)
            duplicates += int(len(values) - len(counts))
            duplicated_values += int((counts > 1).sum())
    shared = _shared_layers(layers.iloc[:len(layer_digests)], layer_digests, db.models)
    return {"shape": layout.shape_label(shape), "filters": total,
            "duplicate_filters": duplicates, "duplicated_values": duplicated_values,
            "zero_filters": zero, "buckets": 1 << bits, **shared}


def _to_buckets(hashes: np.ndarray, bits: int, handles) -> None:
    if bits == 0:
        handles[0].write(hashes.tobytes())
        return
    bucket = (hashes >> np.uint64(64 - bits)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    ordered, bucket = hashes[order], bucket[order]
    edges = np.searchsorted(bucket, np.arange((1 << bits) + 1))
    for number in np.flatnonzero(np.diff(edges)):
        handles[number].write(ordered[edges[number]:edges[number + 1]].tobytes())


def _shared_layers(layers: pd.DataFrame, digests: list[str], models: pd.DataFrame) -> dict:
    """Layers whose filters equal those of a layer in another model."""
    if not digests:
        return {"shared_layers": 0, "shared_layer_groups": 0, "shared_layer_examples": []}
    names = models.set_index("model_id")["model"]
    table = pd.DataFrame({"digest": digests, "model_id": layers["model_id"].to_numpy(),
                          "name": layers["name"].to_numpy() if "name" in layers
                          else layers["filter_id_start"].astype(str).to_numpy()})
    spread = table.groupby("digest")["model_id"].nunique()
    shared = table[table["digest"].isin(spread[spread > 1].index)]
    examples = [sorted(f"{names[m]}/{n}" for m, n in zip(g["model_id"], g["name"],
                                                          strict=True))
                for _, g in shared.groupby("digest", sort=True)]
    return {"shared_layers": len(shared), "shared_layer_groups": int((spread > 1).sum()),
            "shared_layer_examples": sorted(examples)[:5]}
