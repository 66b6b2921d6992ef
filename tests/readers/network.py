"""One small network, described format-free, that every format's writer saves.

Weights are in ONNX layout: Conv (c_out, c_in/groups, kh, kw), ConvTranspose
(c_in, c_out/groups, kh, kw). Every reader must give back exactly these filters,
``weight.reshape(-1, kh, kw)``, in this layer order. Layers form a chain with a
ReLU between them, so layer i has conv_depth i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ConvSpec:
    name: str
    kind: str  # "conv" or "conv_transpose"
    weight: np.ndarray  # ONNX layout, float32
    groups: int = 1
    stride: int = 1

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def c_in(self) -> int:
        w = self.weight
        return w.shape[0] if self.kind == "conv_transpose" else w.shape[1] * self.groups

    @property
    def c_out(self) -> int:
        w = self.weight
        return w.shape[1] * self.groups if self.kind == "conv_transpose" else w.shape[0]


INPUT_CHANNELS = 3
INPUT_SIZE = 16


def equivalence_network(seed: int = 0) -> list[ConvSpec]:
    """plain (asymmetric 3x3), strided, grouped, depthwise, transposed, 1x3 convs."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return [
        ConvSpec("plain", "conv", w(8, 3, 3, 3)),
        ConvSpec("strided", "conv", w(8, 8, 3, 3), stride=2),
        ConvSpec("grouped", "conv", w(8, 4, 3, 3), groups=2),
        ConvSpec("depthwise", "conv", w(8, 1, 3, 3), groups=8),
        ConvSpec("transposed", "conv_transpose", w(8, 4, 3, 3), stride=2),
        ConvSpec("wide", "conv", w(6, 4, 1, 3)),
    ]


def expected_filters(network: list[ConvSpec]) -> list[np.ndarray]:
    """Per layer, the (n, kh, kw) filters every reader must return."""
    return [spec.weight.reshape(-1, *spec.kernel) for spec in network]


def write_onnx(path: Path, network: list[ConvSpec]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, current = [], [], "x"
    for spec in network:
        inits.append(numpy_helper.from_array(spec.weight, f"{spec.name}.weight"))
        kh, kw = spec.kernel
        op = "ConvTranspose" if spec.kind == "conv_transpose" else "Conv"
        nodes.append(helper.make_node(op, [current, f"{spec.name}.weight"], [f"{spec.name}.y"],
                                      name=spec.name, group=spec.groups,
                                      strides=[spec.stride] * 2,
                                      pads=[kh // 2, kw // 2, kh // 2, kw // 2]))
        nodes.append(helper.make_node("Relu", [f"{spec.name}.y"], [f"{spec.name}.r"],
                                      name=f"{spec.name}_relu"))
        current = f"{spec.name}.r"
    graph = helper.make_graph(
        nodes, "equivalence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [1, INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, path)
    return path
