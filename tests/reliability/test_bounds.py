"""Resource bounds: files and tensors over the configured limits are refused before
they are read, and the Gram matrix of a wide layer is computed in blocks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from filterdb import layer_quality
from filterdb.build import BuildOptions, build
from filterdb.errors import ModelReadError
from filterdb.readers import Limits, open_model

from . import hostile

# A layer with many output channels and short rows: its full Gram matrix (float32)
# would be 8192**2 * 4 bytes = 256 MiB, its weight only 4.5 MiB.
WIDE = (8192, 16, 3, 3)
GRAM_BYTES = WIDE[0] ** 2 * 4
#: Extra memory the metrics of WIDE may take: a few copies of the weight and one
#: block of the Gram matrix (256 rows: 8 MiB), an eighth of the full matrix.
WIDE_BUDGET = 32 * 2**20


@pytest.mark.parametrize("fmt", list(hostile.SAMPLES))
def test_tensor_over_the_element_limit_is_refused(fmt, tmp_path):
    path = hostile.SAMPLES[fmt](tmp_path)
    assert open_model(path).layers  # within the default limits it reads
    with pytest.raises(ModelReadError, match=r"limit|beyond|exceeds"):
        open_model(path, Limits(max_tensor_elements=8))


@pytest.mark.parametrize("fmt", list(hostile.SAMPLES))
def test_file_over_the_size_limit_is_refused_unread(fmt, tmp_path):
    path = hostile.SAMPLES[fmt](tmp_path)
    size = path.stat().st_size
    with pytest.raises(ModelReadError, match=f"file of {size} bytes exceeds the limit"):
        open_model(path, Limits(max_file_bytes=size - 1))


def test_build_refuses_an_oversized_model_and_keeps_the_others(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    small = hostile.good_onnx(zoo, "small.onnx", seed=1)
    big = hostile.safetensors_sample(zoo)
    assert big.stat().st_size > small.stat().st_size
    limits = Limits(max_file_bytes=small.stat().st_size)
    report = build(zoo, tmp_path / "db.h5", options=BuildOptions(limits=limits))
    status = {outcome.model: (outcome.status, outcome.reason) for outcome in report.outcomes}
    assert status["small"][0] == "added"
    assert status["sample"][0] == "failed" and "exceeds the limit" in status["sample"][1]


def _peak_extra_bytes(function, *args) -> int:
    """Peak memory numpy and Python allocate while ``function(*args)`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gram_matrix_of_a_wide_layer_is_computed_in_blocks():
    weight = np.random.default_rng(0).standard_normal(WIDE, dtype=np.float32)
    peak = _peak_extra_bytes(layer_quality.orthogonality, weight)
    assert peak < WIDE_BUDGET <= GRAM_BYTES / 8
    # The blocked result is the full formula's.
    rows = weight.reshape(WIDE[0], -1).astype(np.float64)[:1024]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    gram = rows @ rows.T
    expected = 1 - np.abs(gram - np.eye(len(rows))).sum() / (len(rows) * (len(rows) - 1))
    assert layer_quality.orthogonality(weight[:1024]) == pytest.approx(expected, abs=1e-6)


def test_all_metrics_of_a_wide_layer_stay_within_a_bounded_memory():
    weight = np.random.default_rng(1).standard_normal(WIDE, dtype=np.float32)
    peak = _peak_extra_bytes(layer_quality.layer_metrics, [weight])
    assert peak < WIDE_BUDGET
