"""Property: mutated model bytes make a reader return a record or raise ModelReadError,
never anything else, and never hang. A short derandomised run per format; the long
run is ``scripts/fuzz_readers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import hostile
from .fuzzing import OPERATIONS, Mutation, mutate, read_mutant

EXAMPLES = 150

mutations = st.lists(
    st.builds(Mutation, st.sampled_from(OPERATIONS),
              st.one_of(st.floats(0, 1), st.floats(0, 0.02), st.floats(0.98, 1)),
              st.integers(0, 2**16)),
    min_size=1, max_size=4)


@pytest.fixture(scope="module")
def samples(tmp_path_factory, rapidocr_models) -> dict[str, tuple[bytes, str]]:
    """Format -> (valid file bytes, file name): a real rapidocr ONNX model and generated
    safetensors, TFLite and Keras files (Keras: where the long run found crashes)."""
    folder = tmp_path_factory.mktemp("fuzz_samples")
    onnx_file = rapidocr_models / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    made = {name: hostile.SAMPLES[name](folder) for name in ("safetensors", "tflite", "keras")}
    return {"onnx": (onnx_file.read_bytes(), onnx_file.name),
            **{name: (path.read_bytes(), path.name) for name, path in made.items()}}


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "tflite", "keras"])
def test_mutated_files_raise_only_model_read_error(samples, fmt, tmp_path_factory):
    data, name = samples[fmt]
    folder = tmp_path_factory.mktemp(f"fuzz_{fmt}")
    outcomes: set[str] = set()

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations)
    def check(edits):
        outcomes.add(read_mutant(mutate(data, edits), folder / name))

    check()
    # The run must have exercised both paths: some mutants read, some refused.
    assert "read" in outcomes and len(outcomes) > 1, outcomes


def test_mutate_applies_every_operation():
    data = bytes(range(100))
    for operation in OPERATIONS:
        assert mutate(data, [Mutation(operation, 0.5, 3)]) != data, operation
    assert mutate(data, [Mutation("truncate", 0.25, 0)]) == data[:25]


def test_read_mutant_reports_the_refusal(tmp_path: Path):
    assert read_mutant(b"\x89PNG", tmp_path / "x.onnx").startswith("not a valid ONNX")
