"""In-memory weights: a mapping of name -> array, or a live ``torch.nn.Module``.

A mapping has no graph, so layer order is the mapping's order and depth is that order
among conv layers, marked approximate. A live module gets its true depths from a
``torch.fx`` trace, falling back to registration order (marked approximate) when the
module cannot be traced.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import FilterDBError
from ..graph import GraphCycleError, Node, node_depths, total_depth
from ..records import CONV, CONV_TRANSPOSE, QUANTIZED_CONV, ConvLayer, ModelRecord


def _dtype_name(value) -> str:
    """The source precision: ``bfloat16``, ``qint8``, ``float16``... before conversion."""
    return str(value.dtype).removeprefix("torch.") if hasattr(value, "detach") else (
        np.asarray(value).dtype.name)


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if value.is_quantized:
            value = value.dequantize()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def from_arrays(weights: Mapping, name: str = "arrays") -> ModelRecord:
    """Every 4-D array of the mapping is a conv weight (c_out, c_in_per_group, kh, kw).

    Examples
    --------
    >>> record = from_arrays({"conv1.weight": np.ones((4, 3, 3, 3))})
    >>> record.layers[0].n_filters
    12
    """
    layers = []
    for key, value in weights.items():
        array = _as_numpy(value)
        if array.ndim != 4:
            continue
        layers.append(ConvLayer(name=str(key), op_type=CONV, weight=array.astype(np.float32),
                                c_out=array.shape[0], c_in_per_group=array.shape[1],
                                source_dtype=_dtype_name(value), depth=len(layers),
                                order=len(layers), depth_is_approximate=True))
    return ModelRecord(name=name, path="", framework="arrays", layers=layers)


def from_module(module, name: str | None = None) -> ModelRecord:
    """Conv layers of a live ``torch.nn.Module``, with true depths from a ``torch.fx`` trace.

    Conv layers are the module's ``Conv1d/2d/3d`` and ``ConvTranspose`` modules and
    their subclasses (including ``LazyConv2d`` once materialised), and torch's quantized
    conv modules (weights dequantized); only those with 4-D weights hold 2-D filters.
    Each is a leaf of the trace, and its depth is the depth of its ``call_module`` node
    in the traced graph (the first call, for a module called twice). When the module
    cannot be traced (data-dependent control flow, ...), depth is registration order
    among the conv layers and every layer is marked ``depth_is_approximate``; a conv
    module the traced forward never calls is placed after the traced ones, in
    registration order, and marked approximate.

    A TorchScript module is read from its own graph instead (framework ``torchscript``).

    Raises
    ------
    FilterDBError
        If a lazy convolution has not been materialised by a forward pass.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(8, 8, 3))
    >>> [(layer.name, layer.depth) for layer in from_module(net).layers]
    [('0', 0), ('2', 2)]
    """
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        from .torch import from_script_module

        return from_script_module(module, name or module.original_name)
    layers, keys = [], []
    for key, child in module.named_modules():
        if not _is_conv(torch, child):
            continue
        quantized = not isinstance(child, torch.nn.modules.conv._ConvNd)
        tensor = child.weight() if quantized else child.weight
        if isinstance(tensor, torch.nn.parameter.UninitializedParameter):
            raise FilterDBError(f"{key or type(child).__name__}: lazy convolution not "
                                "materialised; run one forward pass first")
        if tensor.dim() != 4:
            continue
        source_dtype = str(tensor.dtype).removeprefix("torch.")
        weight = _as_numpy(tensor.dequantize() if quantized else tensor).astype(np.float32)
        transposed = bool(getattr(child, "transposed", False))
        keys.append(key)
        layers.append(ConvLayer(
            name=key or type(child).__name__, op_type=(CONV_TRANSPOSE if transposed
                               else QUANTIZED_CONV if quantized else CONV),
            weight=weight, c_out=child.out_channels,
            c_in_per_group=child.in_channels // child.groups, groups=child.groups,
            strides=_pair(child.stride), dilations=_pair(child.dilation),
            source_dtype=source_dtype, depth=len(layers), order=len(layers),
            depth_is_approximate=True))
    traced = _traced_depths(torch, module, set(keys))
    depth = len(layers)
    if traced is not None:
        depths, depth = traced
        last = max(depths.values(), default=-1)
        for key, layer in zip(keys, layers, strict=True):
            if key in depths:
                layer.depth, layer.depth_is_approximate = depths[key], False
            else:  # never called by the traced forward
                last += 1
                layer.depth = last
    return ModelRecord(name=name or type(module).__name__, path="", framework="torch-module",
                       total_depth=depth, layers=layers)


def _is_conv(torch, module) -> bool:
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return True
    try:
        from torch.ao.nn.quantized.modules.conv import _ConvNd as QuantizedConv
    except ImportError:  # pragma: no cover - torch builds without quantization
        return False
    return isinstance(module, QuantizedConv)


def _pair(values) -> tuple[int, ...]:
    values = tuple(int(v) for v in values) if isinstance(values, tuple | list) else (int(values),)
    return values * 2 if len(values) == 1 else values


def _traced_depths(torch, module, conv_names: set[str]) -> tuple[dict[str, int], int] | None:
    """Graph depth of each traced conv module and the trace's total depth, or None when
    ``torch.fx`` cannot trace the module."""
    import torch.fx

    if _is_conv(torch, module):  # the module is one conv layer
        return {"": 0}, 1

    class ConvLeafTracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualified_name: str) -> bool:
            return _is_conv(torch, m) or super().is_leaf_module(m, qualified_name)

    try:
        graph = ConvLeafTracer().trace(module)
    except Exception:  # fx raises TraceError, TypeError, ... for untraceable code
        return None
    inputs, nodes, convs = [], [], []
    for fx_node in graph.nodes:
        if fx_node.op == "placeholder":
            inputs.append(fx_node.name)
            continue
        if fx_node.op == "call_module" and fx_node.target in conv_names:
            convs.append((len(nodes), fx_node.target))
        nodes.append(Node(fx_node.name, [n.name for n in fx_node.all_input_nodes],
                          [fx_node.name]))
    try:
        depths = node_depths(nodes, inputs)
    except GraphCycleError:  # pragma: no cover - fx graphs are acyclic
        return None
    result: dict[str, int] = {}
    for index, conv in convs:
        depth = depths[index] if depths[index] is not None else 0
        result[conv] = min(result.get(conv, depth), depth)
    return result, total_depth(depths)
