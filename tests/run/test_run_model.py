"""``filterdb.readers.run_model``: one bounded run per model, whatever its format."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from filterdb.cli import running as cli_running
from filterdb.errors import MissingDependencyError
from filterdb.readers import RunLimits, run_model
from filterdb.readers import onnx as onnx_reader
from filterdb.readers.running import fill_dims, parse_input_shapes, require_runtime
from filterdb.records import RunResult
from filterdb.runs import NOT_VERIFIED, run_columns, summarize_runs

from . import models

REPO = Path(__file__).resolve().parents[2]


def test_working_onnx_model_runs(tmp_path):
    result = run_model(models.onnx_model(tmp_path / "ok.onnx"))
    assert (result.runs, result.reason) == ("yes", "")
    assert result.input_shapes == [(1, 3, 16, 16)]
    assert result.output_shapes == [(1, 4)]
    assert result.finite is True
    assert result.seconds >= 0


def test_unknown_operator_does_not_run(tmp_path):
    path = models.onnx_model(tmp_path / "custom.onnx", custom_op=True)
    result = run_model(path)
    assert result.runs == "no"
    assert result.reason.startswith("loading the model failed (Fail: [ONNXRuntimeError]")
    assert "com.example.custom:Mystery(-1) is not a registered function/op" in result.reason
    assert (result.output_shapes, result.finite, result.seconds) == ([], None, None)


def test_weight_not_matching_its_graph_does_not_run(tmp_path):
    result = run_model(models.onnx_model(tmp_path / "mismatch.onnx", weight_in=5))
    assert result.runs == "no"
    assert result.reason.startswith("the forward pass failed (Fail: [ONNXRuntimeError]")
    assert "C: 3 kernel channels: 5 group: 1" in result.reason


def test_symbolic_dimensions_get_defaults_and_overrides(tmp_path):
    path = models.onnx_model(tmp_path / "sym.onnx", in_channels=1,
                             input_dims=("N", "C", "H", "W"))
    default = run_model(path)  # channels from the first conv, spatial 224, batch 1
    assert (default.runs, default.input_shapes, default.output_shapes) == (
        "yes", [(1, 1, 224, 224)], [(1, 4)])
    given = run_model(path, [(2, 1, 8, 8)])
    assert (given.runs, given.input_shapes, given.output_shapes) == (
        "yes", [(2, 1, 8, 8)], [(2, 4)])
    too_many = run_model(path, [(2, 1, 8, 8), (1,)])
    assert (too_many.runs, too_many.reason) == ("not run",
                                                "2 input shape(s) given for 1 graph input(s)")


def _shared_dimension_model(path: Path) -> Path:
    """DeepFilterNet's decoder inputs: ``emb`` [1, S, 8] and ``e3`` [1, 4, S, 2] share S."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["e3"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("Add", ["emb", "r"], ["y"])]
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, "S", 8]),
                          helper.make_tensor_value_info("e3", TensorProto.FLOAT,
                                                        [1, 4, "S", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", 8])],
        [helper.make_tensor("shape", TensorProto.INT64, [3], [1, -1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_dimension_name_shared_by_inputs_gets_one_value(tmp_path):
    result = run_model(_shared_dimension_model(tmp_path / "shared.onnx"))
    assert (result.runs, result.input_shapes, result.output_shapes) == (
        "yes", [(1, 224, 8), (1, 4, 224, 2)], [(1, 224, 8)])


def test_a_failed_forward_pass_records_the_inputs_it_was_given(tmp_path):
    result = run_model(_shared_dimension_model(tmp_path / "shared.onnx"),
                       [(1, 3, 8), (1, 4, 5, 2)])
    assert result.runs == "no"
    assert result.reason.startswith("the forward pass failed")
    assert result.input_shapes == [(1, 3, 8), (1, 4, 5, 2)]


def test_nan_weights_run_with_non_finite_outputs(tmp_path):
    result = run_model(models.onnx_model(tmp_path / "nan.onnx", nan=True))
    assert (result.runs, result.output_shapes, result.finite) == ("yes", [(1, 4)], False)


def test_torchscript_runs_with_channels_of_its_first_conv(tmp_path):
    pytest.importorskip("torch")
    result = run_model(models.torchscript_model(tmp_path / "net.pt", in_channels=2))
    assert (result.runs, result.input_shapes, result.output_shapes, result.finite) == (
        "yes", [(1, 2, 224, 224)], [(1, models.CLASSES)], True)


def _scripted(torch, module, path: Path) -> Path:
    """``module`` saved as TorchScript (torch deprecates scripting: not a test's warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


def test_torchscript_failure_reason_is_the_error_not_its_traceback(tmp_path):
    """A scripted forward that fails at the default input: TorchScript's message starts
    with the scripted code's traceback; the reason gives the error at its end."""
    torch = pytest.importorskip("torch")

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).reshape(1, 2 * 6 * 6)  # only for 8 x 8 inputs

    result = run_model(_scripted(torch, Fixed(), tmp_path / "fixed.pt"))
    assert result.runs == "no"
    assert result.reason.startswith("the forward pass failed (RuntimeError: shape '[1, 72]' "
                                    "is invalid for input of size"), result.reason
    assert "Traceback" not in result.reason and "def forward" not in result.reason


def test_torchscript_with_a_space_to_depth_stem_runs_on_an_rgb_image(tmp_path):
    """TResNet's stem rearranges 3 channels into 48 before its first conv: the first
    conv's channels do not run, 3 do."""
    torch = pytest.importorskip("torch")

    class SpaceToDepth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(48, 8, 3)

        def forward(self, x):
            return self.conv(torch.nn.functional.pixel_unshuffle(x, 4))

    result = run_model(_scripted(torch, SpaceToDepth(), tmp_path / "s2d.pt"))
    assert (result.runs, result.input_shapes, result.output_shapes) == (
        "yes", [(1, 3, 224, 224)], [(1, 8, 54, 54)])


def test_state_dict_and_safetensors_are_not_run(tmp_path):
    pytest.importorskip("torch")
    from safetensors.numpy import save_file

    state = run_model(models.state_dict_model(tmp_path / "sd.pt"))
    assert (state.runs, state.reason) == (
        "not run", "a PyTorch state dict or checkpoint holds weights only, no graph to run")
    weights = tmp_path / "w.safetensors"
    save_file({"conv.weight": np.ones((2, 3, 3, 3), np.float32)}, weights)
    assert run_model(weights) == RunResult(
        "not run", "a safetensors file holds weights only, no graph to run")


def test_tflite_runs(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tests.readers import writers_tflite
    from tests.readers.network import equivalence_network

    path = writers_tflite.write_network(tmp_path / "net.tflite", equivalence_network())
    result = run_model(path)
    assert (result.runs, result.input_shapes, result.output_shapes, result.finite) == (
        "yes", [(1, 16, 16, 3)], [(1, 16, 16, 6)], True)


def test_tflite_with_tensorflow_operators_is_not_run(tmp_path):
    """A SELECT_TF_OPS model holds TensorFlow (Flex) operators, whose kernels LiteRT
    lacks: the model is not run, which says nothing of the model."""
    pytest.importorskip("ai_edge_litert")
    from tflite import BuiltinOperator

    from tests.readers import writers_tflite

    m = writers_tflite.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    w = m.tensor("w", [4, 3, 3, 3], data=np.ones((4, 3, 3, 3), np.float32))
    bias = m.tensor("bias", [4], data=np.zeros(4, np.float32))
    c = m.tensor("c", [1, 8, 8, 4])
    y = m.tensor("y", [4, 4])
    m.op(BuiltinOperator.CONV_2D, [x, w, bias], [c])
    m.op(BuiltinOperator.CUSTOM, [c], [y], custom_code="FlexMatrixInverse")
    m.inputs, m.outputs = [x], [y]
    result = run_model(m.save(tmp_path / "flex.tflite"))
    assert result == RunResult("not run", "LiteRT has no kernels for its TensorFlow (Flex) "
                                          "operators")


def test_time_limit_kills_the_child(tmp_path):
    result = run_model(models.onnx_model(tmp_path / "ok.onnx"), limits=RunLimits(seconds=0.01))
    assert result == RunResult("no", "did not finish within 0.01 s (killed)")


def test_memory_limit(tmp_path):
    # A 16384 x 16384 input needs 2 GiB while it is drawn: over the limit, while the
    # runtime itself fits.
    path = models.onnx_model(tmp_path / "sym.onnx", in_channels=1,
                             input_dims=("N", "C", "H", "W"))
    result = run_model(path, [(1, 1, 16384, 16384)], RunLimits(memory_bytes=512 * 2**20))
    assert result == RunResult("no", "exceeded the memory limit of 512 MiB (MemoryError)")


def test_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    path = models.onnx_model(tmp_path / "ok.onnx")
    with pytest.raises(MissingDependencyError) as caught:
        require_runtime("no_such_runtime_package", path, "run")
    assert str(caught.value) == (
        f"{path}: running this model needs the package 'no_such_runtime_package', which "
        "is not installed (pip install 'filterdb[run]')")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"'onnxruntime'.*filterdb\[run\]"):
        onnx_reader.cannot_run(path)


@pytest.mark.parametrize(("dims", "channels", "expected"), [
    ((None, 3, None, None), None, (1, 3, 224, 224)),
    (("N", "C", "H", "W"), 1, (1, 1, 224, 224)),
    (("N", "C", "H", "W"), None, (1, 3, 224, 224)),
    ((-1, None, None, 3), None, (1, 224, 224, 3)),
    ((None, None, 32, 32), 2, (1, 2, 32, 32)),
    ((np.int32(1), np.int32(16), np.int32(16), np.int32(3)), None, (1, 16, 16, 3)),
    (("batch", 10), None, (1, 10)),
    (("batch", "seq", 8), None, (1, 1, 8)),
])
def test_fill_dims(dims, channels, expected):
    assert fill_dims(dims, channels) == expected


def test_parse_input_shapes():
    assert parse_input_shapes("1x3x224x224") == [(1, 3, 224, 224)]
    assert parse_input_shapes("1X3x8x8 ; 1x10") == [(1, 3, 8, 8), (1, 10)]
    with pytest.raises(ValueError, match="'1x3xa' is not like 1x3x224x224"):
        parse_input_shapes("1x3xa")
    with pytest.raises(ValueError, match="'1x0' has a dimension below 1"):
        parse_input_shapes("1x0")


def test_run_columns_and_summary():
    ran = run_columns(RunResult("yes", input_shapes=[(1, 3, 8, 8), (1, 2)],
                                output_shapes=[(1, 10)], finite=False, seconds=0.25))
    assert ran == {"runs": "yes", "run_reason": "", "run_input_shapes": "1x3x8x8;1x2",
                   "output_shapes": "1x10", "outputs_finite": "no", "forward_seconds": 0.25}
    unverified = run_columns(None)
    assert (unverified["runs"], unverified["run_reason"]) == ("not run", NOT_VERIFIED)
    assert math.isnan(unverified["forward_seconds"])
    summary = summarize_runs({"model": ["a", "b", "c", "d"],
                              "runs": ["yes", "no", "not run", ""],
                              "run_reason": ["", "crashed (SIGSEGV)", "no graph", ""],
                              "outputs_finite": ["no", "", "", ""]})
    assert summary.counts == {"yes": 1, "no": 1, "not run": 2}
    assert summary.failed == [("b", "crashed (SIGSEGV)")]
    assert summary.not_run == {"no graph": 1, NOT_VERIFIED: 1}
    assert (summary.verified, summary.non_finite) == (1, 1)
    old = summarize_runs({"model": ["a", "b"]})  # a database from before the run columns
    assert (old.counts, old.not_run) == ({"yes": 0, "no": 0, "not run": 2}, {NOT_VERIFIED: 2})


def test_cli_defaults_equal_run_limits():
    assert RunLimits().seconds == cli_running.DEFAULT_SECONDS
    assert RunLimits().memory_bytes == cli_running.DEFAULT_MEMORY_GIB * 2**30


def test_child_that_crashes_or_exits_without_result(tmp_path, monkeypatch):
    from filterdb.readers.running import run_in_child

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]))
    crashed = run_in_child("tests.run.crashing", tmp_path / "segfault", None, RunLimits())
    assert crashed == RunResult("no", "crashed (SIGSEGV; the memory limit was 4 GiB)")
    exited = run_in_child("tests.run.crashing", tmp_path / "exit", None, RunLimits())
    assert exited == RunResult(
        "no", "the run ended without a result (exit 3: something went badly wrong)")
