"""Large ONNX initializers cut from the parser's input and read from the file instead."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from filterdb.errors import ModelReadError
from filterdb.readers import onnx as onnx_reader
from filterdb.readers import open_model
from filterdb.readers.onnx_wire import MIN_CUT_BYTES, cut_initializers

from . import onnx_builders as ob

BIG = (64, 32, 3, 3)  # 73,728 bytes of float32: above MIN_CUT_BYTES


def _two_convs(seed: int = 0) -> onnx.ModelProto:
    """x (32 channels) -> conv0 (big float32 weight) -> conv1 (big float16 weight)
    -> conv2 (small weight); plus a big initializer that no conv reads."""
    big = ob.random_weight(BIG, seed)
    half = ob.random_weight((64, 64, 3, 3), seed + 1).astype(np.float16)
    small = ob.random_weight((4, 64, 3, 3), seed + 2)
    unused = np.arange(20_000, dtype=np.float32)
    nodes = [ob.conv("conv0", "x", "W0", "a"), ob.conv("conv1", "a", "W1", "b"),
             ob.conv("conv2", "b", "W2", "y")]
    initializers = [ob.tensor("W0", big), ob.tensor("W1", half), ob.tensor("W2", small),
                    ob.tensor("unused", unused)]
    graph = helper.make_graph(nodes, "g", [ob.image_input("x", 32)], [ob.output("y")],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ob.OPSET)])


def test_cut_bytes_parse_to_the_model_without_the_cut_raw_data():
    model = _two_convs()
    data = model.SerializeToString()
    small, spans = cut_initializers(data)

    by_name = {tensor.name: tensor for tensor in model.graph.initializer}
    assert set(spans) == {"W0", "W1", "unused"}  # W2 holds 9,216 bytes: it stays
    assert all(by_name[name].raw_data and len(by_name[name].raw_data) >= MIN_CUT_BYTES
               for name in spans)
    for name, span in spans.items():
        assert data[span.offset:span.offset + span.length] == by_name[name].raw_data
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    for tensor in expected.graph.initializer:
        if tensor.name in spans:
            tensor.ClearField("raw_data")
    parsed = onnx.ModelProto()
    parsed.ParseFromString(small)
    assert parsed == expected
    assert len(small) <= len(data) - sum(span.length for span in spans.values())


def test_reader_values_equal_onnx_load(tmp_path):
    path = ob.save(_two_convs(seed=5), tmp_path / "big.onnx")
    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    record = open_model(path)

    assert [layer.name for layer in record.layers] == ["conv0", "conv1", "conv2"]
    for layer, name in zip(record.layers, ["W0", "W1", "W2"], strict=True):
        assert layer.weight.dtype == np.float32
        np.testing.assert_array_equal(layer.weight, arrays[name].astype(np.float32))
    assert [layer.source_dtype for layer in record.layers] == ["float32", "float16", "float32"]


def test_packed_int4_weight_read_from_the_file(tmp_path):
    """4-bit values go through onnx's own unpacking after the bytes are read."""
    values = np.random.default_rng(3).integers(-8, 8, size=(256, 64, 3, 3))
    path = ob.int4_dequantized_weight_conv(tmp_path / "int4.onnx", values, np.float32(0.5))
    assert "Wq" in cut_initializers(path.read_bytes())[1]

    (layer,) = open_model(path).layers
    assert layer.source_dtype == "int4"
    np.testing.assert_array_equal(layer.weight, values.astype(np.float32) * 0.5)


def test_cut_raw_data_shorter_than_its_dims_is_one_line(tmp_path):
    weight = ob.random_weight((128, 32, 3, 3))
    proto = ob.tensor("W", weight)
    proto.raw_data = weight.tobytes()[: weight.nbytes // 2]
    model = ob.make_model([ob.conv("conv0", "x", "W", "y")], [ob.image_input("x", 32)],
                          [ob.output("y")], [proto], check=False)
    path = ob.save(model, tmp_path / "short.onnx")
    assert cut_initializers(path.read_bytes())[1]["W"].length == weight.nbytes // 2

    with pytest.raises(ModelReadError) as error:
        open_model(path)
    message = str(error.value)
    assert str(path) in message and "holds 73728 bytes" in message and "\n" not in message


def test_file_truncated_after_parsing_is_one_line(tmp_path, monkeypatch):
    path = ob.save(_two_convs(), tmp_path / "changing.onnx")

    def cut_then_truncate(data):
        found = cut_initializers(data)
        with open(path, "r+b") as handle:
            handle.truncate(1_000)
        return found

    monkeypatch.setattr(onnx_reader, "cut_initializers", cut_then_truncate)
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    assert str(path) in str(error.value) and "changed while it was read" in str(error.value)


def test_model_with_local_functions_is_parsed_whole(tmp_path):
    """The inliner copies the graph: it gets every initializer with its data."""
    weight = ob.random_weight(BIG, seed=9)
    body = [helper.make_node("Conv", ["x", "W"], ["y"], name="inner", pads=[1, 1, 1, 1])]
    function = helper.make_function("local", "Block", ["x", "W"], ["y"], body,
                                    [helper.make_opsetid("", ob.OPSET)])
    call = helper.make_node("Block", ["x", "W0"], ["y"], name="block", domain="local")
    graph = helper.make_graph([call], "g", [ob.image_input("x", 32)], [ob.output("y")],
                              initializer=[ob.tensor("W0", weight)])
    model = helper.make_model(graph, functions=[function], opset_imports=[
        helper.make_opsetid("", ob.OPSET), helper.make_opsetid("local", 1)])
    path = ob.save(model, tmp_path / "functions.onnx")
    assert "W0" in cut_initializers(path.read_bytes())[1]

    (layer,) = open_model(path).layers
    np.testing.assert_array_equal(layer.weight, weight)


def test_subgraph_initializer_of_a_cut_name_is_its_own(tmp_path):
    """Only the main graph's initializers are cut; a branch's own tensor of the same
    name is read from the branch."""
    outer, inner = ob.random_weight(BIG, seed=1), ob.random_weight((4, 32, 3, 3), seed=2)
    branch = helper.make_graph([ob.conv("inner_conv", "x", "W", "t")], "then", [],
                               [ob.output("t")], initializer=[ob.tensor("W", inner)])
    other = helper.make_graph([ob.conv("other_conv", "x", "W", "e")], "else", [],
                              [ob.output("e")])
    model = ob.make_model(
        [helper.make_node("If", ["cond"], ["branch"], name="choose", then_branch=branch,
                          else_branch=other)],
        [ob.image_input("x", 32), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [ob.output("branch")], [ob.tensor("W", outer)], check=False)
    path = ob.save(model, tmp_path / "shadow.onnx")

    layers = {layer.name: layer.weight for layer in open_model(path).layers}
    np.testing.assert_array_equal(layers["choose/then_branch/inner_conv"], inner)
    np.testing.assert_array_equal(layers["choose/else_branch/other_conv"], outer)


def _with_fields(data: bytes, *extra: bytes) -> bytes:
    return data + b"".join(extra)


@pytest.mark.parametrize("case", ["nothing large", "duplicate name", "two graph fields",
                                  "truncated", "group wire type", "unnamed"])
def test_bytes_it_does_not_expect_go_to_the_full_parser(case):
    model = _two_convs()
    if case == "nothing large":
        data = ob.make_model([ob.conv("c", "x", "W", "y")], [ob.image_input("x", 3)],
                             [ob.output("y")], [ob.tensor("W", ob.random_weight((4, 3, 3, 3)))]
                             ).SerializeToString()
    elif case == "duplicate name":
        model.graph.initializer[2].name = "W0"
        data = model.SerializeToString()
    elif case == "two graph fields":
        graph = helper.make_graph([], "more", [], []).SerializeToString()
        data = _with_fields(model.SerializeToString(), bytes([7 << 3 | 2, len(graph)]), graph)
    elif case == "truncated":
        data = model.SerializeToString()[:-50_000]
    elif case == "group wire type":
        data = _with_fields(model.SerializeToString(), bytes([20 << 3 | 3]))
    else:
        model.graph.initializer[0].ClearField("name")
        data = model.SerializeToString()
    assert cut_initializers(data) is None
