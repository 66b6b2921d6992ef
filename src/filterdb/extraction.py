"""Layers to filters: conv depths, per-layer rows and per-shape filter counts.

Pure functions over a :class:`~filterdb.records.ModelRecord`; no files involved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np

from .records import ConvLayer, ModelRecord

Shape = tuple[int, int]


def ordered_layers(record: ModelRecord) -> list[ConvLayer]:
    """Layers by graph depth, then graph order: the order filters are stored in."""
    return sorted(record.layers, key=lambda layer: (layer.depth or 0, layer.order))


def conv_depths(layers: list[ConvLayer]) -> list[tuple[int, float]]:
    """(conv_depth, conv_depth_norm) per layer.

    conv_depth is the rank of the layer's depth among the distinct depths that hold
    convolutions; conv_depth_norm divides it by (number of conv depths - 1), and is
    0 for a model whose convolutions all sit at one depth.

    Examples
    --------
    >>> from filterdb.records import ConvLayer
    >>> import numpy as np
    >>> w = np.zeros((1, 1, 3, 3), np.float32)
    >>> layers = [ConvLayer("a", "conv", w, 1, 1, depth=d) for d in (0, 4, 4, 9)]
    >>> conv_depths(layers)
    [(0, 0.0), (1, 0.5), (1, 0.5), (2, 1.0)]
    """
    levels = sorted({layer.depth or 0 for layer in layers})
    rank = {depth: index for index, depth in enumerate(levels)}
    top = max(len(levels) - 1, 1)
    return [(rank[layer.depth or 0], rank[layer.depth or 0] / top if len(levels) > 1 else 0.0)
            for layer in layers]


def shape_counts(layers: list[ConvLayer]) -> dict[Shape, int]:
    """Number of filters per kernel shape, e.g. ``{(3, 3): 1728, (1, 1): 512}``."""
    counts: Counter[Shape] = Counter()
    for layer in layers:
        counts[layer.kernel_shape] += layer.n_filters
    return dict(sorted(counts.items()))


def layer_rows(layers: list[ConvLayer], non_finite: list[dict] | None = None) -> list[dict]:
    """One row per layer, with its model-local filter offset within its kernel shape;
    ``non_finite``: each layer's :func:`non_finite_counts` where the caller has them."""
    offsets: Counter[Shape] = Counter()
    rows = []
    for index, (layer, (conv_depth, conv_depth_norm)) in enumerate(
            zip(layers, conv_depths(layers), strict=True)):
        shape = layer.kernel_shape
        rows.append({
            "layer": index,
            "name": layer.name,
            "op_type": layer.op_type,
            "depth": int(layer.depth or 0),
            "conv_depth": conv_depth,
            "conv_depth_norm": float(conv_depth_norm),
            "depth_is_approximate": bool(layer.depth_is_approximate),
            "c_out": layer.c_out,
            "c_in_per_group": layer.c_in_per_group,
            "groups": layer.groups,
            "depthwise": layer.depthwise,
            "kh": shape[0],
            "kw": shape[1],
            "stride_h": int(layer.strides[0]) if layer.strides else 1,
            "stride_w": int(layer.strides[-1]) if layer.strides else 1,
            "dilation_h": int(layer.dilations[0]) if layer.dilations else 1,
            "dilation_w": int(layer.dilations[-1]) if layer.dilations else 1,
            "source_dtype": layer.source_dtype,
            "n_filters": layer.n_filters,
            **(non_finite[index] if non_finite is not None
               else non_finite_counts(layer.weight)),
            "local_start": offsets[shape],
        })
        offsets[shape] += layer.n_filters
    return rows


def non_finite_counts(weight: np.ndarray) -> dict[str, int]:
    """``nan_count`` and ``inf_count`` of a weight."""
    if np.isfinite(weight).all():  # one pass for the usual case
        return {"nan_count": 0, "inf_count": 0}
    return {"nan_count": int(np.isnan(weight).sum()), "inf_count": int(np.isinf(weight).sum())}


def filters_by_shape(layers: list[ConvLayer], shape: Shape) -> Iterator[np.ndarray]:
    """The filters of one kernel shape, layer by layer, as float32 (n, kh, kw) arrays."""
    for layer in layers:
        if layer.kernel_shape == shape:
            yield layer.filters()


#: The framework a model file's format or ONNX exporter names, spelled as meta indexes
#: spell it: what a build fills in where the index leaves Framework empty.
_FRAMEWORKS = {"onnx": "ONNX", "pytorch": "PyTorch", "torchscript": "PyTorch", "keras": "Keras",
               "tflite": "TensorFlow Lite", "tf2onnx": "TensorFlow", "keras2onnx": "Keras",
               "paddle2onnx": "PaddlePaddle", "caffe2": "Caffe2", "onnx-caffe2": "Caffe2",
               "mxnet": "MXNet", "onnx-mxnet": "MXNet", "chainer": "Chainer",
               "onnx-chainer": "Chainer", "cntk": "CNTK", "skl2onnx": "scikit-learn",
               "tensorflow": "TensorFlow", "flax": "Flax"}


#: The ``format`` metadata of safetensors files, by the library that wrote them.
_SAFETENSORS_FORMATS = {"pt": "pytorch", "tf": "tensorflow", "flax": "flax", "np": "numpy"}


def framework_of(record: ModelRecord) -> str:
    """The framework a model comes from, as far as its file says: its format's, or for
    ONNX its exporter's (``pytorch 2.3`` -> PyTorch, else ONNX); else the format's name.

    Examples
    --------
    >>> framework_of(ModelRecord("m", "m.onnx", framework="onnx", producer="tf2onnx 1.16"))
    'TensorFlow'
    """
    key = record.framework
    words = (record.producer or "").split()
    if key == "onnx" and words:
        key = words[0].lower()
    elif key == "safetensors" and words[1:]:  # "safetensors (pt)": the format metadata
        key = _SAFETENSORS_FORMATS.get(words[1].strip("()"), key)
    return _FRAMEWORKS.get(key, _FRAMEWORKS.get(record.framework, record.framework))


def model_summary(record: ModelRecord, layers: list[ConvLayer]) -> dict:
    """Per-model figures: filters per shape, total, 3x3 share, precision, NaN/Inf counts."""
    counts = shape_counts(layers)
    total = sum(counts.values())
    dtypes = sorted({layer.source_dtype for layer in layers})
    return {
        "format": record.framework,
        "framework": framework_of(record),
        "producer": record.producer,
        "opset": int(record.opset) if record.opset is not None else -1,
        "depth": int(record.total_depth or 0),
        "n_layers": len(layers),
        "total_filters": total,
        "3x3_filter_share": counts.get((3, 3), 0) / total if total else 0.0,
        "weight_dtype": ",".join(dtypes),
        "shape_counts": counts,
        "operator_counts": dict(record.operator_counts),
    }
