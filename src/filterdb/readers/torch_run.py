"""Running a TorchScript archive once with torch (in the child of a verification run).

Archives are loaded with ``torch.jit.load`` only, never with ``torch.load``: running a
model must not unpickle code. TorchScript declares no input shapes, so the default
input is one image, ``1 x C x 224 x 224``, C being the in-channels of the archive's
first convolution, and when that does not run, 3 (a stem that rearranges its input
before the first conv); the index's ``Input Shape`` column overrides both. torch runs with
one thread, like onnxruntime.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..records import NOT_RUN, RUNS_NO, RunResult
from .running import CHANNELS, SPATIAL, failure, outputs_result, random_input


def run(path: Path, input_shapes: list[list[int]] | None, seed: int) -> RunResult:
    """Run the archive's ``forward`` once on a seeded random input.

    Examples
    --------
    >>> run(Path("net.pt"), [[1, 1, 28, 28]], 0).output_shapes     # doctest: +SKIP
    [(1, 10)]
    """
    import torch

    from .torch import from_script_module, load_script

    torch.set_num_threads(1)
    try:
        module = load_script(torch, path).eval()
    except Exception as error:  # torch raises RuntimeError, ValueError, ...
        return failure("loading the model", error)
    n_inputs = len(module.forward.schema.arguments) - 1  # without self
    if input_shapes is not None:
        attempts = [[tuple(shape) for shape in input_shapes]]
    elif n_inputs == 1:
        layers = sorted(from_script_module(module, path.stem).layers,
                        key=lambda layer: (layer.depth or 0, layer.order))
        channels = layers[0].c_in_per_group * layers[0].groups if layers else CHANNELS
        # a stem that rearranges its input first (TResNet's space-to-depth: 48 channels
        # into the first conv from 3) runs on an RGB image
        attempts = [[(1, c, SPATIAL, SPATIAL)] for c in dict.fromkeys([channels, CHANNELS])]
    else:
        return RunResult(NOT_RUN, f"forward takes {n_inputs} inputs: give their shapes "
                                  "in the index's Input Shape column")
    first = None
    for shapes in attempts:
        result = _forward(torch, module, shapes, seed)
        if result.runs != RUNS_NO:
            return result
        first = first or result
    return first


def _forward(torch, module, shapes: list[tuple[int, ...]], seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    inputs = [torch.from_numpy(random_input(rng, shape, np.float32)) for shape in shapes]
    try:
        with torch.no_grad():
            began = time.perf_counter()
            result = module(*inputs)
            seconds = time.perf_counter() - began
    except Exception as error:
        return failure("the forward pass", error, shapes)
    return outputs_result(shapes, [t.numpy() for t in _tensors(torch, result)], seconds)


def _tensors(torch, value) -> list:
    """The tensors of a forward result, nested tuples, lists and dicts flattened in order."""
    if isinstance(value, torch.Tensor):
        return [value.detach()]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(torch, item)]
    return []
