"""Small models for the run tests: ONNX graphs that run, fail or produce NaN, a
TorchScript archive and a state dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 5


def onnx_model(path: Path, in_channels: int = 3, weight_in: int | None = None,
               input_dims=(1, 3, 16, 16), nan: bool = False, custom_op: bool = False,
               seed: int = 0) -> Path:
    """conv 3x3 (4 filters) -> [custom op] -> global average pool -> flatten -> (N, 4).

    ``weight_in`` gives the conv weight other in-channels than the input has (a weight
    that does not match its graph); ``nan`` puts a NaN into the weight; ``custom_op``
    inserts an operator of an unknown domain; ``input_dims`` may hold names (symbolic).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, weight_in or in_channels, 3, 3)).astype(np.float32)
    if nan:
        weight[0, 0, 1, 1] = np.nan
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4)]
    current = "c"
    if custom_op:
        nodes.append(helper.make_node("Mystery", ["c"], ["m"], name="mystery",
                                      domain="com.example.custom"))
        current = "m"
    nodes += [helper.make_node("GlobalAveragePool", [current], ["p"], name="pool"),
              helper.make_node("Flatten", ["p"], ["y"], name="flatten")]
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w")])
    opsets = [helper.make_opsetid("", 17)]
    if custom_op:
        opsets.append(helper.make_opsetid("com.example.custom", 1))
    model = helper.make_model(graph, producer_name="filterdb-tests", opset_imports=opsets)
    model.ir_version = 8
    onnx.save_model(model, path)
    return path


def torch_module(in_channels: int = 3):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, CLASSES))


def torchscript_model(path: Path, in_channels: int = 3) -> Path:
    """A scripted conv net: (N, in_channels, H, W) -> (N, CLASSES)."""
    import torch

    torch.jit.script(torch_module(in_channels)).save(str(path))
    return path


def state_dict_model(path: Path) -> Path:
    import torch

    torch.save(torch_module().state_dict(), path)
    return path
