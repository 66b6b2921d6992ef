"""Running a TFLite model once with the LiteRT interpreter (``ai-edge-litert``), in the
child of a verification run.

The builtin kernels run, without the XNNPACK delegate. Inputs whose signature has
unknown (-1) dimensions are resized to the defaults of
:func:`~filterdb.readers.running.fill_dims` (TFLite images are NHWC), or to the index's
``Input Shape``. Quantized integer inputs get 0 or 1 like any integer input. A model
with a custom operator LiteRT has no kernel for (MediaPipe's
``Convolution2DTransposeBias``) is not run: that says nothing about the model.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from ..records import NOT_RUN, RunResult
from .running import chosen_shapes, failure, fill_dims, outputs_result, random_input

#: LiteRT's message for a custom operator it has no kernel for.
_UNRESOLVED = re.compile(r"unresolved custom op: ([^\s.]+)")
#: LiteRT's message for TensorFlow operators (SELECT_TF_OPS, custom codes Flex...).
_FLEX = re.compile(r"Select TensorFlow op\(s\)|Regular TensorFlow ops are not supported")


def run(path: Path, input_shapes: list[list[int]] | None, seed: int) -> RunResult:
    """Run the model's main subgraph once on a seeded random input.

    Examples
    --------
    >>> run(Path("net.tflite"), None, 0).runs       # doctest: +SKIP
    'yes'
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # The builtin kernels without the default XNNPACK delegate: XNNPACK declines to
    # prepare some valid graphs (grouped convolutions), which says nothing about the model.
    kernels = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_path=os.fspath(path), num_threads=1,
                                  experimental_op_resolver_type=kernels)
    except Exception as error:  # the interpreter raises ValueError, RuntimeError, ...
        return failure("loading the model", error)
    details = interpreter.get_input_details()
    shapes = chosen_shapes(input_shapes, len(details),
                           lambda: [fill_dims(list(d["shape_signature"])) for d in details])
    if isinstance(shapes, RunResult):
        return shapes
    rng = np.random.default_rng(seed)
    try:
        for detail, shape in zip(details, shapes, strict=True):
            if tuple(detail["shape"]) != shape:
                interpreter.resize_tensor_input(detail["index"], list(shape))
        interpreter.allocate_tensors()
        for detail, shape in zip(details, shapes, strict=True):
            interpreter.set_tensor(detail["index"], random_input(rng, shape, detail["dtype"]))
    except Exception as error:
        if _FLEX.search(str(error)):  # TensorFlow's own kernels, which LiteRT lacks
            return RunResult(NOT_RUN, "LiteRT has no kernels for its TensorFlow (Flex) "
                                      "operators")
        custom = _UNRESOLVED.search(str(error))
        if custom:  # the runtime lacks an operator (MediaPipe's): says nothing of the model
            return RunResult(NOT_RUN, f"LiteRT has no kernel for its custom operator "
                                      f"{custom.group(1)}")
        return failure("preparing the input", error, shapes)
    try:
        began = time.perf_counter()
        interpreter.invoke()
        seconds = time.perf_counter() - began
    except Exception as error:
        return failure("the forward pass", error, shapes)
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    return outputs_result(shapes, outputs, seconds)
