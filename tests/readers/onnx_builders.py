"""Small ONNX model builders for the reader tests.

Everything is built with ``onnx.helper`` / ``onnx.numpy_helper`` (no torch) and
written into a folder the caller owns (pytest's ``tmp_path``). Weights come from
seeded generators, so every builder is deterministic. Builders that describe a
valid model run ``onnx.checker`` on it, so the tests read models a real exporter
could have written; deliberately broken models skip the check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
PRODUCER_NAME = "filterdb-tests"
PRODUCER_VERSION = "0.1"
SPATIAL = 8  # height and width of every image input


# ---------------------------------------------------------------------------
# values

def random_weight(shape: Sequence[int], seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Standard-normal values of ``shape`` from a seeded generator, cast to ``dtype``."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def random_ints(shape: Sequence[int], dtype, seed: int = 0) -> np.ndarray:
    """Integers over the full range of ``dtype`` from a seeded generator."""
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(
        info.min, info.max, size=tuple(shape), endpoint=True, dtype=dtype)


def random_scales(size: int, seed: int = 0) -> np.ndarray:
    """Positive float32 scales in [0.01, 0.1)."""
    return np.random.default_rng(seed).uniform(0.01, 0.1, size=size).astype(np.float32)


# ---------------------------------------------------------------------------
# graph pieces

def tensor(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def image_input(name: str, channels: int, elem_type=TensorProto.FLOAT, rank: int = 4):
    shape = [1, channels] + [SPATIAL] * (rank - 2)
    return helper.make_tensor_value_info(name, elem_type, shape)


def output(name: str, elem_type=TensorProto.FLOAT, rank: int = 4):
    """A graph output of known rank and unknown dimensions."""
    return helper.make_tensor_value_info(name, elem_type, [None] * rank)


def conv(name: str, x: str, w: str, y: str, op_type: str = "Conv", **attrs):
    return helper.make_node(op_type, [x, w], [y], name=name, **attrs)


def constant(name: str, out: str, array):
    return helper.make_node("Constant", [], [out], name=name, value=tensor(out, array))


def make_model(nodes: Iterable, inputs: Iterable, outputs: Iterable,
               initializers: Iterable = (), *, opset: int = OPSET,
               check: bool = True) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs),
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name=PRODUCER_NAME, producer_version=PRODUCER_VERSION)
    if check:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write the serialized model to ``path`` as it is (no external-data rewriting)."""
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


# ---------------------------------------------------------------------------
# whole models

def single_conv(path: Path, weight: np.ndarray, *, op_type: str = "Conv",
                group: int = 1, in_channels: int | None = None, check: bool = True,
                **attrs) -> Path:
    """input -> Conv (or ConvTranspose) with ``weight`` as an initializer -> output.

    ``in_channels`` defaults to what the weight layout implies.
    """
    if in_channels is None:
        in_channels = (weight.shape[0] if op_type == "ConvTranspose"
                       else weight.shape[1] * group)
    rank = weight.ndim
    elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
    node = conv("conv0", "x", "W", "y", op_type=op_type, group=group, **attrs)
    model = make_model([node], [image_input("x", in_channels, elem, rank)],
                       [output("y", elem, rank)], [tensor("W", weight)], check=check)
    return save(model, path)


def chain_conv_relu_conv(path: Path, seed: int = 0) -> tuple[Path, list[np.ndarray]]:
    """input -> Conv -> Relu -> Conv -> output; returns the two weights."""
    w0 = random_weight((4, 3, 3, 3), seed)
    w1 = random_weight((5, 4, 3, 3), seed + 1)
    nodes = [conv("conv0", "x", "W0", "a"),
             helper.make_node("Relu", ["a"], ["r"], name="relu0"),
             conv("conv1", "r", "W1", "y")]
    model = make_model(nodes, [image_input("x", 3)], [output("y")],
                       [tensor("W0", w0), tensor("W1", w1)])
    return save(model, path), [w0, w1]


def constant_weight_conv(path: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Weight and bias from Constant nodes and no initializer at all (PaddlePaddle style)."""
    weight = random_weight((4, 3, 3, 3), seed)
    bias = random_weight((4,), seed + 1)
    nodes = [constant("const_w", "W", weight),
             constant("const_b", "B", bias),
             helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv0", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [image_input("x", 3)], [output("y")])
    assert not model.graph.initializer
    return save(model, path), weight, bias


def cast_weight_conv(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """float16 initializer -> Cast(to=float) -> Conv weight."""
    weight16 = random_weight((4, 3, 3, 3), seed, np.float16)
    nodes = [helper.make_node("Cast", ["W16"], ["W"], name="cast_w", to=TensorProto.FLOAT),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", 3)], [output("y")], [tensor("W16", weight16)])
    return save(model, path), weight16


def identity_weight_conv(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """float32 initializer -> Identity -> Identity -> Conv weight."""
    weight = random_weight((4, 3, 3, 3), seed)
    nodes = [helper.make_node("Identity", ["W0"], ["W1"], name="id0"),
             helper.make_node("Identity", ["W1"], ["W"], name="id1"),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", 3)], [output("y")], [tensor("W0", weight)])
    return save(model, path), weight


def dequantized_weight_conv(path: Path, weight_q: np.ndarray, scale: np.ndarray,
                            zero_point: np.ndarray, axis: int | None = None) -> Path:
    """int8 initializer -> DequantizeLinear(scale, zero_point[, axis]) -> Conv weight."""
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wzp"], ["W"],
                              name="dq_w", **attrs),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", weight_q.shape[1])], [output("y")],
                       [tensor("Wq", weight_q), tensor("Ws", scale), tensor("Wzp", zero_point)])
    return save(model, path)


def conv_integer(path: Path, weight: np.ndarray, w_zero_point: np.ndarray) -> Path:
    """ConvInteger(x uint8, w uint8, x_zero_point, w_zero_point) -> int32 output."""
    node = helper.make_node("ConvInteger", ["x", "W", "xzp", "Wzp"], ["y"], name="convint0")
    model = make_model([node], [image_input("x", weight.shape[1], TensorProto.UINT8)],
                       [output("y", TensorProto.INT32)],
                       [tensor("W", weight), tensor("xzp", np.uint8(128)),
                        tensor("Wzp", w_zero_point)])
    return save(model, path)


def qlinear_conv(path: Path, weight: np.ndarray, w_scale: np.ndarray,
                 w_zero_point: np.ndarray) -> Path:
    """QLinearConv with a uint8 input and an int8 weight quantised per output channel."""
    node = helper.make_node(
        "QLinearConv", ["x", "xs", "xzp", "W", "Ws", "Wzp", "ys", "yzp"], ["y"],
        name="qconv0")
    inits = [tensor("xs", np.float32(0.02)), tensor("xzp", np.uint8(128)),
             tensor("W", weight), tensor("Ws", w_scale), tensor("Wzp", w_zero_point),
             tensor("ys", np.float32(0.05)), tensor("yzp", np.uint8(128))]
    model = make_model([node], [image_input("x", weight.shape[1], TensorProto.UINT8)],
                       [output("y", TensorProto.UINT8)], inits)
    return save(model, path)


def bfloat16_tensor(name: str, values: np.ndarray) -> tuple[TensorProto, np.ndarray]:
    """A BFLOAT16 tensor of ``values`` (rounded/truncated) and its exact float32 values.

    Uses ml_dtypes when it imports; otherwise builds the raw uint16 bit patterns
    by hand (truncating the low 16 bits of each float32).
    """
    values = np.asarray(values, dtype=np.float32)
    try:
        import ml_dtypes
    except ImportError:
        bits = (values.view(np.uint32) >> 16).astype(np.uint16)
        proto = TensorProto()
        proto.name = name
        proto.data_type = TensorProto.BFLOAT16
        proto.dims.extend(values.shape)
        proto.raw_data = bits.astype("<u2").tobytes()
        expected = (bits.astype(np.uint32) << 16).view(np.float32)
        return proto, expected
    as_bf16 = values.astype(ml_dtypes.bfloat16)
    proto = numpy_helper.from_array(as_bf16, name)
    assert proto.data_type == TensorProto.BFLOAT16
    return proto, as_bf16.astype(np.float32)


def typed_weight_conv(path: Path, weight_proto: TensorProto, elem_type: int,
                      in_channels: int, check: bool = True) -> Path:
    """input of ``elem_type`` -> Conv with ``weight_proto`` as its initializer."""
    node = conv("conv0", "x", weight_proto.name, "y")
    model = make_model([node], [image_input("x", in_channels, elem_type)],
                       [output("y", elem_type)], [weight_proto], check=check)
    return save(model, path)


def parallel_branches(path: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """x -> conv_a, x -> conv_b (same depth) -> Add -> conv_c."""
    weights = {"conv_a": random_weight((4, 3, 3, 3), seed),
               "conv_b": random_weight((4, 3, 3, 3), seed + 1),
               "conv_c": random_weight((2, 4, 3, 3), seed + 2)}
    nodes = [conv("conv_a", "x", "Wa", "a", pads=[1, 1, 1, 1]),
             conv("conv_b", "x", "Wb", "b", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"], name="add0"),
             conv("conv_c", "s", "Wc", "y")]
    inits = [tensor("Wa", weights["conv_a"]), tensor("Wb", weights["conv_b"]),
             tensor("Wc", weights["conv_c"])]
    model = make_model(nodes, [image_input("x", 3)], [output("y")], inits)
    return save(model, path), weights


def unequal_branches(path: Path, seed: int = 0) -> Path:
    """x -> Relu -> conv_a; x -> conv_b; Add(conv_a, conv_b) -> conv_c.

    Depths: relu 0, conv_a 1, conv_b 0, add 2, conv_c 3.
    """
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             conv("conv_a", "r", "Wa", "a", pads=[1, 1, 1, 1]),
             conv("conv_b", "x", "Wb", "b", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"], name="add0"),
             conv("conv_c", "s", "Wc", "y")]
    inits = [tensor("Wa", random_weight((4, 3, 3, 3), seed)),
             tensor("Wb", random_weight((4, 3, 3, 3), seed + 1)),
             tensor("Wc", random_weight((2, 4, 3, 3), seed + 2))]
    model = make_model(nodes, [image_input("x", 3)], [output("y")], inits)
    return save(model, path)


def computed_weight_conv(path: Path, seed: int = 0) -> Path:
    """Constant -> Mul -> Add computes the conv weight: not a plain constant chain."""
    nodes = [constant("const_w", "Wraw", random_weight((4, 3, 3, 3), seed)),
             constant("const_k", "k", np.float32(0.5)),
             helper.make_node("Mul", ["Wraw", "k"], ["Wm"], name="mul_w"),
             helper.make_node("Add", ["Wm", "k"], ["W"], name="add_w"),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", 3)], [output("y")])
    return save(model, path)


def conv_with_constant_side_branch(path: Path, seed: int = 0) -> Path:
    """x -> Conv -> Relu -> y, plus Constant -> Mul -> Add -> side (no real input)."""
    nodes = [conv("conv0", "x", "W", "c"),
             helper.make_node("Relu", ["c"], ["y"], name="relu0"),
             constant("const_s", "s0", random_weight((3,), seed + 1)),
             helper.make_node("Mul", ["s0", "s0"], ["s1"], name="mul_side"),
             helper.make_node("Add", ["s1", "s0"], ["s2"], name="add_side"),
             helper.make_node("Neg", ["s2"], ["side"], name="neg_side")]
    model = make_model(nodes, [image_input("x", 3)], [output("y"), output("side", rank=1)],
                       [tensor("W", random_weight((4, 3, 3, 3), seed))])
    return save(model, path)


def weight_from_graph_input(path: Path) -> Path:
    """The conv weight is a real graph input, not a constant."""
    node = conv("conv0", "x", "W", "y")
    model = make_model(
        [node],
        [image_input("x", 3), helper.make_tensor_value_info("W", TensorProto.FLOAT,
                                                            [4, 3, 3, 3])],
        [output("y")])
    return save(model, path)


def cyclic(path: Path, seed: int = 0) -> Path:
    """Add(x, r) -> a; Relu(a) -> r; Conv(r) -> y: a cycle between add0 and relu0."""
    nodes = [helper.make_node("Add", ["x", "r"], ["a"], name="add0"),
             helper.make_node("Relu", ["a"], ["r"], name="relu0"),
             conv("conv0", "r", "W", "y")]
    model = make_model(nodes, [image_input("x", 3)], [output("y")],
                       [tensor("W", random_weight((4, 3, 3, 3), seed))], check=False)
    return save(model, path)


def short_raw_data(path: Path, seed: int = 0) -> Path:
    """A float32 initializer whose dims (4, 3, 3, 3) need 432 bytes but holds 216."""
    weight = random_weight((4, 3, 3, 3), seed)
    proto = TensorProto()
    proto.name = "W"
    proto.data_type = TensorProto.FLOAT
    proto.dims.extend(weight.shape)
    proto.raw_data = weight.tobytes()[: weight.nbytes // 2]
    node = conv("conv0", "x", "W", "y")
    model = make_model([node], [image_input("x", 3)], [output("y")], [proto], check=False)
    return save(model, path)


def conv1d(path: Path, seed: int = 0) -> Path:
    """A 1-D convolution: weight (4, 2, 3)."""
    return single_conv(path, random_weight((4, 2, 3), seed))


def with_external_weight(path: Path, seed: int = 0, location: str = "w.bin"
                         ) -> tuple[Path, np.ndarray]:
    """A single 3x3 conv saved with all tensors in the external file ``location``."""
    weight = random_weight((8, 3, 3, 3), seed)
    node = conv("conv0", "x", "W", "y")
    model = make_model([node], [image_input("x", 3)], [output("y")], [tensor("W", weight)])
    onnx.save_model(model, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return Path(path), weight


def relocate_external_data(path: Path, location: str) -> None:
    """Rewrite the ``location`` of every external tensor of the model at ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    save(model, path)


def block_dequantized_weight_conv(path: Path, weight_q: np.ndarray, scale: np.ndarray,
                                  zero_point: np.ndarray, axis: int, block_size: int) -> Path:
    """int8 initializer -> blocked DequantizeLinear (opset 21 ``block_size``) -> Conv weight."""
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wzp"], ["W"], name="dq_w",
                              axis=axis, block_size=block_size),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", weight_q.shape[1])], [output("y")],
                       [tensor("Wq", weight_q), tensor("Ws", scale), tensor("Wzp", zero_point)])
    return save(model, path)


def int4_dequantized_weight_conv(path: Path, values: np.ndarray, scale: np.float32) -> Path:
    """INT4 initializer (two values packed per byte) -> DequantizeLinear -> Conv weight.

    ``values`` are small integers in [-8, 7]; needs ml_dtypes (onnx >= 1.16 ships with it).
    """
    import ml_dtypes

    weight_q = numpy_helper.from_array(values.astype(ml_dtypes.int4), "Wq")
    assert weight_q.data_type == TensorProto.INT4
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "Ws"], ["W"], name="dq_w"),
             conv("conv0", "x", "W", "y")]
    model = make_model(nodes, [image_input("x", values.shape[1])], [output("y")],
                       [weight_q, tensor("Ws", scale)])
    return save(model, path)
