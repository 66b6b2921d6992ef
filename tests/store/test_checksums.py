"""Shard checksums: BLAKE3 over each layer's BLAKE3 digest, whatever the blocks the
filters arrive in, equal between the writer, the build's weight hashing and a
re-read of the shard."""

from __future__ import annotations

import json

import numpy as np
import pytest
from blake3 import blake3

from filterdb.records import ConvLayer
from filterdb.store.shard import filter_checksums, temporary_shard, write_shard
from filterdb.worker import weight_digests


def expected(layers: list[np.ndarray]) -> str:
    """Written out again: BLAKE3 of the concatenated per-layer BLAKE3 digests."""
    digests = b"".join(blake3(w.astype(np.float32).tobytes()).digest()
                       for w in layers if w.size)
    return blake3(digests).hexdigest()


def record(layers: list[np.ndarray]) -> str:
    rows, start = [], 0
    for weight in layers:
        n = weight.shape[0] * weight.shape[1]
        rows.append({"kh": 3, "kw": 3, "local_start": start, "n_filters": n})
        start += n
    return json.dumps({"layers": rows})


@pytest.mark.parametrize("block_rows", [1, 7, 50, 10_000])
def test_blocks_across_layer_boundaries_give_the_layer_checksum(tmp_path, block_rows):
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal(shape).astype(np.float32)
              for shape in [(4, 3, 3, 3), (0, 3, 3, 3), (5, 4, 3, 3), (2, 1, 3, 3)]]
    rows = np.concatenate([w.reshape(-1, 3, 3) for w in layers])
    blocks = [rows[at:at + block_rows] for at in range(0, len(rows), block_rows)]
    tmp = temporary_shard(tmp_path)
    digests = write_shard(tmp, {(3, 3): len(rows)}, lambda shape: iter(blocks), record(layers))
    assert digests == {"3x3": expected(layers)}
    assert filter_checksums(tmp, [(3, 3)]) == digests
    # a different split of the same rows into layers gives a different checksum
    assert expected([rows[:10].reshape(10, 1, 3, 3), rows[10:].reshape(-1, 1, 3, 3)]) \
        != digests["3x3"]


def test_the_builds_weight_hashing_gives_the_shards_checksum(tmp_path):
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(shape).astype(np.float32)
               for shape in [(8, 4, 3, 3), (6, 8, 1, 1), (3, 6, 3, 3)]]
    layers = [ConvLayer(name=f"conv{i}", op_type="Conv", weight=w, c_out=w.shape[0],
                        c_in_per_group=w.shape[1]) for i, w in enumerate(weights)]
    model_hash, layer_hashes, filters, non_finite = weight_digests(layers, [(3, 3)])
    assert non_finite == [{"nan_count": 0, "inf_count": 0}] * 3
    three = [w for w in weights if w.shape[2:] == (3, 3)]
    assert filters == {"3x3": expected(three)}
    rows = np.concatenate([w.reshape(-1, 3, 3) for w in three])
    tmp = temporary_shard(tmp_path)
    write_shard(tmp, {(3, 3): len(rows)}, lambda shape: iter([rows]), record(three),
                checksums=False)
    assert filter_checksums(tmp, [(3, 3)]) == filters
    assert layer_hashes[1] == blake3(
        b"[6, 8, 1, 1]" + blake3(weights[1].tobytes()).digest()).hexdigest()
    assert model_hash == blake3("".join(sorted(layer_hashes)).encode()).hexdigest()


def test_a_shape_without_filters_has_the_checksum_of_no_layers(tmp_path):
    tmp = temporary_shard(tmp_path)
    digests = write_shard(tmp, {(3, 3): 0}, lambda shape: iter(()), json.dumps({"layers": []}))
    assert digests == {"3x3": blake3(b"").hexdigest()}
    assert filter_checksums(tmp, [(3, 3)]) == digests


def test_weight_hashing_counts_nan_and_inf_in_any_piece(monkeypatch):
    """Non-finite values are counted per layer, wherever they fall among the pieces
    the weights are hashed in, and the hash is that of the whole layer."""
    import filterdb.worker as worker

    monkeypatch.setattr(worker, "HASH_PIECE", 10)
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal((4, 3, 3, 3)).astype(np.float32) for _ in range(3)]
    weights[1].reshape(-1)[[0, 57, 107]] = [np.nan, np.inf, -np.inf]  # first, middle, last
    weights[2].reshape(-1)[95] = np.nan
    layers = [ConvLayer(name=f"conv{i}", op_type="Conv", weight=w, c_out=4, c_in_per_group=3)
              for i, w in enumerate(weights)]
    _, layer_hashes, filters, non_finite = weight_digests(layers, [(3, 3)])
    assert non_finite == [{"nan_count": 0, "inf_count": 0}, {"nan_count": 1, "inf_count": 2},
                          {"nan_count": 1, "inf_count": 0}]
    assert layer_hashes[1] == blake3(
        b"[4, 3, 3, 3]" + blake3(weights[1].tobytes()).digest()).hexdigest()
    assert filters == {"3x3": expected(weights)}
