"""Tests of the TFLite reader through ``filterdb.readers.open_model``.

The fixtures are written by ``writers_tflite`` with the flatbuffers Builder and the
``tflite`` package's generated schema functions; no TensorFlow is needed or run.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from tflite import BuiltinOperator, SparseIndexVector, TensorType
from tflite import DimensionType as DT

import filterdb
from filterdb.build import build
from filterdb.errors import MissingDependencyError, ModelReadError
from filterdb.extraction import conv_depths, model_summary
from filterdb.readers import Limits, find_reader, open_model
from filterdb.readers import tflite as reader

from . import writers_tflite as wt
from .network import equivalence_network, expected_filters

D, S = DT.DENSE, DT.SPARSE_CSR
NAMES = ["plain", "strided", "grouped", "depthwise", "transposed", "wide"]


def _network(variant):
    network = equivalence_network()
    return wt.with_zeros(network) if variant == "sparse" else network


def _one_line_error(path, match=None) -> ModelReadError:
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    error = caught.value
    assert error.path == os.fspath(path)
    assert "\n" not in str(error) and error.reason
    assert str(error) == f"{path}: {error.reason}"
    if match is not None:
        assert match in error.reason, error.reason
    return error


# ---------------------------------------------------------------------------
# the equivalence network in every variant

@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-buffers"])
@pytest.mark.parametrize("variant", wt.VARIANTS)
def test_network_layers_order_and_attributes(tmp_path, variant, external):
    network = _network(variant)
    path = wt.write_network(tmp_path / f"{variant}.tflite", network, variant, external)
    record = open_model(path)

    assert record.framework == "tflite"
    assert record.name == variant
    assert record.path == os.fspath(path)
    assert record.producer == f"{wt.DESCRIPTION} (min runtime {wt.MIN_RUNTIME})"
    assert [layer.name for layer in record.layers] == NAMES
    orders = [layer.order for layer in record.layers]
    assert orders == sorted(orders)
    assert conv_depths(record.layers) == [(i, i / 5) for i in range(6)]

    quantized = variant == "int8"
    kinds = ["quantized_conv" if quantized else "conv"] * 6
    kinds[4] = "conv_transpose"
    assert [layer.op_type for layer in record.layers] == kinds
    assert [layer.groups for layer in record.layers] == [1, 1, 2, 8, 1, 1]
    assert [layer.depthwise for layer in record.layers] == [False] * 3 + [True] + [False] * 2
    assert [(layer.c_out, layer.c_in_per_group) for layer in record.layers] == [
        (8, 3), (8, 8), (8, 4), (8, 1), (4, 8), (6, 4)]
    assert [layer.strides for layer in record.layers] == [
        (1, 1), (2, 2), (1, 1), (1, 1), (2, 2), (1, 1)]
    assert all(layer.dilations == (1, 1) for layer in record.layers)
    assert [layer.kernel_shape for layer in record.layers] == [(3, 3)] * 5 + [(1, 3)]
    source = {"float32": "float32", "sparse": "float32", "float16": "float16", "int8": "int8"}
    assert {layer.source_dtype for layer in record.layers} == {source[variant]}
    assert all(layer.weight.dtype == np.float32 and layer.weight.flags.c_contiguous
               for layer in record.layers)
    assert model_summary(record, record.layers)["weight_dtype"] == source[variant]

    counts = {"CONV_2D": 4, "DEPTHWISE_CONV_2D": 1, "TRANSPOSE_CONV": 1, "RELU": 6}
    counts.update({"float16": {"DEQUANTIZE": 12}, "sparse": {"DENSIFY": 1},
                   "int8": {"QUANTIZE": 1, "DEQUANTIZE": 1}}.get(variant, {}))
    assert record.operator_counts == counts
    # weight DEQUANTIZE/DENSIFY operators read only constants: no depth level
    assert record.total_depth == (14 if quantized else 12)
    depths = [layer.depth for layer in record.layers]
    assert depths == ([1, 3, 5, 7, 9, 11] if quantized else [0, 2, 4, 6, 8, 10])


@pytest.mark.parametrize("variant", ["float32", "sparse"])
def test_float32_and_densified_filters_are_exact(tmp_path, variant):
    network = _network(variant)
    record = open_model(wt.write_network(tmp_path / "net.tflite", network, variant))
    for layer, spec, expected in zip(record.layers, network, expected_filters(network),
                                     strict=True):
        np.testing.assert_array_equal(layer.weight, spec.weight)
        np.testing.assert_array_equal(layer.filters(), expected)
    if variant == "sparse":
        assert (record.layers[0].weight == 0).mean() > 0.3


@pytest.mark.parametrize("fields", ["builtin", "deprecated"])
def test_operator_code_in_one_field(tmp_path, fields):
    """TFLite takes the larger of builtin_code and deprecated_builtin_code; a file may set
    either alone (the tflite package's BuiltinCode() hides a lone builtin_code below 127)."""
    network = equivalence_network()
    both = open_model(wt.write_network(tmp_path / "both.tflite", network, "float16"))
    model = wt.network_model(network, "float16")
    model.opcode_fields = fields
    record = open_model(model.save(tmp_path / f"{fields}.tflite"))
    assert record.operator_counts == both.operator_counts
    assert "ADD" not in record.operator_counts and record.operator_counts["DEQUANTIZE"] > 0
    assert [layer.name for layer in record.layers] == [layer.name for layer in both.layers]
    for layer, expected in zip(record.layers, both.layers, strict=True):
        np.testing.assert_array_equal(layer.weight, expected.weight)


def test_float16_filters_within_float16_rounding(tmp_path):
    network = equivalence_network()
    record = open_model(wt.write_network(tmp_path / "half.tflite", network, "float16"))
    for layer, spec, expected in zip(record.layers, network, expected_filters(network),
                                     strict=True):
        # exactly the float16 values, widened
        np.testing.assert_array_equal(layer.weight, spec.weight.astype(np.float16)
                                      .astype(np.float32))
        # which lie within float16's rounding (half an ulp, 2**-11 relative) of float32
        np.testing.assert_allclose(layer.filters(), expected, rtol=2**-11, atol=2**-24)
        assert not np.array_equal(layer.filters(), expected)


def test_int8_filters_within_half_a_quantization_step(tmp_path):
    network = equivalence_network()
    record = open_model(wt.write_network(tmp_path / "int8.tflite", network, "int8"))
    for layer, spec, expected in zip(record.layers, network, expected_filters(network),
                                     strict=True):
        axis = wt.quantized_dimension(spec)
        q, scale = wt.quantize_symmetric(wt.tflite_weight(spec), axis)
        # scale is per output channel of the TFLite filter; in ONNX layout that is axis 0
        # for Conv and depthwise, axis 1 for ConvTranspose (c_in, c_out, kh, kw)
        onnx_axis = 1 if spec.kind == "conv_transpose" else 0
        shape = [1, 1, 1, 1]
        shape[onnx_axis] = scale.size
        step = scale.reshape(shape)
        error = np.abs(layer.weight - spec.weight)
        assert (error <= step / 2 * (1 + 1e-5)).all()
        assert error.max() > 0
        # and exactly q * scale, as TFLite's DEQUANTIZE computes it
        dequantized = (q.astype(np.float64) * scale.astype(np.float64).reshape(
            [-1 if i == axis else 1 for i in range(4)])).astype(np.float32)
        expected_onnx = (dequantized.transpose(3, 0, 1, 2)
                         if spec.kind == "conv_transpose" or axis == 3
                         else dequantized.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(layer.weight, expected_onnx)
        assert layer.filters().shape == expected.shape


# ---------------------------------------------------------------------------
# orientation, checked on asymmetric kernels against the TFLite layout itself

def test_asymmetric_kernel_orientation(tmp_path):
    network = equivalence_network()
    record = open_model(wt.write_network(tmp_path / "net.tflite", network))
    plain, transposed, wide = record.layers[0], record.layers[4], record.layers[5]

    tfl = wt.tflite_weight(network[0])  # CONV_2D filter (out, kh, kw, in)
    kernel = tfl[5, :, :, 2]  # output channel 5, input channel 2
    assert not np.array_equal(kernel, kernel.T)
    assert not np.array_equal(kernel, kernel[::-1])
    assert not np.array_equal(kernel, kernel[:, ::-1])
    np.testing.assert_array_equal(plain.weight[5, 2], kernel)
    np.testing.assert_array_equal(plain.filters()[5 * 3 + 2], kernel)
    assert plain.weight[5, 2, 0, 2] == tfl[5, 0, 2, 2]  # row 0, column 2

    tfl = wt.tflite_weight(network[4])  # TRANSPOSE_CONV filter (out=4, kh, kw, in=8)
    np.testing.assert_array_equal(transposed.weight[6, 1], tfl[1, :, :, 6])  # in 6 -> out 1
    assert transposed.weight[6, 1, 2, 0] == tfl[1, 2, 0, 6]

    tfl = wt.tflite_weight(network[5])  # (6, 1, 3, 4): a 1x3 kernel stays 1x3
    assert wide.kernel_shape == (1, 3)
    np.testing.assert_array_equal(wide.weight[3, 1, 0], tfl[3, 0, :, 1])


def test_depthwise_multiplier_orders_filters_by_output_channel(tmp_path):
    """(1, kh, kw, in*mult): output channel c = input c // mult, multiplier c % mult."""
    tfl = np.random.default_rng(3).standard_normal((1, 3, 2, 6)).astype(np.float32)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    w = m.tensor("w", tfl.shape, data=tfl)
    y = m.tensor("dw", [1, 8, 8, 6])
    m.op(BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, -1], [y], depth_multiplier=2,
         stride_h=2, stride_w=1, dilation_h=1, dilation_w=3)
    m.inputs, m.outputs = [x], [y]
    layer = open_model(m.save(tmp_path / "dw.tflite")).layers[0]
    assert (layer.c_out, layer.c_in_per_group, layer.groups) == (6, 1, 3)
    assert layer.depthwise
    assert layer.strides == (2, 1)
    assert layer.dilations == (1, 3)
    assert layer.kernel_shape == (3, 2)
    for channel in range(6):
        np.testing.assert_array_equal(layer.filters()[channel], tfl[0, :, :, channel])


def test_depthwise_groups_from_options_when_input_shape_unknown(tmp_path):
    tfl = np.ones((1, 3, 3, 8), np.float32)
    m = wt.ModelDef()
    x = m.tensor("x", [])  # unranked input
    w = m.tensor("w", tfl.shape, data=tfl)
    y = m.tensor("dw", [])
    m.op(BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, -1], [y], depth_multiplier=4)
    m.inputs, m.outputs = [x], [y]
    layer = open_model(m.save(tmp_path / "dw.tflite")).layers[0]
    assert (layer.c_out, layer.c_in_per_group, layer.groups) == (8, 1, 2)


def test_a_filter_tensor_read_by_two_operators_is_one_layer(tmp_path):
    """A shared conv (two CONV_2D operators on one filter tensor) is one layer at its
    first depth, as in the other formats: a weight counts once."""
    rng = np.random.default_rng(4)
    first, shared = (rng.standard_normal(shape).astype(np.float32)
                     for shape in ((8, 3, 3, 3), (8, 3, 3, 8)))
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    w1, ws = m.tensor("a/w", first.shape, data=first), m.tensor("s/w", shared.shape, data=shared)
    h1, h2, h3 = (m.tensor(name, [1, 8, 8, 8]) for name in ("h1", "h2", "h3"))
    m.op(BuiltinOperator.CONV_2D, [x, w1, -1], [h1])
    m.op(BuiltinOperator.CONV_2D, [h1, ws, -1], [h2])
    m.op(BuiltinOperator.CONV_2D, [h2, ws, -1], [h3])
    m.inputs, m.outputs = [x], [h3]
    record = open_model(m.save(tmp_path / "shared.tflite"))
    assert [(layer.name, layer.depth) for layer in record.layers] == [("h1", 0), ("h2", 1)]
    np.testing.assert_array_equal(record.layers[1].weight, shared.transpose(0, 3, 1, 2))
    assert record.operator_counts == {"CONV_2D": 3}


def test_conv_dilation_and_asymmetric_stride(tmp_path):
    tfl = np.arange(4 * 3 * 3 * 2, dtype=np.float32).reshape(4, 3, 3, 2)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 9, 9, 2])
    w = m.tensor("w", tfl.shape, data=tfl)
    y = m.tensor("conv", [1, 5, 9, 4])
    m.op(BuiltinOperator.CONV_2D, [x, w, -1], [y], stride_h=2, stride_w=1,
         dilation_h=2, dilation_w=1)
    m.inputs, m.outputs = [x], [y]
    layer = open_model(m.save(tmp_path / "dil.tflite")).layers[0]
    assert layer.strides == (2, 1)
    assert layer.dilations == (2, 1)
    assert layer.groups == 1
    np.testing.assert_array_equal(layer.weight, tfl.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("block, code, expected", [
    ([2, 3], BuiltinOperator.CONV_2D, (2, 3)),
    ([2, 2], BuiltinOperator.DEPTHWISE_CONV_2D, (2, 2)),
    ([3], BuiltinOperator.CONV_2D, (1, 3)),  # a Conv1D: EXPAND_DIMS between
])
def test_dilation_of_a_conv_between_space_to_batch_and_batch_to_space(tmp_path, block,
                                                                      code, expected):
    """A model without a fixed batch size converts a dilated conv to SPACE_TO_BATCH_ND,
    a conv of dilation 1 and BATCH_TO_SPACE_ND: the block is the dilation."""
    depthwise = code == BuiltinOperator.DEPTHWISE_CONV_2D
    kernel = (1, 3, 3, 4) if depthwise else (4, 3, 3, 4)
    tfl = np.arange(np.prod(kernel), dtype=np.float32).reshape(kernel)
    m = wt.ModelDef()
    one_d = len(block) == 1
    x = m.tensor("x", [1, 12, 4] if one_d else [1, 12, 12, 4])
    shape = m.tensor("block", [len(block)], TensorType.INT32, np.array(block, np.int32))
    pads = m.tensor("pads", [len(block), 2], TensorType.INT32,
                    np.zeros((len(block), 2), np.int32))
    spaced = m.tensor("spaced", [block[0], 4, 4] if one_d else [6, 6, 4, 4])
    m.op(BuiltinOperator.SPACE_TO_BATCH_ND, [x, shape, pads], [spaced])
    conv_in = spaced
    if one_d:
        axis = m.tensor("axis", [1], TensorType.INT32, np.array([1], np.int32))
        conv_in = m.tensor("expanded", [block[0], 1, 4, 4])
        m.op(BuiltinOperator.EXPAND_DIMS, [spaced, axis], [conv_in])
    w = m.tensor("w", tfl.shape, data=tfl)
    y = m.tensor("y", [6, 6, 4, 4])
    m.op(code, [conv_in, w, -1], [y], padding=0)
    m.inputs, m.outputs = [x], [y]
    (layer,) = open_model(m.save(tmp_path / "atrous.tflite")).layers
    assert layer.dilations == expected
    assert layer.groups == (4 if depthwise else 1)


def _branch(name: str, code: int, weight: np.ndarray, in_channels: int, out_channels: int,
            **options) -> wt.ModelDef:
    """A subgraph of one conv: (1, 8, 8, in_channels) -> (1, 8, 8, out_channels)."""
    graph = wt.ModelDef(name=name)
    x = graph.tensor(f"{name}_in", [1, 8, 8, in_channels])
    w = graph.tensor(f"{name}_w", weight.shape, data=weight)
    y = graph.tensor(f"{name}_out", [1, 8, 8, out_channels])
    graph.op(code, [x, w, -1], [y], **options)
    graph.inputs, graph.outputs = [x], [y]
    return graph


def test_convs_of_called_subgraphs_are_read_and_entry_points_are_not(tmp_path):
    """IF branches (subgraphs 1 and 2) run as part of subgraph 0: their convs are read,
    named under the subgraph, their depth counted from the IF operator. Subgraph 3 is
    another entry point (nothing calls it), subgraph 4 a CALL_ONCE initialiser."""
    rng = np.random.default_rng(5)
    w_main = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w_then = rng.standard_normal((6, 3, 3, 4)).astype(np.float32)
    w_else = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
    w_train = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    condition = m.tensor("condition", [], type=TensorType.BOOL)
    w = m.tensor("w", w_main.shape, data=w_main)
    a = m.tensor("stem", [1, 8, 8, 4])
    y = m.tensor("branch", [1, 8, 8, 6])
    m.op(BuiltinOperator.CALL_ONCE, [], [], init_subgraph=4)
    m.op(BuiltinOperator.CONV_2D, [x, w, -1], [a])
    m.op(BuiltinOperator.IF, [condition, a], [y], then_subgraph=1, else_subgraph=2)
    m.inputs, m.outputs = [x, condition], [y]
    m.subgraphs = [
        _branch("then", BuiltinOperator.CONV_2D, w_then, 4, 6),
        _branch("else", BuiltinOperator.DEPTHWISE_CONV_2D, w_else, 4, 4, depth_multiplier=1),
        _branch("train", BuiltinOperator.CONV_2D, w_train, 3, 2),
        wt.ModelDef(name="init")]
    record = open_model(m.save(tmp_path / "branches.tflite"))

    layers = {layer.name: layer for layer in record.layers}
    assert list(layers) == ["stem", "then/then_out", "else/else_out"]
    np.testing.assert_array_equal(layers["stem"].weight, w_main.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(layers["then/then_out"].weight, w_then.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(layers["else/else_out"].weight, w_else.transpose(3, 0, 1, 2))
    assert layers["else/else_out"].groups == 4
    assert {name: layer.depth for name, layer in layers.items()} == {
        "stem": 0, "then/then_out": 1, "else/else_out": 1}
    assert record.operator_counts == {"CALL_ONCE": 1, "CONV_2D": 2, "IF": 1,
                                      "DEPTHWISE_CONV_2D": 1}


def test_a_description_its_author_wrote_is_not_the_producer(tmp_path):
    """TF's converter writes "MLIR Converted."; a model's author may replace it with
    free text (MLTK's), which would split the producer grouping model by model."""
    path = wt.write_network(tmp_path / "net.tflite", equivalence_network())
    assert open_model(path).producer == f"MLIR Converted. (min runtime {wt.MIN_RUNTIME})"
    m = wt.ModelDef(description="Image classifier example for detecting Rock/Paper/Scissors")
    x, w_t, y = (m.tensor("x", [1, 8, 8, 3]),
                 m.tensor("w", [2, 3, 3, 3], data=np.ones((2, 3, 3, 3), np.float32)),
                 m.tensor("y", [1, 8, 8, 2]))
    m.op(BuiltinOperator.CONV_2D, [x, w_t, -1], [y])
    m.inputs, m.outputs = [x], [y]
    assert open_model(m.save(tmp_path / "authored.tflite")).producer.startswith("tflite")


def test_operators_after_a_call_come_after_the_called_subgraph(tmp_path):
    """An IF branch of two convs runs as part of the IF: the conv reading the IF's output
    is deeper than both (it was one step after the IF, shallower than the branch)."""
    rng = np.random.default_rng(7)
    w_body = [rng.standard_normal((3, 3, 3, 3)).astype(np.float32) for _ in range(2)]
    w_after = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    condition = m.tensor("condition", [], type=TensorType.BOOL)
    branched = m.tensor("branched", [1, 8, 8, 3])
    w = m.tensor("w_after", w_after.shape, data=w_after)
    y = m.tensor("y", [1, 8, 8, 2])
    m.op(BuiltinOperator.IF, [condition, x], [branched], then_subgraph=1, else_subgraph=2)
    m.op(BuiltinOperator.CONV_2D, [branched, w, -1], [y])
    m.inputs, m.outputs = [x, condition], [y]
    body = wt.ModelDef(name="two")
    bx = body.tensor("bx", [1, 8, 8, 3])
    mid, out = body.tensor("mid", [1, 8, 8, 3]), body.tensor("out", [1, 8, 8, 3])
    first = body.tensor("w1", w_body[0].shape, data=w_body[0])
    second = body.tensor("w2", w_body[1].shape, data=w_body[1])
    body.op(BuiltinOperator.CONV_2D, [bx, first, -1], [mid])
    body.op(BuiltinOperator.CONV_2D, [mid, second, -1], [out])
    body.inputs, body.outputs = [bx], [out]
    m.subgraphs = [body, _branch("one", BuiltinOperator.CONV_2D, w_body[0], 3, 3)]
    record = open_model(m.save(tmp_path / "deeper_branch.tflite"))
    # IF 0; the deeper branch: mid 0, out 1 (two levels): the conv after it 2
    assert {layer.name: layer.depth for layer in record.layers} == {
        "y": 2, "two/mid": 0, "two/out": 1, "one/one_out": 0}


def test_a_nested_call_spans_its_own_subgraph_and_a_deep_chain_of_calls_is_read(tmp_path):
    """IF -> a subgraph whose only operator is an IF -> three chained convs: the conv
    after the outer IF comes after all three. A hostile chain of 600 nested calls is
    read (nesting beyond 64 counts one level each), not a RecursionError."""
    w = np.ones((3, 1, 1, 3), np.float32)
    m = wt.ModelDef()
    x, c = m.tensor("x", [1, 8, 8, 3]), m.tensor("c", [], type=TensorType.BOOL)
    o, y = m.tensor("o", [1, 8, 8, 3]), m.tensor("after", [1, 8, 8, 3])
    m.op(BuiltinOperator.IF, [c, x], [o], then_subgraph=1, else_subgraph=1)
    m.op(BuiltinOperator.CONV_2D, [o, m.tensor("wa", w.shape, data=w), -1], [y])
    m.inputs, m.outputs = [x, c], [y]
    outer = wt.ModelDef(name="outer")
    c1, x1, o1 = (outer.tensor("c", [], type=TensorType.BOOL), outer.tensor("x", [1, 8, 8, 3]),
                  outer.tensor("o", [1, 8, 8, 3]))
    outer.op(BuiltinOperator.IF, [c1, x1], [o1], then_subgraph=2, else_subgraph=2)
    outer.inputs, outer.outputs = [c1, x1], [o1]
    inner = wt.ModelDef(name="inner")
    previous = inner.tensor("x", [1, 8, 8, 3])
    inner.inputs = [previous]
    for k in range(3):
        following = inner.tensor(f"y{k}", [1, 8, 8, 3])
        inner.op(BuiltinOperator.CONV_2D, [previous, inner.tensor(f"w{k}", w.shape, data=w), -1],
                 [following])
        previous = following
    inner.outputs = [previous]
    m.subgraphs = [outer, inner]
    depths = {layer.name: layer.depth
              for layer in open_model(m.save(tmp_path / "nested.tflite")).layers}
    assert depths == {"after": 3, "outer/inner/y0": 0, "outer/inner/y1": 1,
                      "outer/inner/y2": 2}

    def chained(index: int, following: int | None) -> wt.ModelDef:
        graph = wt.ModelDef(name=f"s{index}")
        condition = graph.tensor("c", [], type=TensorType.BOOL)
        value, out = graph.tensor("x", [1, 8, 8, 3]), graph.tensor("y", [1, 8, 8, 3])
        if following is not None:
            graph.op(BuiltinOperator.IF, [condition, value], [out], then_subgraph=following,
                     else_subgraph=index)
        graph.inputs, graph.outputs = [condition, value], [out]
        return graph

    deep = chained(0, 1)
    weight = np.ones((2, 3, 3, 3), np.float32)
    deep.op(BuiltinOperator.CONV_2D, [1, deep.tensor("w", weight.shape, data=weight), -1],
            [deep.tensor("z", [1, 8, 8, 2])])
    deep.subgraphs = [chained(k, k + 1 if k < 600 else None) for k in range(1, 601)]
    assert len(open_model(deep.save(tmp_path / "deep.tflite")).layers) == 1


def test_weights_a_caller_passes_into_a_branch_are_read_from_the_caller(tmp_path):
    """TF's functional If passes captured constants as operands: the branch's weight is
    one of its inputs, a float constant or an int8 one whose scale only the caller's
    tensor declares."""
    rng = np.random.default_rng(6)
    w_float = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    w_int8 = rng.integers(-127, 128, size=(2, 3, 3, 3)).astype(np.int8)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    condition = m.tensor("condition", [], type=TensorType.BOOL)
    float_weight = m.tensor("wf", w_float.shape, data=w_float)
    int_weight = m.tensor("wq", w_int8.shape, TensorType.INT8, data=w_int8,
                          quant=wt.Quant([0.5], [0]))
    y = m.tensor("y", [1, 8, 8, 7])
    m.op(BuiltinOperator.IF, [condition, x, float_weight, int_weight], [y], then_subgraph=1,
         else_subgraph=1)
    m.inputs, m.outputs = [x, condition], [y]
    branch = wt.ModelDef(name="body")
    bx = branch.tensor("bx", [1, 8, 8, 3])
    bf = branch.tensor("bf", w_float.shape)
    bq = branch.tensor("bq", w_int8.shape, TensorType.INT8)  # no quantization of its own
    out_f, out_q = branch.tensor("out_f", [1, 8, 8, 5]), branch.tensor("out_q", [1, 8, 8, 2])
    branch.op(BuiltinOperator.CONV_2D, [bx, bf, -1], [out_f])
    branch.op(BuiltinOperator.CONV_2D, [bx, bq, -1], [out_q])
    branch.inputs, branch.outputs = [bx, bf, bq], [out_f, out_q]
    m.subgraphs = [branch]
    layers = {layer.name: layer for layer in open_model(m.save(tmp_path / "pass.tflite")).layers}

    assert list(layers) == ["body/out_f", "body/out_q"]
    np.testing.assert_array_equal(layers["body/out_f"].weight, w_float.transpose(0, 3, 1, 2))
    quantized = layers["body/out_q"]
    assert (quantized.op_type, quantized.source_dtype) == ("quantized_conv", "int8")
    np.testing.assert_array_equal(quantized.weight,
                                  w_int8.transpose(0, 3, 1, 2).astype(np.float32) * 0.5)


def test_a_call_of_a_subgraph_that_does_not_exist_is_one_line(tmp_path):
    m = wt.ModelDef()
    x, y = m.tensor("x", [1, 8, 8, 3]), m.tensor("y", [1, 8, 8, 3])
    m.op(BuiltinOperator.IF, [x], [y], then_subgraph=1, else_subgraph=7)
    m.inputs, m.outputs = [x], [y]
    m.subgraphs = [wt.ModelDef(name="then")]
    path = m.save(tmp_path / "dangling.tflite")
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    assert str(error.value) == f"{path}: an operator calls subgraph 7, the model has 2"


# ---------------------------------------------------------------------------
# quantized weights

def _single_conv(path, weight_def: dict, *, via=(), in_channels=3, op=BuiltinOperator.CONV_2D):
    """x -> [via operators on the weight] -> CONV_2D; returns the saved path."""
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, in_channels])
    w = m.tensor(**weight_def)
    for index, code in enumerate(via):
        out = m.tensor(f"w/{index}", weight_def["shape"],
                       TensorType.FLOAT32 if code == BuiltinOperator.DEQUANTIZE
                       else weight_def.get("type", TensorType.FLOAT32))
        m.op(code, [w], [out])
        w = out
    y = m.tensor("conv", [1, 8, 8, weight_def["shape"][0]])
    m.op(op, [x, w, -1], [y])
    m.inputs, m.outputs = [x], [y]
    return m.save(path)


def test_uint8_per_tensor_weights_with_zero_point(tmp_path):
    q = np.random.default_rng(4).integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    path = _single_conv(tmp_path / "u8.tflite", dict(
        name="w", shape=q.shape, type=TensorType.UINT8, data=q,
        quant=wt.Quant([0.0375], [131])))
    layer = open_model(path).layers[0]
    expected = ((q.astype(np.float64) - 131) * np.float64(np.float32(0.0375))).astype(np.float32)
    assert layer.op_type == "quantized_conv"
    assert layer.source_dtype == "uint8"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, expected.transpose(0, 3, 1, 2))


def test_int8_per_channel_through_dequantize_is_a_float_conv(tmp_path):
    q = np.random.default_rng(5).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.5, 0.25, 0.125, 0.03], np.float32)
    zero_point = np.array([0, 3, -2, 1])
    path = _single_conv(tmp_path / "dq.tflite", dict(
        name="w", shape=q.shape, type=TensorType.INT8, data=q,
        quant=wt.Quant(scale, zero_point, 0)), via=[BuiltinOperator.DEQUANTIZE])
    layer = open_model(path).layers[0]
    expected = ((q.astype(np.float64) - zero_point[:, None, None, None])
                * scale.astype(np.float64)[:, None, None, None]).astype(np.float32)
    assert layer.op_type == "conv"
    assert layer.source_dtype == "int8"
    np.testing.assert_array_equal(layer.weight, expected.transpose(0, 3, 1, 2))


def test_depthwise_per_channel_on_dimension_3(tmp_path):
    q = np.random.default_rng(6).integers(-127, 128, (1, 3, 3, 4)).astype(np.int8)
    scale = np.array([0.5, 0.25, 0.125, 2.0], np.float32)
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 4], TensorType.INT8, quant=wt.Quant([0.1], [0]))
    w = m.tensor("w", q.shape, TensorType.INT8, data=q, quant=wt.Quant(scale, [0] * 4, 3))
    y = m.tensor("dw", [1, 8, 8, 4], TensorType.INT8, quant=wt.Quant([0.1], [0]))
    m.op(BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, -1], [y])
    m.inputs, m.outputs = [x], [y]
    layer = open_model(m.save(tmp_path / "dwq.tflite")).layers[0]
    assert layer.op_type == "quantized_conv"
    for channel in range(4):
        np.testing.assert_array_equal(layer.filters()[channel],
                                      q[0, :, :, channel].astype(np.float32) * scale[channel])


def test_per_channel_scale_of_wrong_length(tmp_path):
    q = np.zeros((4, 3, 3, 3), np.int8)
    path = _single_conv(tmp_path / "bad_scale.tflite", dict(
        name="w", shape=q.shape, type=TensorType.INT8, data=q,
        quant=wt.Quant([0.1, 0.2, 0.3], None, 0)))
    _one_line_error(path, "quantized dimension 0")


def test_int4_weights_unpack_low_nibble_first(tmp_path):
    values = np.random.default_rng(7).integers(-8, 8, (4, 3, 3, 3)).astype(np.int8)
    flat = values.reshape(-1).astype(np.uint8) & 0x0F
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()  # 108 values
    path = _single_conv(tmp_path / "int4.tflite", dict(
        name="w", shape=values.shape, type=TensorType.INT4, data=packed,
        quant=wt.Quant([0.125], [0])), via=[BuiltinOperator.DEQUANTIZE])
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "int4"
    np.testing.assert_array_equal(layer.weight, (values.astype(np.float32) * 0.125)
                                  .transpose(0, 3, 1, 2))


def test_int2_weights_unpack_lowest_bits_first(tmp_path):
    """ai-edge-quantizer's 2-bit recipes: four signed values per byte (TensorType 19),
    as LiteRT unpacks them. 110 values: the last byte is half used."""
    values = np.random.default_rng(9).integers(-2, 2, (5, 2, 11, 1)).astype(np.int8)
    flat = np.concatenate([values.reshape(-1), np.zeros(2, np.int8)]).astype(np.uint8) & 3
    packed = (flat[0::4] | flat[1::4] << 2 | flat[2::4] << 4 | flat[3::4] << 6)
    path = _single_conv(tmp_path / "int2.tflite", dict(
        name="w", shape=values.shape, type=19, data=packed.astype(np.uint8).tobytes(),
        quant=wt.Quant([0.5], [0])), via=[BuiltinOperator.DEQUANTIZE])
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "int2"
    np.testing.assert_array_equal(layer.weight, (values.astype(np.float32) * 0.5)
                                  .transpose(0, 3, 1, 2))


def test_bfloat16_weights(tmp_path):
    values = np.random.default_rng(8).standard_normal((2, 3, 3, 3)).astype(np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    path = _single_conv(tmp_path / "bf16.tflite", dict(
        name="w", shape=values.shape, type=TensorType.BFLOAT16, data=bits.tobytes()))
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "bfloat16"
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(layer.weight, expected.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(layer.weight, values.transpose(0, 3, 1, 2), rtol=2**-7)


# ---------------------------------------------------------------------------
# sparse weights: densify on its own, then through DENSIFY in files

def _metadata(dims):
    """wt.DimMeta list -> the reader's (format, dense_size, segments, indices) tuples."""
    return [(d.format, d.dense_size, d.segments, d.indices) for d in dims]


def test_densify_worked_examples():
    """Hand-worked examples of TFLite's format (its format converter's test cases)."""
    dense = np.array([6, 0, 9, 8, 0, 0, 0, 0, 5, 0, 0, 7], np.float32).reshape(3, 4)
    # rows dense, columns CSR
    np.testing.assert_array_equal(reader.densify(
        np.array([6, 9, 8, 5, 7], np.float32), (3, 4), (0, 1), (),
        [(D, 3, None, None), (S, 0, [0, 3, 3, 5], [0, 2, 3, 0, 3])]), dense)
    # both CSR: the empty row 1 is absent from the row indices
    np.testing.assert_array_equal(reader.densify(
        np.array([6, 9, 8, 5, 7], np.float32), (3, 4), (0, 1), (),
        [(S, 0, [0, 2], [0, 2]), (S, 0, [0, 3, 5], [0, 2, 3, 0, 3])]), dense)
    # column-major traversal, all dense
    np.testing.assert_array_equal(reader.densify(
        np.array([6, 0, 5, 0, 0, 0, 9, 0, 0, 8, 0, 7], np.float32), (3, 4), (1, 0), (),
        [(D, 4, None, None), (D, 3, None, None)]), dense)
    # 2x2 blocks: block rows dense, block columns CSR, blocks dense and row-major
    block_dense = np.array([[1, 0, 2, 3], [0, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 6]],
                           np.float32)
    np.testing.assert_array_equal(reader.densify(
        np.array([1, 0, 0, 4, 2, 3, 0, 0, 5, 0, 0, 6], np.float32), (4, 4), (0, 1, 2, 3),
        (0, 1), [(D, 2, None, None), (S, 0, [0, 2, 3], [0, 1, 1]), (D, 2, None, None),
                 (D, 2, None, None)]), block_dense)


SPARSE_CASES = {
    "2d-csr": ((6, 5), dict(traversal_order=(0, 1), formats=(D, S))),
    "2d-csc": ((6, 5), dict(traversal_order=(1, 0), formats=(D, S))),
    "2d-dcsr": ((6, 5), dict(traversal_order=(0, 1), formats=(S, S))),
    "2d-block-1x4": ((4, 8), dict(traversal_order=(0, 1, 2, 3), formats=(D, S, D, D),
                                  block_map=(0, 1), block_size=(1, 4))),
    "4d-last-csr": ((8, 3, 3, 3), dict(traversal_order=(0, 1, 2, 3), formats=(D, D, D, S))),
    "4d-permuted": ((8, 3, 3, 3), dict(traversal_order=(3, 1, 2, 0), formats=(D, S, D, S))),
    "4d-all-csr": ((8, 3, 3, 3), dict(traversal_order=(0, 1, 2, 3), formats=(S, S, S, S),
                                      index_type=SparseIndexVector.Uint16Vector)),
    "4d-block-out": ((8, 3, 3, 3), dict(traversal_order=(0, 1, 2, 3, 4),
                                        formats=(D, S, D, D, D), block_map=(0,),
                                        block_size=(4,))),
    "4d-two-blocks": ((8, 3, 3, 6), dict(traversal_order=(0, 1, 2, 3, 5, 4),
                                         formats=(S, D, D, S, D, D), block_map=(0, 3),
                                         block_size=(2, 3))),
    "4d-block-reordered": ((8, 3, 3, 3), dict(traversal_order=(3, 0, 2, 1, 4),
                                              formats=(D, S, D, S, D), block_map=(0,),
                                              block_size=(2,))),
}


@pytest.mark.parametrize("case", SPARSE_CASES)
def test_densify_round_trip(case):
    shape, fmt = SPARSE_CASES[case]
    rng = np.random.default_rng(len(case))
    dense = rng.standard_normal(shape).astype(np.float32)
    dense[rng.random(shape) < 0.6] = 0
    dense[: shape[0] // 2] = 0  # empty (block-aligned) slices along dimension 0
    values, sparsity = wt.encode_sparse(dense, **fmt)
    assert values.size < dense.size
    result = reader.densify(values, shape, sparsity.traversal_order, sparsity.block_map,
                            _metadata(sparsity.dim_metadata))
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, dense)


def test_densify_all_zero_and_full():
    for dense in (np.zeros((4, 6), np.int8), np.arange(1, 25, dtype=np.int8).reshape(4, 6)):
        values, sp = wt.encode_sparse(dense, (0, 1), (D, S))
        np.testing.assert_array_equal(
            reader.densify(values, dense.shape, sp.traversal_order, sp.block_map,
                           _metadata(sp.dim_metadata)), dense)


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.update(values=a["values"][:-1]), "buffer holds"),
    (lambda a: a.update(traversal=(0, 0)), "permutation"),
    (lambda a: a["metadata"].__setitem__(1, (S, 0, [0, 3, 3, 9], [0, 2, 3, 0, 3])),
     "array_segments"),
    (lambda a: a["metadata"].__setitem__(1, (S, 0, [0, 3, 3], [0, 2, 3, 0, 3])),
     "array_segments"),
    (lambda a: a["metadata"].__setitem__(1, (S, 0, [0, 3, 2, 5], [0, 2, 3, 0, 3])),
     "out of order"),
    (lambda a: a["metadata"].__setitem__(1, (S, 0, [0, 3, 3, 5], [0, 2, 4, 0, 3])),
     "array_indices outside"),
    (lambda a: a["metadata"].__setitem__(0, (D, 4, None, None)), "DENSE of size 4"),
    (lambda a: a["metadata"].pop(), "dim_metadata"),
    (lambda a: a.update(shape=(3, 4000000)), "element limit"),
])
def test_densify_rejects_inconsistent_metadata(change, message):
    args = {"values": np.array([6, 9, 8, 5, 7], np.float32), "shape": (3, 4),
            "traversal": (0, 1),
            "metadata": [(D, 3, None, None), (S, 0, [0, 3, 3, 5], [0, 2, 3, 0, 3])]}
    change(args)
    with pytest.raises(ValueError, match=message):
        reader.densify(args["values"], args["shape"], args["traversal"], (), args["metadata"],
                       max_elements=10**6)


@pytest.mark.parametrize("case", ["4d-permuted", "4d-block-out", "4d-block-reordered"])
def test_sparse_formats_through_densify_in_a_file(tmp_path, case):
    network = wt.with_zeros(equivalence_network())
    _shape, fmt = SPARSE_CASES[case]
    path = wt.write_network(tmp_path / "sparse.tflite", network, "sparse",
                            sparse_format=fmt)
    layer = open_model(path).layers[0]
    np.testing.assert_array_equal(layer.weight, network[0].weight)


def test_sparse_int8_quantization_from_the_sparse_tensor(tmp_path):
    """An int8 sparse constant -> DENSIFY -> CONV_2D: the scale sits on the sparse tensor."""
    q = np.random.default_rng(9).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    q[q % 3 == 0] = 0
    values, sparsity = wt.encode_sparse(q, (0, 1, 2, 3), (D, D, D, S))
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    path = _single_conv(tmp_path / "sparse_int8.tflite", dict(
        name="w", shape=q.shape, type=TensorType.INT8, data=values, sparsity=sparsity,
        quant=wt.Quant(scale, [0] * 4, 0)), via=[BuiltinOperator.DENSIFY])
    layer = open_model(path).layers[0]
    assert layer.op_type == "quantized_conv"
    assert layer.source_dtype == "int8"
    expected = q.astype(np.float32) * scale[:, None, None, None]
    np.testing.assert_array_equal(layer.weight, expected.transpose(0, 3, 1, 2))


def test_sparse_float16_through_densify_and_dequantize(tmp_path):
    half = np.random.default_rng(10).standard_normal((4, 3, 3, 3)).astype(np.float16)
    half[np.abs(half) < 0.7] = 0
    values, sparsity = wt.encode_sparse(half, (0, 1, 2, 3, 4), (D, S, D, D, D),
                                        block_map=(0,), block_size=(2,))
    path = _single_conv(tmp_path / "sparse_half.tflite", dict(
        name="w", shape=half.shape, type=TensorType.FLOAT16, data=values,
        sparsity=sparsity), via=[BuiltinOperator.DENSIFY, BuiltinOperator.DEQUANTIZE])
    layer = open_model(path).layers[0]
    assert (layer.op_type, layer.source_dtype) == ("conv", "float16")
    np.testing.assert_array_equal(layer.weight, half.astype(np.float32).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------
# broken files: one line, never a traceback or a hang

def test_truncated_files(tmp_path):
    data = wt.network_model(equivalence_network()).serialize()
    for length in (0, 7, 12, 64, len(data) // 3, len(data) // 2, len(data) - 200):
        path = tmp_path / f"cut{length}.tflite"
        path.write_bytes(data[:length])
        _one_line_error(path)


def test_random_bytes_with_tfl3_identifier(tmp_path):
    rng = np.random.default_rng(11)
    for seed in range(40):
        blob = bytearray(rng.integers(0, 256, 64 + 97 * seed, dtype=np.uint8).tobytes())
        blob[4:8] = b"TFL3"
        if seed % 2:  # a root offset that points inside the file
            blob[0:4] = (16 + seed).to_bytes(4, "little")
        path = tmp_path / f"random{seed}.tflite"
        path.write_bytes(bytes(blob))
        assert find_reader(path) is reader
        _one_line_error(path)


def test_mutated_files_read_or_fail_with_one_line(tmp_path):
    """Flip bytes of a valid model: every result is a record or a ModelReadError."""
    data = wt.network_model(equivalence_network(), "sparse").serialize()
    rng = np.random.default_rng(12)
    failures = 0
    for trial in range(150):
        blob = bytearray(data)
        for position in rng.integers(8, len(blob), size=1 + trial % 4):
            blob[position] = int(rng.integers(0, 256))
        path = tmp_path / f"mutated{trial}.tflite"
        path.write_bytes(bytes(blob))
        try:
            open_model(path, Limits(max_tensor_elements=10**6))
        except ModelReadError as error:
            assert "\n" not in str(error)
            failures += 1
    assert failures > 0


def test_buffer_shorter_than_its_shape(tmp_path):
    weight = np.ones((4, 3, 3, 3), np.float32)
    path = _single_conv(tmp_path / "short.tflite", dict(
        name="w", shape=weight.shape, data=weight.tobytes()[:-4]))
    error = _one_line_error(path, "buffer holds 428 bytes")
    assert "'w'" in error.reason and "432 bytes" in error.reason


def test_buffer_longer_than_its_shape(tmp_path):
    path = _single_conv(tmp_path / "long.tflite", dict(
        name="w", shape=(4, 3, 3, 3), data=np.ones(109, np.float32).tobytes()))
    _one_line_error(path, "buffer holds 436 bytes")


def test_external_buffer_past_the_end_of_the_file(tmp_path):
    path = wt.write_network(tmp_path / "ext.tflite", equivalence_network(),
                            external_buffers=True)
    path.write_bytes(path.read_bytes()[:-64])
    _one_line_error(path, "beyond the end of the file")


def test_element_limit_checked_before_reading(tmp_path):
    path = wt.write_network(tmp_path / "net.tflite", equivalence_network())
    with pytest.raises(ModelReadError, match="element limit"):
        open_model(path, Limits(max_tensor_elements=100))


def test_sparse_tensor_with_bad_indices(tmp_path):
    q = np.ones((4, 3, 3, 3), np.float32)
    values, sparsity = wt.encode_sparse(q, (0, 1, 2, 3), (D, D, D, S))
    sparsity.dim_metadata[3].indices[5] = 7  # beyond the input channels
    path = _single_conv(tmp_path / "bad_sparse.tflite", dict(
        name="w", shape=q.shape, data=values, sparsity=sparsity),
        via=[BuiltinOperator.DENSIFY])
    _one_line_error(path, "array_indices outside")


def test_weight_computed_by_another_operator(tmp_path):
    weight = np.ones((4, 3, 3, 3), np.float32)
    path = _single_conv(tmp_path / "computed.tflite", dict(
        name="w", shape=weight.shape, data=weight), via=[BuiltinOperator.ABS])
    error = _one_line_error(path, "ABS")
    assert "'conv'" in error.reason


def test_weight_from_a_graph_input(tmp_path):
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 3])
    w = m.tensor("w", [4, 3, 3, 3])
    y = m.tensor("conv", [1, 8, 8, 4])
    m.op(BuiltinOperator.CONV_2D, [x, w, -1], [y])
    m.inputs, m.outputs = [x, w], [y]
    error = _one_line_error(m.save(tmp_path / "input_weight.tflite"), "not a constant")
    assert "'w'" in error.reason and "'conv'" in error.reason


def test_operator_cycle(tmp_path):
    m = wt.ModelDef()
    x = m.tensor("x", [1, 8, 8, 4])
    w = m.tensor("w", [4, 3, 3, 4], data=np.ones((4, 3, 3, 4), np.float32))
    a, b = m.tensor("a", [1, 8, 8, 4]), m.tensor("b", [1, 8, 8, 4])
    m.op(BuiltinOperator.CONV_2D, [b, w, -1], [a])
    m.op(BuiltinOperator.ADD, [x, a], [b])
    m.inputs, m.outputs = [x], [b]
    _one_line_error(m.save(tmp_path / "cycle.tflite"), "cycle")


def test_tflite_extension_without_identifier(tmp_path):
    path = tmp_path / "fake.tflite"
    path.write_bytes(b"\x10\0\0\0NOPE" + bytes(100))
    _one_line_error(path, "TFL3")


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    path = wt.write_network(tmp_path / "net.tflite", equivalence_network())
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(MissingDependencyError) as caught:
        open_model(path)
    assert "filterdb[tflite]" in caught.value.reason
    assert caught.value.path == os.fspath(path)


# ---------------------------------------------------------------------------
# recognition, CLI and build

def test_sniffed_by_content_whatever_the_extension(tmp_path):
    path = wt.write_network(tmp_path / "model.data", equivalence_network())
    head = path.read_bytes()[:64]
    assert reader.sniff(head, path)
    assert find_reader(path) is reader
    assert not reader.sniff(b"\x08\x07\x12\x00", path)
    assert [layer.name for layer in open_model(path).layers] == NAMES


def test_cli_check(tmp_path, cli):
    path = wt.write_network(tmp_path / "net.tflite", equivalence_network(), "int8")
    result = cli("check", path)
    assert result.returncode == 0, result.stderr
    for name in NAMES:
        assert name in result.stdout
    assert "6 conv layers" in result.stdout


def test_zoo_with_tflite_builds(tmp_path):
    zoo = tmp_path / "zoo"
    network = equivalence_network()
    wt.write_network(zoo / "float_net.tflite", network)
    wt.write_network(zoo / "int8_net.tflite", network, "int8")
    db = tmp_path / "db.h5"
    report = build(zoo, db)
    assert report.count("added") == 2, [o.reason for o in report.outcomes]
    models = filterdb.open(db).models.set_index("model")
    assert list(models.loc[:, "format"]) == ["tflite", "tflite"]
    assert models.loc["float_net", "weight_dtype"] == "float32"
    assert models.loc["int8_net", "weight_dtype"] == "int8"
    assert models.loc["int8_net", "Precision"] == "int8"
    assert models.loc["float_net", "Framework"] == "TensorFlow Lite"
    layers = filterdb.open(db).layers
    assert len(layers) == 12
    assert sorted(set(layers["op_type"])) == ["conv", "conv_transpose", "quantized_conv"]
