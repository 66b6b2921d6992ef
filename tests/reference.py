"""An independent reading of ONNX conv filters, written for the tests.

It uses only ``onnx`` and ``onnx.numpy_helper`` (no filterdb code), so tests can
compare what a build stored against what the model file holds:

* weights come from initializers or ``Constant`` nodes (PaddlePaddle exports
  keep every weight in a ``Constant`` node and have no initializers);
* a node's depth is the longest path from a node that reads a real graph input
  (an input that is not an initializer); nodes fed only by constants have no
  depth. ONNX requires nodes in topological order, so one pass in graph order
  computes it (the pass asserts that order);
* layers are ordered by (depth, position in the graph), conv_depth is the rank
  of a layer's depth among the distinct depths that hold conv layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

CONV_OPS = ("Conv", "ConvTranspose")


@dataclass
class RefLayer:
    name: str
    op_type: str
    position: int
    depth: int
    conv_depth: int
    weight: np.ndarray

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    def filters(self) -> np.ndarray:
        kh, kw = self.kernel
        return self.weight.astype(np.float32).reshape(-1, kh, kw)


@dataclass
class RefModel:
    layers: list[RefLayer]
    total_depth: int
    op_counts: dict[str, int]
    producer: str
    opset: int

    def filters(self, shape=(3, 3), conv_depth: int | None = None) -> np.ndarray:
        """Filters of ``shape`` in storage order, optionally of one conv depth only."""
        blocks = [layer.filters() for layer in self.layers
                  if layer.kernel == tuple(shape)
                  and (conv_depth is None or layer.conv_depth == conv_depth)]
        if not blocks:
            return np.zeros((0, *shape), np.float32)
        return np.concatenate(blocks)

    def count(self, shape=(3, 3)) -> int:
        return sum(int(np.prod(layer.weight.shape[:2])) for layer in self.layers
                   if layer.kernel == tuple(shape))


def reference_model(path: str | Path) -> RefModel:
    model = onnx.load(str(path))
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attribute.t)
    real_inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}

    known = set(real_inputs) | {t.name for t in graph.initializer}
    tensor_depth: dict[str, int | None] = {}
    node_depth: list[int | None] = []
    for node in graph.node:
        for name in node.input:
            assert not name or name in known, f"graph not in topological order at {name}"
        candidates = [0] if any(name in real_inputs for name in node.input) else []
        candidates += [tensor_depth[name] + 1 for name in node.input
                       if tensor_depth.get(name) is not None]
        depth = max(candidates) if candidates else None
        for out in node.output:
            tensor_depth[out] = depth
            known.add(out)
        node_depth.append(depth)

    convs = []
    for position, node in enumerate(graph.node):
        if node.op_type not in CONV_OPS:
            continue
        weight = constants[node.input[1]]
        if weight.ndim != 4:
            continue
        convs.append((node_depth[position] or 0, position, node, weight))
    convs.sort(key=lambda item: (item[0], item[1]))
    levels = sorted({depth for depth, *_ in convs})
    layers = [RefLayer(node.name, node.op_type, position, depth, levels.index(depth), weight)
              for depth, position, node, weight in convs]
    op_counts: dict[str, int] = {}
    for node in graph.node:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return RefModel(layers=layers,
                    total_depth=len({d for d in node_depth if d is not None}),
                    op_counts=op_counts, producer=producer, opset=int(opset))


def expand_filter_ids(text: str) -> range:
    """The published ``"start:end"`` (inclusive end) as the ids it names."""
    start, end = (int(part) for part in text.split(":"))
    return range(start, end + 1)
