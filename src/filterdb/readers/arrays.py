"""In-memory weights: a mapping of name -> array, or a live ``torch.nn.Module``.

Neither has a file or a graph here, so layer order is the mapping's (or module
registration) order and depth is that order among conv layers, marked approximate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import FilterDBError
from ..records import CONV, CONV_TRANSPOSE, ConvLayer, ModelRecord


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
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
                                source_dtype=array.dtype.name, depth=len(layers),
                                order=len(layers), depth_is_approximate=True))
    return ModelRecord(name=name, path="", framework="arrays", layers=layers)


def from_module(module, name: str | None = None) -> ModelRecord:
    """Conv layers of a live ``torch.nn.Module`` (subclasses included), in registration
    order; lazy convolutions must have been run once to materialise their weights."""
    import torch

    layers = []
    for key, child in module.named_modules():
        if not isinstance(child, torch.nn.modules.conv._ConvNd):
            continue
        if isinstance(child.weight, torch.nn.parameter.UninitializedParameter):
            raise FilterDBError(f"{key or type(child).__name__}: lazy convolution not "
                                "materialised; run one forward pass first")
        weight = _as_numpy(child.weight)
        if weight.ndim != 4:
            continue
        transposed = bool(getattr(child, "transposed", False))
        layers.append(ConvLayer(
            name=key, op_type=CONV_TRANSPOSE if transposed else CONV,
            weight=weight.astype(np.float32), c_out=child.out_channels,
            c_in_per_group=child.in_channels // child.groups, groups=child.groups,
            strides=tuple(child.stride), dilations=tuple(child.dilation),
            source_dtype=str(child.weight.dtype).removeprefix("torch."),
            depth=len(layers), order=len(layers), depth_is_approximate=True))
    return ModelRecord(name=name or type(module).__name__, path="", framework="torch-module",
                       layers=layers)
