"""Exact duplicate filters and shared layers, counted in disk buckets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from filterdb.redundancy import row_hashes, scan_filters


class ArrayDB:
    """The table interface scan_filters uses, over an in-memory array."""

    def __init__(self, filters, layers):
        self.filters = filters
        self.models = pd.DataFrame({"model_id": [0, 1], "model": ["m0", "m1"]})
        starts = np.concatenate([[0], np.cumsum([n for _, _, n in layers])])
        self.layers = pd.DataFrame({
            "model_id": [m for m, _, _ in layers], "name": [n for _, n, _ in layers],
            "kh": 3, "kw": 3, "n_filters": [n for _, _, n in layers],
            "filter_id_start": starts[:-1], "filter_id_stop": starts[1:]})

    def filter_count(self, shape):
        return len(self.filters)

    def select(self, shape):
        return self

    def iter_chunks(self, rows):
        for at in range(0, len(self.filters), rows):
            yield self.filters[at:at + rows]


@pytest.mark.parametrize("bucket_bytes", [64, 1 << 28])
def test_duplicates_zeros_and_shared_layers(bucket_bytes, tmp_path):
    base = np.random.default_rng(0).standard_normal((500, 3, 3)).astype(np.float32)
    zeros = np.zeros((50, 3, 3), np.float32)
    zeros[:25] = -0.0  # equal values: -0.0 is 0.0
    filters = np.concatenate([base[:100], base[100:], base[:100], zeros])
    db = ArrayDB(filters, [(0, "a", 100), (0, "b", 400), (1, "c", 100), (1, "z", 50)])
    result = scan_filters(db, workdir=tmp_path, bucket_bytes=bucket_bytes, chunk_rows=64)
    assert result == {
        "shape": "3x3", "filters": 650, "duplicate_filters": 149, "duplicated_values": 101,
        "zero_filters": 50, "buckets": 128 if bucket_bytes == 64 else 1,
        "shared_layers": 2, "shared_layer_groups": 1,
        "shared_layer_examples": [["m0/a", "m1/c"]]}
    assert list(tmp_path.iterdir()) == []  # bucket files removed


def test_row_hash_tells_one_bit_apart():
    a = np.ones((2, 3, 3), np.float32)
    a[1].view(np.uint32)[0, 0] ^= 1
    h = row_hashes(a)
    assert h.dtype == np.uint64 and h[0] != h[1]
