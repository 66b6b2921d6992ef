"""Tests of the ONNX reader through ``filterdb.readers.open_model``."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from filterdb.errors import ModelReadError
from filterdb.extraction import conv_depths, ordered_layers
from filterdb.readers import Limits, open_model

from . import onnx_builders as ob
from .refusals import one_line


def _layer(record, name):
    matches = [layer for layer in record.layers if layer.name == name]
    assert len(matches) == 1, [layer.name for layer in record.layers]
    return matches[0]


def _inferred_channels(path) -> int:
    """Output channels of the model's single output, by ONNX shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[1].dim_value


# 1 -------------------------------------------------------------------------

def test_plain_conv_initializer_and_attributes(tmp_path):
    weight = ob.random_weight((6, 3, 3, 3), seed=1)
    path = ob.single_conv(tmp_path / "plain.onnx", weight, strides=[2, 2], dilations=[2, 1])
    record = open_model(path)

    assert len(record.layers) == 1
    layer = record.layers[0]
    assert layer.name == "conv0"
    assert layer.op_type == "conv"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, weight)
    assert (layer.c_out, layer.c_in_per_group, layer.groups) == (6, 3, 1)
    assert layer.strides == (2, 2)
    assert layer.dilations == (2, 1)
    assert layer.source_dtype == "float32"  # the ConvLayer default spelling
    assert layer.kernel_shape == (3, 3)
    assert layer.n_filters == 18
    assert layer.depthwise is False
    assert layer.depth == 0
    assert layer.order == 0
    np.testing.assert_array_equal(layer.filters(), weight.reshape(18, 3, 3))
    assert record.name == "plain"
    assert record.path == os.fspath(path)
    assert record.framework == "onnx"


def test_defaults_when_attributes_absent(tmp_path):
    weight = ob.random_weight((2, 1, 5, 3), seed=2)
    record = open_model(ob.single_conv(tmp_path / "defaults.onnx", weight))
    layer = record.layers[0]
    assert layer.strides == (1, 1)
    assert layer.dilations == (1, 1)
    assert layer.groups == 1
    assert layer.kernel_shape == (5, 3)
    # one input channel, one group: a plain conv, not a depthwise one
    assert layer.depthwise is False
    np.testing.assert_array_equal(layer.filters(), weight.reshape(2, 5, 3))


# 2 -------------------------------------------------------------------------

def test_grouped_conv_is_not_depthwise(tmp_path):
    weight = ob.random_weight((6, 2, 3, 3), seed=3)
    path = ob.single_conv(tmp_path / "grouped.onnx", weight, group=2)
    layer = open_model(path).layers[0]
    assert (layer.c_out, layer.c_in_per_group, layer.groups) == (6, 2, 2)
    assert layer.c_out == _inferred_channels(path)
    assert layer.depthwise is False
    assert layer.n_filters == 12
    np.testing.assert_array_equal(layer.weight, weight)


def test_depthwise_conv(tmp_path):
    weight = ob.random_weight((5, 1, 3, 3), seed=4)
    path = ob.single_conv(tmp_path / "dw.onnx", weight, group=5)
    layer = open_model(path).layers[0]
    assert (layer.c_out, layer.c_in_per_group, layer.groups) == (5, 1, 5)
    assert layer.c_out == _inferred_channels(path)
    assert layer.depthwise is True
    assert layer.n_filters == 5
    np.testing.assert_array_equal(layer.filters(), weight.reshape(5, 3, 3))


# 3 -------------------------------------------------------------------------

@pytest.mark.parametrize(("group", "c_out", "c_in_per_group"), [(1, 3, 4), (2, 6, 2)])
def test_conv_transpose_layout(tmp_path, group, c_out, c_in_per_group):
    # ConvTranspose stores (C_in, C_out / group, kh, kw); non-square kernel on purpose
    weight = ob.random_weight((4, 3, 3, 2), seed=5 + group)
    path = ob.single_conv(tmp_path / "convt.onnx", weight, op_type="ConvTranspose",
                          group=group, strides=[2, 2])
    layer = open_model(path).layers[0]
    assert layer.op_type == "conv_transpose"
    assert layer.groups == group
    assert layer.c_out == c_out
    assert layer.c_in_per_group == c_in_per_group
    assert layer.c_out == _inferred_channels(path)
    assert layer.strides == (2, 2)
    assert layer.kernel_shape == (3, 2)
    assert layer.n_filters == 12
    np.testing.assert_array_equal(layer.weight, weight)
    np.testing.assert_array_equal(layer.filters(), weight.reshape(-1, 3, 2))


# 4 -------------------------------------------------------------------------

def test_weight_from_constant_node_without_initializers(tmp_path):
    path, weight, _bias = ob.constant_weight_conv(tmp_path / "paddle.onnx")
    assert not onnx.load(str(path)).graph.initializer
    record = open_model(path)
    assert len(record.layers) == 1
    layer = record.layers[0]
    np.testing.assert_array_equal(layer.weight, weight)
    assert layer.source_dtype == "float32"  # the ConvLayer default spelling
    assert (layer.c_out, layer.c_in_per_group) == (4, 3)
    assert layer.depth == 0
    # Constant nodes read no real input: they hold no depth level
    assert record.total_depth == 1
    assert record.operator_counts == {"Constant": 2, "Conv": 1}


# 5 -------------------------------------------------------------------------

def test_weight_through_cast_keeps_source_dtype(tmp_path):
    path, weight16 = ob.cast_weight_conv(tmp_path / "cast.onnx")
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "float16"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, weight16.astype(np.float32))
    assert layer.depth == 0


def test_weight_through_identity(tmp_path):
    path, weight = ob.identity_weight_conv(tmp_path / "identity.onnx")
    record = open_model(path)
    layer = record.layers[0]
    assert layer.source_dtype == "float32"  # the ConvLayer default spelling
    np.testing.assert_array_equal(layer.weight, weight)
    assert layer.order == 2
    assert record.operator_counts == {"Identity": 2, "Conv": 1}


# 6 -------------------------------------------------------------------------

def test_dequantize_linear_per_tensor(tmp_path):
    weight_q = ob.random_ints((4, 3, 3, 3), np.int8, seed=6)
    scale = np.float32(0.0375)
    zero_point = np.int8(-3)
    path = ob.dequantized_weight_conv(tmp_path / "dq.onnx", weight_q, scale, zero_point)
    layer = open_model(path).layers[0]

    expected = ((weight_q.astype(np.float64) - float(zero_point)) * float(scale)).astype(
        np.float32)
    assert layer.source_dtype == "int8"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, expected)


@pytest.mark.parametrize("axis", [0, -4])
def test_dequantize_linear_per_channel(tmp_path, axis):
    weight_q = ob.random_ints((4, 3, 3, 3), np.int8, seed=7)
    scale = ob.random_scales(4, seed=7)
    zero_point = np.array([-5, 0, 3, 7], dtype=np.int8)
    path = ob.dequantized_weight_conv(tmp_path / "dq_axis.onnx", weight_q, scale,
                                      zero_point, axis=axis)
    layer = open_model(path).layers[0]

    expected = np.empty(weight_q.shape, dtype=np.float32)
    for channel in range(4):
        expected[channel] = ((weight_q[channel].astype(np.float64) - int(zero_point[channel]))
                             * float(scale[channel]))
    assert layer.source_dtype == "int8"
    np.testing.assert_array_equal(layer.weight, expected)


def test_dequantize_linear_blocked(tmp_path):
    """opset-21 block quantization: one scale per block of 2 input channels."""
    weight_q = ob.random_ints((4, 4, 3, 3), np.int8, seed=17)
    scale = ob.random_scales(4 * 2 * 3 * 3, seed=17).reshape(4, 2, 3, 3)
    zero_point = ob.random_ints((4, 2, 3, 3), np.int8, seed=18) // 16
    path = ob.block_dequantized_weight_conv(tmp_path / "dq_block.onnx", weight_q, scale,
                                            zero_point, axis=1, block_size=2)
    layer = open_model(path).layers[0]

    expected = np.empty(weight_q.shape, dtype=np.float32)
    for o in range(4):
        for i in range(4):
            expected[o, i] = ((weight_q[o, i].astype(np.float64)
                               - zero_point[o, i // 2].astype(np.float64))
                              * scale[o, i // 2].astype(np.float64))
    assert layer.source_dtype == "int8"
    np.testing.assert_array_equal(layer.weight, expected)


def test_dequantize_linear_int4(tmp_path):
    """INT4 weights pack two values per byte: 108 values in 54 bytes."""
    values = np.random.default_rng(19).integers(-8, 8, size=(4, 3, 3, 3)).astype(np.int8)
    scale = np.float32(0.125)
    path = ob.int4_dequantized_weight_conv(tmp_path / "int4.onnx", values, scale)
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "int4"
    np.testing.assert_array_equal(layer.weight, values.astype(np.float32) * np.float32(0.125))


# 7 -------------------------------------------------------------------------

def test_conv_integer_subtracts_weight_zero_point(tmp_path):
    weight = ob.random_ints((4, 3, 3, 3), np.uint8, seed=8)
    zero_point = np.uint8(131)
    path = ob.conv_integer(tmp_path / "convint.onnx", weight, zero_point)
    layer = open_model(path).layers[0]

    expected = (weight.astype(np.int64) - 131).astype(np.float32)
    assert layer.op_type == "quantized_conv"
    assert layer.source_dtype == "uint8"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, expected)
    assert (layer.c_out, layer.c_in_per_group) == (4, 3)


def test_qlinear_conv_per_channel(tmp_path):
    weight = ob.random_ints((4, 3, 3, 3), np.int8, seed=9)
    w_scale = ob.random_scales(4, seed=9)
    w_zero_point = np.array([2, -1, 0, 4], dtype=np.int8)
    path = ob.qlinear_conv(tmp_path / "qconv.onnx", weight, w_scale, w_zero_point)
    layer = open_model(path).layers[0]

    expected = ((weight.astype(np.float64) - w_zero_point.astype(np.float64)[:, None, None, None])
                * w_scale.astype(np.float64)[:, None, None, None]).astype(np.float32)
    assert layer.op_type == "quantized_conv"
    assert layer.name == "qconv0"
    assert layer.source_dtype == "int8"
    np.testing.assert_array_equal(layer.weight, expected)


# 8 -------------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "elem_type", "name"), [
    (np.float16, TensorProto.FLOAT16, "float16"),
    (np.float64, TensorProto.DOUBLE, "float64"),
])
def test_float_initializer_dtypes(tmp_path, dtype, elem_type, name):
    weight = ob.random_weight((4, 3, 3, 3), seed=10, dtype=dtype)
    path = ob.typed_weight_conv(tmp_path / f"{name}.onnx", ob.tensor("W", weight),
                                elem_type, in_channels=3)
    layer = open_model(path).layers[0]
    assert layer.source_dtype == name
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, weight.astype(np.float32))


def test_bfloat16_initializer(tmp_path):
    values = ob.random_weight((4, 3, 3, 3), seed=11)
    proto, expected = ob.bfloat16_tensor("W", values)
    path = ob.typed_weight_conv(tmp_path / "bf16.onnx", proto, TensorProto.BFLOAT16,
                                in_channels=3, check=False)
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "bfloat16"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, expected)
    # bfloat16 keeps float32's exponent and 8 bits of mantissa
    np.testing.assert_allclose(layer.weight, values, rtol=2**-7)


# 9 -------------------------------------------------------------------------

def test_parallel_branches_share_conv_depth(tmp_path):
    path, weights = ob.parallel_branches(tmp_path / "branches.onnx")
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["conv_a", "conv_b", "conv_c"]
    assert [layer.depth for layer in record.layers] == [0, 0, 2]
    assert [layer.order for layer in record.layers] == [0, 1, 3]
    assert conv_depths(record.layers) == [(0, 0.0), (0, 0.0), (1, 1.0)]
    for layer in record.layers:
        np.testing.assert_array_equal(layer.weight, weights[layer.name])
    assert record.total_depth == 3
    assert record.operator_counts == {"Conv": 3, "Add": 1}


def test_unequal_branches_take_longest_path(tmp_path):
    record = open_model(ob.unequal_branches(tmp_path / "unequal.onnx"))
    assert [layer.name for layer in record.layers] == ["conv_a", "conv_b", "conv_c"]
    assert [layer.depth for layer in record.layers] == [1, 0, 3]
    assert conv_depths(record.layers) == [(1, 0.5), (0, 0.0), (2, 1.0)]
    assert [layer.name for layer in ordered_layers(record)] == ["conv_b", "conv_a", "conv_c"]
    assert record.total_depth == 4


def test_node_order_in_file_does_not_change_depths(tmp_path):
    """Nodes stored out of topological order still get longest-path depths."""
    path, _ = ob.parallel_branches(tmp_path / "sorted.onnx")
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    record = open_model(ob.save(model, tmp_path / "reversed.onnx"))
    assert [layer.name for layer in record.layers] == ["conv_c", "conv_b", "conv_a"]
    assert [layer.depth for layer in record.layers] == [2, 0, 0]
    assert [layer.order for layer in record.layers] == [0, 2, 3]
    assert [layer.name for layer in ordered_layers(record)] == ["conv_b", "conv_a", "conv_c"]
    assert record.total_depth == 3


# 10 ------------------------------------------------------------------------

def test_single_conv_depth_norm_is_zero(tmp_path):
    weight = ob.random_weight((4, 3, 3, 3), seed=12)
    record = open_model(ob.single_conv(tmp_path / "one.onnx", weight))
    assert conv_depths(record.layers) == [(0, 0.0)]
    assert record.total_depth == 1


# 11 ------------------------------------------------------------------------

def test_weight_computed_from_constants_is_evaluated(tmp_path):
    path = ob.computed_weight_conv(tmp_path / "computed.onnx")
    record = open_model(path)
    expected = ob.random_weight((4, 3, 3, 3), 0) * np.float32(0.5) + np.float32(0.5)
    np.testing.assert_array_equal(record.layers[0].weight, expected)


def test_transposed_constant_weight_is_evaluated(tmp_path):
    """tf2onnx-style: an HWIO initializer transposed to OIHW in the graph."""
    hwio = ob.random_weight((3, 3, 2, 5), 7)
    nodes = [helper.make_node("Transpose", ["W_hwio"], ["W"], name="to_oihw",
                              perm=[3, 2, 0, 1]),
             ob.conv("conv0", "x", "W", "y")]
    model = ob.make_model(nodes, [ob.image_input("x", 2)], [ob.output("y")],
                          [ob.tensor("W_hwio", hwio)])
    record = open_model(ob.save(model, tmp_path / "hwio.onnx"))
    np.testing.assert_array_equal(record.layers[0].weight, hwio.transpose(3, 2, 0, 1))
    assert record.layers[0].c_out == 5


def test_weight_computed_with_a_random_op_raises_naming_node(tmp_path):
    nodes = [helper.make_node("RandomNormal", [], ["noise"], name="noise", shape=[4, 3, 3, 3]),
             ob.conv("conv0", "x", "noise", "y")]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")])
    path = ob.save(model, tmp_path / "random.onnx")
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "'conv0'" in caught.value.reason
    assert "RandomNormal" in caught.value.reason


def test_constant_side_computation_not_counted_in_depth(tmp_path):
    record = open_model(ob.conv_with_constant_side_branch(tmp_path / "side.onnx"))
    assert record.total_depth == 2  # conv0 (0) and relu0 (1) only
    assert [layer.depth for layer in record.layers] == [0]
    assert record.operator_counts == {"Conv": 1, "Relu": 1, "Constant": 1, "Mul": 1,
                                      "Add": 1, "Neg": 1}


# 12 ------------------------------------------------------------------------

def test_external_data_is_read(tmp_path):
    path, weight = ob.with_external_weight(tmp_path / "ext.onnx")
    assert (tmp_path / "w.bin").is_file()
    assert not onnx.load(str(path), load_external_data=False).graph.initializer[0].raw_data
    layer = open_model(path).layers[0]
    np.testing.assert_array_equal(layer.weight, weight)
    assert layer.n_filters == 24


def test_external_data_missing(tmp_path):
    path, _ = ob.with_external_weight(tmp_path / "ext.onnx")
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert caught.value.path == os.fspath(path)
    assert "w.bin" in caught.value.reason


def test_external_data_truncated(tmp_path):
    path, weight = ob.with_external_weight(tmp_path / "ext.onnx")
    data = (tmp_path / "w.bin").read_bytes()
    (tmp_path / "w.bin").write_bytes(data[: weight.nbytes - 4])
    with pytest.raises(ModelReadError, match="truncated"):
        open_model(path)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_external_data_outside_folder(tmp_path, kind):
    folder = tmp_path / "models"
    folder.mkdir()
    path, weight = ob.with_external_weight(folder / "ext.onnx")
    # the escaping target exists and holds the right bytes: only its place is wrong
    evil = tmp_path / "evil.bin"
    shutil.copyfile(folder / "w.bin", evil)
    location = "../evil.bin" if kind == "relative" else os.fspath(evil)
    ob.relocate_external_data(path, location)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "outside" in caught.value.reason
    assert caught.value.path == os.fspath(path)


# 13 ------------------------------------------------------------------------

def test_weight_from_graph_input_raises_naming_node(tmp_path):
    path = ob.weight_from_graph_input(tmp_path / "input_weight.onnx")
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "'conv0'" in caught.value.reason
    assert "'W'" in caught.value.reason


def test_cycle_raises(tmp_path):
    path = ob.cyclic(tmp_path / "cycle.onnx")
    with pytest.raises(ModelReadError, match="cycle") as caught:
        open_model(path)
    assert caught.value.path == os.fspath(path)


def test_truncated_file_raises(tmp_path):
    weight = ob.random_weight((16, 8, 3, 3), seed=13)
    good = ob.single_conv(tmp_path / "good.onnx", weight)
    data = good.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelReadError) as caught:
        open_model(bad)
    assert caught.value.path == os.fspath(bad)


def test_text_file_named_onnx_raises(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\nsecond line of plain text\n" * 20)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert caught.value.path == os.fspath(path)


def test_raw_data_shorter_than_dims_raises(tmp_path):
    path = ob.short_raw_data(tmp_path / "short.onnx")
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "'W'" in caught.value.reason
    assert "216 bytes" in caught.value.reason


def test_missing_file_raises(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert caught.value.path == os.fspath(path)


def test_unknown_extension_raises(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ModelReadError, match="no reader"):
        open_model(path)


def test_onnx_content_found_under_other_extension(tmp_path):
    weight = ob.random_weight((4, 3, 3, 3), seed=14)
    path = ob.single_conv(tmp_path / "model.bin", weight)
    np.testing.assert_array_equal(open_model(path).layers[0].weight, weight)


def test_limits_are_enforced(tmp_path):
    weight = ob.random_weight((4, 3, 3, 3), seed=15)
    path = ob.single_conv(tmp_path / "limits.onnx", weight)
    with pytest.raises(ModelReadError, match="element limit"):
        open_model(path, Limits(max_tensor_elements=weight.size - 1))
    with pytest.raises(ModelReadError, match="exceeds the limit"):
        open_model(path, Limits(max_file_bytes=path.stat().st_size - 1))
    assert len(open_model(path, Limits(max_tensor_elements=weight.size)).layers) == 1


# 14 ------------------------------------------------------------------------

def test_conv1d_is_ignored(tmp_path):
    record = open_model(ob.conv1d(tmp_path / "conv1d.onnx"))
    assert record.layers == []
    assert record.operator_counts == {"Conv": 1}
    assert record.total_depth == 1


# 15 ------------------------------------------------------------------------

def test_operator_counts_total_depth_and_provenance(tmp_path):
    path, weights = ob.chain_conv_relu_conv(tmp_path / "chain.onnx")
    record = open_model(path)
    assert record.operator_counts == {"Conv": 2, "Relu": 1}
    assert record.total_depth == 3
    assert [layer.depth for layer in record.layers] == [0, 2]
    assert [layer.order for layer in record.layers] == [0, 2]
    assert conv_depths(record.layers) == [(0, 0.0), (1, 1.0)]
    for layer, weight in zip(record.layers, weights, strict=True):
        np.testing.assert_array_equal(layer.weight, weight)
    assert record.producer == f"{ob.PRODUCER_NAME} {ob.PRODUCER_VERSION}"
    assert record.opset == ob.OPSET


def test_opset_ignores_other_domains(tmp_path):
    weight = ob.random_weight((4, 3, 3, 3), seed=16)
    model = ob.make_model([ob.conv("conv0", "x", "W", "y")], [ob.image_input("x", 3)],
                          [ob.output("y")], [ob.tensor("W", weight)], opset=17)
    model.opset_import.insert(0, helper.make_opsetid("com.microsoft", 1))
    record = open_model(ob.save(model, tmp_path / "domains.onnx"))
    assert record.opset == 17


# local functions and other conv operators --------------------------------------------

def _block_function():
    """A local function ``local.Block(x, W) = Relu(Conv(x, W, 3x3)) -> Conv(., K)``, K a
    Constant of the body: what exports with modules as functions look like."""
    inner = ob.random_weight((4, 4, 3, 3), seed=41)
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             ob.constant("k", "K", inner),
             helper.make_node("Conv", ["r", "K"], ["y"], name="conv_b", pads=[1, 1, 1, 1])]
    function = helper.make_function("local", "Block", ["x", "W"], ["y"], nodes,
                                    [helper.make_opsetid("", ob.OPSET)])
    return function, inner


def test_convs_inside_local_functions_are_read_at_each_call(tmp_path):
    function, inner = _block_function()
    first, second = ob.random_weight((4, 3, 3, 3), seed=42), ob.random_weight((4, 4, 3, 3), 43)
    calls = [helper.make_node("Block", ["x", "W1"], ["h"], name="block1", domain="local"),
             helper.make_node("Block", ["h", "W2"], ["y"], name="block2", domain="local")]
    graph = helper.make_graph(calls, "g", [ob.image_input("x", 3)], [ob.output("y")],
                              initializer=[ob.tensor("W1", first), ob.tensor("W2", second)])
    model = helper.make_model(graph, functions=[function], opset_imports=[
        helper.make_opsetid("", ob.OPSET), helper.make_opsetid("local", 1)])
    onnx.checker.check_model(model)
    record = open_model(ob.save(model, tmp_path / "functions.onnx"))

    # the body's own Constant weight is one weight at both calls: one layer, at the
    # first call's depth (a module applied twice), as in the other formats
    assert len(record.layers) == 3
    for layer, weight in zip(record.layers, [first, inner, second], strict=True):
        np.testing.assert_array_equal(layer.weight, weight)
    assert [layer.depth for layer in record.layers] == [0, 2, 3]
    assert record.operator_counts == {"Conv": 4, "Relu": 2, "Constant": 2}


def test_a_weight_read_by_two_conv_nodes_is_one_layer_at_its_first_depth(tmp_path):
    """A shared conv (the same initializer, directly or through a DequantizeLinear each)
    is one layer, as in TorchScript, Keras and state dicts: a weight counts once."""
    shared, other = ob.random_weight((4, 4, 3, 3), seed=5), ob.random_weight((2, 4, 1, 1), 6)
    quantized = np.round(shared * 20).astype(np.int8)
    scale = np.array(0.05, dtype=np.float32)
    model = ob.make_model(
        [ob.conv("first", "x", "W", "a", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"], name="relu"),
         ob.conv("second", "b", "W", "c", pads=[1, 1, 1, 1]),
         helper.make_node("DequantizeLinear", ["Q", "s"], ["q1"], name="dq1"),
         helper.make_node("DequantizeLinear", ["Q", "s"], ["q2"], name="dq2"),
         ob.conv("third", "c", "q1", "d", pads=[1, 1, 1, 1]),
         ob.conv("fourth", "d", "q2", "e", pads=[1, 1, 1, 1]),
         ob.conv("head", "e", "V", "y")],
        [ob.image_input("x", 4)], [ob.output("y")],
        [ob.tensor("W", shared), ob.tensor("V", other), ob.tensor("Q", quantized),
         ob.tensor("s", scale)])
    record = open_model(ob.save(model, tmp_path / "shared.onnx"))
    assert [(layer.name, layer.depth) for layer in record.layers] == [
        ("first", 0), ("third", 3), ("head", 5)]
    np.testing.assert_array_equal(record.layers[0].weight, shared)
    np.testing.assert_array_equal(record.layers[1].weight, quantized * np.float32(0.05))
    assert record.operator_counts["Conv"] == 5


@pytest.mark.parametrize("fault", ["extra input", "recursion"])
def test_local_function_that_cannot_expand_is_one_line(tmp_path, fault):
    function, _ = _block_function()
    inputs = ["x", "W"]
    if fault == "extra input":
        inputs.append("W")
    else:
        function.node[0].op_type, function.node[0].domain = "Block", "local"
    call = helper.make_node("Block", inputs, ["y"], name="block", domain="local")
    graph = helper.make_graph([call], "g", [ob.image_input("x", 3)], [ob.output("y")],
                              initializer=[ob.tensor("W", ob.random_weight((4, 3, 3, 3)))])
    model = helper.make_model(graph, functions=[function], opset_imports=[
        helper.make_opsetid("", ob.OPSET), helper.make_opsetid("local", 1)])
    path = ob.save(model, tmp_path / "broken.onnx")
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    message = str(error.value)
    assert str(path) in message and "local functions" in message and "\n" not in message


def test_deform_conv_weight(tmp_path):
    weight = ob.random_weight((6, 2, 3, 3), seed=44)
    node = helper.make_node("DeformConv", ["x", "W", "offset"], ["y"], name="dcn", group=2,
                            strides=[2, 2], dilations=[1, 1])
    offset = helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 18, 4, 4])
    model = ob.make_model([node], [ob.image_input("x", 4), offset], [ob.output("y")],
                          [ob.tensor("W", weight)], check=False)
    onnx.checker.check_model(model)
    record = open_model(ob.save(model, tmp_path / "deform.onnx"))
    (layer,) = record.layers
    np.testing.assert_array_equal(layer.weight, weight)
    assert (layer.op_type, layer.c_out, layer.c_in_per_group, layer.groups) == ("conv", 6, 2, 2)
    assert layer.strides == (2, 2)


def test_convs_inside_if_branches_are_read_with_outer_and_local_weights(tmp_path):
    """Convs in an If node's branches: weights from the main graph, from the branch's
    own initializers and from a Constant inside it; named under their holder, their
    depth counted from it."""
    w_then, w_else = ob.random_weight((4, 3, 3, 3), seed=1), ob.random_weight((4, 3, 3, 3),
                                                                               seed=2)
    w_inner, w_after = ob.random_weight((4, 4, 3, 3), seed=3), ob.random_weight((2, 4, 1, 1),
                                                                                seed=4)
    then_branch = helper.make_graph(
        [ob.conv("then_conv", "r", "w_then", "t", pads=[1, 1, 1, 1])], "then", [],
        [ob.output("t")])
    else_branch = helper.make_graph(
        [ob.conv("else_conv", "r", "w_else", "e1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["e1"], ["e2"], name="else_relu"),
         ob.constant("inner_weight", "w_inner", w_inner),
         ob.conv("else_conv2", "e2", "w_inner", "e3", pads=[1, 1, 1, 1])],
        "else", [], [ob.output("e3")], initializer=[ob.tensor("w_else", w_else)])
    model = ob.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("If", ["cond"], ["branch"], name="choose",
                          then_branch=then_branch, else_branch=else_branch),
         ob.conv("after", "branch", "w_after", "y")],
        [ob.image_input("x", 3), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [ob.output("y")], [ob.tensor("w_then", w_then), ob.tensor("w_after", w_after)])
    record = open_model(ob.save(model, tmp_path / "if.onnx"))

    layers = {layer.name: layer for layer in record.layers}
    # graph order: a holder's subgraphs in the order of its attributes (as stored)
    assert list(layers) == ["choose/else_branch/else_conv", "choose/else_branch/else_conv2",
                            "choose/then_branch/then_conv", "after"]
    for name, weight in [("choose/then_branch/then_conv", w_then), ("after", w_after),
                         ("choose/else_branch/else_conv", w_else),
                         ("choose/else_branch/else_conv2", w_inner)]:
        np.testing.assert_array_equal(layers[name].weight, weight)
    # relu 0, choose 1 (its branches start there: else_conv 1, else_relu 2, else_conv2 3),
    # after 4 (after the deeper branch's three levels)
    assert {name: layer.depth for name, layer in layers.items()} == {
        "choose/then_branch/then_conv": 1, "choose/else_branch/else_conv": 1,
        "choose/else_branch/else_conv2": 3, "after": 4}
    assert record.operator_counts == {"Relu": 2, "If": 1, "Conv": 4, "Constant": 1}
    assert [layer.name for layer in ordered_layers(record)] == [
        "choose/else_branch/else_conv", "choose/then_branch/then_conv",
        "choose/else_branch/else_conv2", "after"]


def test_branch_reading_the_outer_graphs_input_counts_depth_from_it(tmp_path):
    """A branch whose convs read an input of the main graph (silero-vad's If holds the
    whole network that way): depths grow from that input inside the branch."""
    weights = [ob.random_weight((4, 3, 3, 3), seed=1), ob.random_weight((4, 4, 3, 3), seed=2)]
    branch = helper.make_graph(
        [ob.conv("c1", "x", "w1", "a", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"], name="relu"),
         ob.conv("c2", "b", "w2", "t", pads=[1, 1, 1, 1])], "then", [], [ob.output("t")],
        initializer=[ob.tensor("w1", weights[0]), ob.tensor("w2", weights[1])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="same")],
                              "else", [], [ob.output("e")])
    model = ob.make_model(
        [helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=branch,
                          else_branch=other)],
        [ob.image_input("x", 3), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [ob.output("y")], [])
    record = open_model(ob.save(model, tmp_path / "if_input.onnx"))
    # choose is at depth 0; inside, c1 reads x (depth 0), relu 1, c2 2
    assert {layer.name: layer.depth for layer in record.layers} == {
        "choose/then_branch/c1": 0, "choose/then_branch/c2": 2}
    assert [conv_depth for _, conv_depth in sorted(
        (layer.name, layer.depth) for layer in ordered_layers(record))] == [0, 2]


def test_conv_of_a_layout_changing_domain_is_refused_naming_node(tmp_path):
    """onnxruntime's com.microsoft.nchwc Conv holds its weight reordered into blocks
    under the declared shape: reading it as ONNX layout would scramble the filters."""
    weight = ob.random_weight((8, 8, 3, 3), seed=3)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="blocked", domain="com.microsoft.nchwc")
    model = ob.make_model([node], [ob.image_input("x", 8)], [ob.output("y")],
                          [ob.tensor("W", weight)], check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft.nchwc", 1))
    with pytest.raises(ModelReadError) as error:
        open_model(ob.save(model, tmp_path / "nchwc.onnx"))
    assert "'blocked'" in str(error.value) and "com.microsoft.nchwc:Conv" in str(error.value)
    # onnxruntime's contrib FusedConv keeps the ONNX layout
    fused = helper.make_node("FusedConv", ["x", "W"], ["y"], name="fused",
                             domain="com.microsoft", activation="Relu")
    model = ob.make_model([fused], [ob.image_input("x", 8)], [ob.output("y")],
                          [ob.tensor("W", weight)], check=False)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    (layer,) = open_model(ob.save(model, tmp_path / "fused.onnx")).layers
    np.testing.assert_array_equal(layer.weight, weight)


def test_function_holding_its_weight_as_a_constant_called_twice_is_one_layer(tmp_path):
    """The inliner gives each call its own copy of the function's Constant: the copies
    are one weight, one layer, at the first call's depth."""
    weight = ob.random_weight((4, 4, 3, 3), seed=6)
    block = helper.make_function("local", "Block", ["x"], ["y"], [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight, "w")),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"])], [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Block", ["x"], ["h"], domain="local", name="first"),
         helper.make_node("Block", ["h"], ["y"], domain="local", name="second")], "g",
        [ob.image_input("x", 4)], [ob.output("y")])
    model = helper.make_model(graph, functions=[block], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    (layer,) = open_model(ob.save(model, tmp_path / "twice.onnx")).layers
    np.testing.assert_array_equal(layer.weight, weight)
    assert layer.depth == 0


def test_separate_constants_of_equal_values_are_separate_layers(tmp_path):
    """Two zero-initialised convs whose weights are separate Constants (not copies of a
    function's) stay two layers."""
    zeros = np.zeros((3, 3, 3, 3), np.float32)
    model = ob.make_model(
        [ob.constant("a", "wa", zeros), ob.constant("b", "wb", zeros.copy()),
         ob.conv("first", "x", "wa", "h", pads=[1, 1, 1, 1]),
         ob.conv("second", "h", "wb", "y", strides=[2, 2], pads=[1, 1, 1, 1])],
        [ob.image_input("x", 3)], [ob.output("y")], [])
    layers = open_model(ob.save(model, tmp_path / "zeros.onnx")).layers
    assert [(layer.name, layer.strides) for layer in layers] == [("first", (1, 1)),
                                                                 ("second", (2, 2))]


def test_nested_holders_span_their_nested_subgraphs(tmp_path):
    """If -> a branch whose only node is an If -> 4 chained convs: the conv after the
    outer If comes after them; a second outer If with a shallower nest is not given the
    first one's span."""
    weight = ob.random_weight((3, 3, 1, 1), seed=9)

    def chain(name: str, count: int):
        nodes = [helper.make_node("Identity", ["x"], [f"{name}_0"], name=f"{name}_in")]
        inits = []
        for k in range(count):
            inits.append(ob.tensor(f"{name}_w{k}", weight))
            nodes.append(ob.conv(f"{name}_c{k}", f"{name}_{k}", f"{name}_w{k}", f"{name}_{k + 1}"))
        return helper.make_graph(nodes, name, [], [ob.output(f"{name}_{count}")], inits)

    def nest(name: str, count: int):
        inner = helper.make_node("If", ["cond"], [f"{name}_o"], name=f"{name}_if",
                                 then_branch=chain(f"{name}_t", count),
                                 else_branch=chain(f"{name}_e", count))
        return helper.make_graph([inner], name, [], [ob.output(f"{name}_o")])

    def passing(name: str):
        return helper.make_graph([helper.make_node("Identity", ["x"], [f"{name}_o"])], name,
                                 [], [ob.output(f"{name}_o")])

    model = ob.make_model(
        [helper.make_node("If", ["cond"], ["o1"], name="if1", then_branch=nest("A", 4),
                          else_branch=passing("P")),
         ob.conv("after1", "o1", "w1", "y1"),
         helper.make_node("If", ["cond"], ["o2"], name="if2", then_branch=nest("D", 1),
                          else_branch=passing("Q")),
         ob.conv("after2", "o2", "w2", "y2")],
        [ob.image_input("x", 3), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [ob.output("y1"), ob.output("y2")],
        [ob.tensor("w1", weight), ob.tensor("w2", weight)], check=False)
    depths = {layer.name: layer.depth
              for layer in open_model(ob.save(model, tmp_path / "nested.onnx")).layers}
    # inside if1: A_if at 0, its branch: Identity 0, convs 1..4; after1 at 5
    assert depths["if1/then_branch/A_if/then_branch/A_t_c3"] == 4
    assert depths["after1"] == 5
    assert depths["after2"] == 2  # Identity 0, one conv 1


def test_contrib_convs_are_read_or_refused_never_left_out(tmp_path):
    """onnxruntime's ConvTransposeWithDynamicPads keeps ConvTranspose's layout and is
    read; its NhwcConv is refused in one line, not left out of the layers unseen."""
    weight = ob.random_weight((8, 4, 3, 3), seed=7)
    for op_type in ("ConvTransposeWithDynamicPads", "NhwcConv"):
        node = helper.make_node(op_type, ["x", "W"], ["y"], name="contrib",
                                domain="com.microsoft")
        model = ob.make_model([node], [ob.image_input("x", 8)], [ob.output("y")],
                              [ob.tensor("W", weight)], check=False)
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        path = ob.save(model, tmp_path / f"{op_type}.onnx")
        if op_type == "NhwcConv":
            with pytest.raises(ModelReadError, match="com.microsoft:NhwcConv"):
                open_model(path)
            continue
        (layer,) = open_model(path).layers
        assert (layer.op_type, layer.c_out, layer.c_in_per_group) == ("conv_transpose", 4, 8)
        np.testing.assert_array_equal(layer.weight, weight)


@pytest.mark.parametrize("where", ["sparse_initializer", "Constant sparse_value"])
@pytest.mark.parametrize("coordinates", [False, True])
def test_sparse_weights_are_read_dense(tmp_path, where, coordinates):
    """A weight stored sparse (linear indices, or one row of coordinates each): its
    values at its indices, zeros elsewhere; indices outside the shape are refused."""
    weight = ob.random_weight((4, 3, 3, 3), seed=8)
    weight[np.abs(weight) < 1.0] = 0
    flat = np.flatnonzero(weight)
    indices = (np.stack(np.unravel_index(flat, weight.shape), axis=1) if coordinates
               else flat).astype(np.int64)
    for bad in (False, True):
        if bad:
            indices = indices.copy()
            indices[-1] = weight.size if not coordinates else [4, 0, 0, 0]
        sparse = helper.make_sparse_tensor(numpy_helper.from_array(weight.flat[flat], "W"),
                                           numpy_helper.from_array(indices, "W_i"),
                                           weight.shape)
        nodes = [ob.conv("conv", "x", "W", "y")]
        if where == "Constant sparse_value":
            nodes.insert(0, helper.make_node("Constant", [], ["W"], name="c", sparse_value=sparse))
        graph = helper.make_graph(nodes, "g", [ob.image_input("x", 3)], [ob.output("y")],
                                  sparse_initializer=[sparse] if where != "Constant sparse_value"
                                  else [])
        path = ob.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                       tmp_path / f"sparse{bad}.onnx")
        if bad:
            with pytest.raises(ModelReadError, match="indices do not fit"):
                open_model(path)
        else:
            (layer,) = open_model(path).layers
            np.testing.assert_array_equal(layer.weight, weight)


@pytest.mark.parametrize("indices", [np.array([0, 1, 1]), np.array([0.0, 1.0, 2.0]),
                                     np.array([True, False, True])])
def test_sparse_indices_that_are_repeated_or_not_integers_are_refused(tmp_path, indices):
    values = numpy_helper.from_array(np.ones(3, np.float32), "W")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(indices, "W_i"),
                                       [1, 3, 3, 3])
    graph = helper.make_graph([ob.conv("conv", "x", "W", "y")], "g", [ob.image_input("x", 3)],
                              [ob.output("y")], sparse_initializer=[sparse])
    path = ob.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                   tmp_path / "hostile.onnx")
    with pytest.raises(ModelReadError, match="sparse tensor 'W'"):
        open_model(path)


def test_framework_from_the_file():
    """ONNX by its exporter (a blank producer is ONNX, not a crash), safetensors by its
    format metadata."""
    from filterdb.extraction import framework_of
    from filterdb.records import ModelRecord

    cases = [("onnx", "pytorch 2.1", "PyTorch"), ("onnx", "tf2onnx 1.16", "TensorFlow"),
             ("onnx", "  ", "ONNX"), ("onnx", "", "ONNX"),
             ("safetensors", "safetensors (pt)", "PyTorch"),
             ("safetensors", "safetensors", "safetensors"), ("keras", "keras 3", "Keras")]
    for fmt, producer, expected in cases:
        record = ModelRecord("m", "m", framework=fmt, producer=producer)
        assert framework_of(record) == expected, (fmt, producer)


def test_weights_saved_as_graph_inputs_say_so(tmp_path):
    """torch.onnx.export(..., export_params=False): the weights are graph inputs."""
    node = ob.conv("conv", "x", "W", "y")
    weight_input = helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3])
    model = ob.make_model([node], [ob.image_input("x", 3), weight_input], [ob.output("y")], [])
    with pytest.raises(ModelReadError, match="export_params=False"):
        open_model(ob.save(model, tmp_path / "no_params.onnx"))


def test_weight_quantized_by_the_graph_records_the_quantized_dtype(tmp_path):
    """A float Constant quantized by QuantizeLinear and dequantized again: the values the
    graph computes, and the int8 they were stored as in effect."""
    weight = ob.random_weight((4, 3, 3, 3), seed=5)
    scale = np.float32(0.01)
    nodes = [ob.constant("w_float", "wf", weight),
             helper.make_node("QuantizeLinear", ["wf", "s", "z"], ["wq"], name="quantize"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dequantize"),
             ob.conv("conv", "x", "w", "y")]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")],
                          [ob.tensor("s", np.array(scale)),
                           ob.tensor("z", np.array(0, dtype=np.int8))])
    (layer,) = open_model(ob.save(model, tmp_path / "qdq_constant.onnx")).layers
    stored = np.clip(np.rint(weight / scale), -128, 127).astype(np.int8)
    expected = stored.astype(np.float32) * scale
    np.testing.assert_array_equal(layer.weight, expected)
    assert layer.source_dtype == "int8"


def test_nodes_after_a_loop_come_after_its_body(tmp_path):
    """A Loop's body runs as part of the Loop: the conv reading its output is deeper than
    every conv of the body (it was one step after the Loop, shallower than the body)."""
    weights = [ob.random_weight((4, 4, 3, 3), seed=k) for k in range(3)]
    body = helper.make_graph(
        [ob.conv("b1", "state", "w1", "a", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"], name="relu"),
         ob.conv("b2", "b", "w2", "state_out", pads=[1, 1, 1, 1]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("state", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None)])
    model = ob.make_model(
        [helper.make_node("Loop", ["trips", "", "x"], ["looped"], name="loop", body=body),
         ob.conv("after", "looped", "w3", "y", pads=[1, 1, 1, 1])],
        [ob.image_input("x", 4), helper.make_tensor_value_info("trips", TensorProto.INT64, [])],
        [ob.output("y")], [ob.tensor(f"w{k + 1}", w) for k, w in enumerate(weights)],
        check=False)
    record = open_model(ob.save(model, tmp_path / "loop_depth.onnx"))
    # loop 0; inside b1 0, relu 1, b2 2 (three levels): after 3
    assert {layer.name: layer.depth for layer in record.layers} == {
        "loop/body/b1": 0, "loop/body/b2": 2, "after": 3}
    assert record.total_depth == 4


def _loop_with_carried_weight(tmp_path, carry: str, fold: bool = False):
    """A Loop whose body convolves with a loop-carried value initialised to the
    initializer w0 (tf2onnx hands ConvLSTM kernels in so); ``carry`` computes the value's
    next state: ``Identity`` passes it on unchanged, ``Neg`` changes it every iteration.
    ``fold``: the conv reads the carried value through Transpose (a computation)."""
    weight_in = "w_t" if fold else "w_carried"
    body_nodes = [ob.conv("body_conv", "r", weight_in, "out", pads=[1, 1, 1, 1]),
                  helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
                  helper.make_node(carry, ["w_carried"], ["w_next"], name="carry")]
    if fold:
        body_nodes.append(helper.make_node("Transpose", ["w_carried"], ["w_t"],
                                           name="swap", perm=[1, 0, 2, 3]))
    body = helper.make_graph(
        body_nodes, "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("w_carried", TensorProto.FLOAT,
                                                           None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("w_next", TensorProto.FLOAT, None),
         ob.output("out")])
    weight = ob.random_weight((4, 3, 3, 3) if not fold else (3, 4, 3, 3), seed=2)
    model = ob.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Loop", ["trips", "", "w0"], ["w_final", "scan"], name="loop",
                          body=body)],
        [ob.image_input("x", 3), helper.make_tensor_value_info("trips", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("scan", TensorProto.FLOAT, None)],
        [ob.tensor("w0", weight)], check=False)
    return ob.save(model, tmp_path / f"loop_{carry}_{fold}.onnx"), weight


@pytest.mark.parametrize("fold", [False, True])
def test_loop_state_passed_on_unchanged_is_the_loops_initial_value(tmp_path, fold):
    path, weight = _loop_with_carried_weight(tmp_path, "Identity", fold)
    (layer,) = open_model(path).layers
    assert layer.name == "loop/body/body_conv"
    expected = weight.transpose(1, 0, 2, 3) if fold else weight
    np.testing.assert_array_equal(layer.weight, expected)


def test_weight_of_a_loop_body_conv_from_a_changing_state_raises_naming_node(tmp_path):
    """A loop-carried value the body changes is not a constant: one line naming it."""
    path, _ = _loop_with_carried_weight(tmp_path, "Neg")
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    assert "loop/body/body_conv" in str(error.value)
    assert "w_carried" in str(error.value)


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    """The parser maps the file; where mapping fails (some filesystems) it reads it."""
    import mmap

    weight = ob.random_weight((6, 3, 3, 3), seed=1)
    path = ob.single_conv(tmp_path / "plain.onnx", weight)
    mapped = open_model(path)

    def refuse(*args, **kwargs):
        raise OSError("no mmap here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    read = open_model(path)
    np.testing.assert_array_equal(read.layers[0].weight, mapped.layers[0].weight)
    np.testing.assert_array_equal(read.layers[0].weight, weight)


@pytest.mark.parametrize("weight_shape, refused", [((4, 3, 3, 3), True), ((4,), False)])
def test_an_unknown_onnx_operator_taking_a_4d_constant_is_refused(tmp_path, weight_shape,
                                                                  refused):
    """tf2onnx leaves a TensorFlow PartitionedCall where it cannot convert a grouped
    Conv2D: its kernel would go missing unseen. One taking no 4-D constant is let be."""
    model = ob.make_model(
        [ob.conv("plain", "x", "w_plain", "a", pads=[1, 1, 1, 1]),
         helper.make_node("PartitionedCall", ["a", "w_hidden"], ["y"], name="grouped")],
        [ob.image_input("x", 3)], [ob.output("y")],
        [ob.tensor("w_plain", ob.random_weight((3, 3, 3, 3))),
         ob.tensor("w_hidden", ob.random_weight(weight_shape, seed=1))], check=False)
    path = ob.save(model, tmp_path / "partitioned.onnx")
    if not refused:
        assert [layer.name for layer in open_model(path).layers] == ["plain"]
        return
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    assert one_line(error.value).endswith(
        "node 'grouped' is a PartitionedCall, which is no ONNX operator, and takes the 4-D "
        "tensor 'w_hidden': a convolution the conversion left unconverted? (the model does "
        "not run)")


def test_one_int8_tensor_dequantized_with_two_scales_is_two_weights(tmp_path):
    """onnxsim merges equal initializers: conv b = 2 x conv a, quantized per tensor, share
    one int8 tensor with scales of their own. Two layers; one DequantizeLinear read by
    two convs stays one."""
    stored = np.random.default_rng(0).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "scale_a"], ["w_a"], name="dq_a"),
             helper.make_node("DequantizeLinear", ["w_q", "scale_b"], ["w_b"], name="dq_b"),
             ob.conv("a", "x", "w_a", "ya", pads=[1, 1, 1, 1]),
             ob.conv("b", "x", "w_b", "yb", pads=[1, 1, 1, 1]),
             ob.conv("a_again", "x", "w_a", "yc", pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["ya", "yb", "yc"], ["y"], name="sum")]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")],
                          [ob.tensor("w_q", stored),
                           ob.tensor("scale_a", np.float32(0.01)),
                           ob.tensor("scale_b", np.float32(0.02))])
    layers = {layer.name: layer for layer in open_model(
        ob.save(model, tmp_path / "shared_int8.onnx")).layers}
    assert sorted(layers) == ["a", "b"]
    np.testing.assert_array_equal(layers["a"].weight, stored.astype(np.float32) * np.float32(0.01))
    np.testing.assert_array_equal(layers["b"].weight, stored.astype(np.float32) * np.float32(0.02))


@pytest.mark.parametrize("to, dtype", [(TensorProto.BFLOAT16, "bfloat16"),
                                       (TensorProto.FLOAT16, "float16")])
def test_a_cast_to_16_bits_rounds_the_weight(tmp_path, to, dtype):
    """float32 initializer -> Cast(bfloat16 or float16) -> Cast(float) -> Conv, as a
    model exported under torch.autocast has it: the conv uses the rounded weight."""
    import ml_dtypes

    weight = ob.random_weight((4, 3, 3, 3), seed=3)
    nodes = [helper.make_node("Cast", ["w"], ["w16"], name="down", to=to),
             helper.make_node("Cast", ["w16"], ["w32"], name="up", to=TensorProto.FLOAT),
             ob.conv("conv", "x", "w32", "y", pads=[1, 1, 1, 1])]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")],
                          [ob.tensor("w", weight)])
    (layer,) = open_model(ob.save(model, tmp_path / "cast.onnx")).layers
    rounding = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    expected = weight.astype(rounding).astype(np.float32)
    assert not np.array_equal(expected, weight)
    np.testing.assert_array_equal(layer.weight, expected)
    assert layer.source_dtype == dtype


def test_dequantize_with_a_float16_scale_gives_float16_values(tmp_path):
    """DequantizeLinear's output has its scale's type: float16 scales round the weight."""
    stored = np.random.default_rng(1).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale = np.float16(0.0123)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "scale"], ["w16"], name="dq"),
             helper.make_node("Cast", ["w16"], ["w"], name="up", to=TensorProto.FLOAT),
             ob.conv("conv", "x", "w", "y", pads=[1, 1, 1, 1])]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")],
                          [ob.tensor("w_q", stored), ob.tensor("scale", scale)], opset=19)
    (layer,) = open_model(ob.save(model, tmp_path / "dq16.onnx")).layers
    expected = (stored.astype(np.float32) * np.float32(scale)).astype(np.float16)
    np.testing.assert_array_equal(layer.weight, expected.astype(np.float32))
    assert layer.source_dtype == "int8"


def test_dynamo_names_survive_onnxruntime_quantization(tmp_path):
    """onnxruntime renames a dynamo export's nodes (node_Conv_3 -> node_Conv_3_quant) and
    weights (stem.weight -> stem.weight_quantized): the layer keeps the module's name."""
    stored = np.random.default_rng(2).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["stem.weight_quantized", "s"], ["w"],
                              name="dq"),
             ob.conv("node_Conv_3_quant", "x", "w", "y", pads=[1, 1, 1, 1])]
    model = ob.make_model(nodes, [ob.image_input("x", 3)], [ob.output("y")],
                          [ob.tensor("stem.weight_quantized", stored),
                           ob.tensor("s", np.float32(0.05))])
    (layer,) = open_model(ob.save(model, tmp_path / "quantized_dynamo.onnx")).layers
    assert layer.name == "stem"
