"""Running an ONNX model once with onnxruntime (in the child of a verification run).

onnxruntime runs on the CPU with one thread, so that parallel build workers do not
compete for cores and forward-pass times are comparable between models.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..records import NOT_RUN, RunResult
from .running import chosen_shapes, failure, fill_named_dims, outputs_result, random_input


def run(path: Path, input_shapes: list[list[int]] | None, seed: int) -> RunResult:
    """Run the model once on a seeded random input; see :mod:`filterdb.readers.running`.

    Examples
    --------
    >>> run(Path("net.onnx"), None, 0).output_shapes       # doctest: +SKIP
    [(1, 10)]
    """
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # errors only: warnings are not results
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(os.fspath(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail, InvalidGraph, ...
        return failure("loading the model", error)
    inputs = session.get_inputs()

    def defaults():
        channels = _first_conv_channels(path)
        return fill_named_dims([i.shape for i in inputs], [channels.get(i.name) for i in inputs])

    shapes = chosen_shapes(input_shapes, len(inputs), defaults)
    if isinstance(shapes, RunResult):
        return shapes
    rng = np.random.default_rng(seed)
    feeds = {}
    for graph_input, shape in zip(inputs, shapes, strict=True):
        dtype = _NUMPY_TYPES.get(graph_input.type)
        if dtype is None:
            return RunResult(NOT_RUN, f"input {graph_input.name!r} of type "
                                      f"{graph_input.type} cannot be generated")
        feeds[graph_input.name] = random_input(rng, shape, dtype)
    try:
        began = time.perf_counter()
        outputs = session.run(None, feeds)
        seconds = time.perf_counter() - began
    except Exception as error:
        return failure("the forward pass", error, shapes)
    return outputs_result(shapes, [np.asarray(out) for out in outputs], seconds)


_NUMPY_TYPES = {f"tensor({name})": np.dtype(dtype) for name, dtype in (
    ("float", "float32"), ("double", "float64"), ("float16", "float16"),
    ("int64", "int64"), ("int32", "int32"), ("int16", "int16"), ("int8", "int8"),
    ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
    ("bool", "bool"))}


def _first_conv_channels(path: Path) -> dict[str, int]:
    """Graph input name -> in-channels of a convolution reading it directly."""
    import onnx

    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    channels: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight = dims.get(node.input[1])
            if weight and len(weight) == 4:
                group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
                in_channels = weight[0] if node.op_type == "ConvTranspose" else weight[1] * group
                channels.setdefault(node.input[0], int(in_channels))
    return channels
