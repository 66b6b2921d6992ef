"""ONNX reader: every Conv-like node with a 4-D weight, wherever the weight comes from."""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ModelReadError
from ..graph import GraphCycleError, Node, node_depths, total_depth
from ..records import CONV, CONV_TRANSPOSE, QUANTIZED_CONV, ConvLayer, ModelRecord
from .onnx_wire import Span, cut_initializers
from .running import require_runtime

NAME = "onnx"
EXTENSIONS = {".onnx"}

# ModelProto field tags that can follow ir_version (field 1, varint) at the start of a file.
_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}

# op type -> (kind, index of the weight input)
_CONV_OPS = {
    "Conv": (CONV, 1),
    "FusedConv": (CONV, 1),
    "ConvTranspose": (CONV_TRANSPOSE, 1),
    "DeformConv": (CONV, 1),
    "ConvInteger": (QUANTIZED_CONV, 1),
    "QLinearConv": (QUANTIZED_CONV, 3),
    "ConvTransposeWithDynamicPads": (CONV_TRANSPOSE, 1),  # onnxruntime's, ONNX's layout
}
#: A value the inliner renamed at one call of a local function (``w`` -> ``w__2``).
_INLINED = re.compile(r"(.+)__\d+")
#: An operator name that says convolution (NhwcConv, ConvTransposeWithDynamicPads; not
#: ConvertFoo).
_CONV_NAME = re.compile(r"Conv(?:[A-Z]|$)")
_PASS_THROUGH = {"Identity", "Cast"}  # for the weight's origin; resolve rounds at a Cast
#: Node names an exporter makes up (torch.onnx's dynamo exporter: ``node_conv2d_1``,
#: ``node_Conv_291``).
_GENERATED_NAME = re.compile(r"node_[A-Za-z][A-Za-z0-9]*(_\d+)?")
# Operators of the standard domain with graph attributes (other domains are looked at).
_HOLDERS = {"If", "Loop", "Scan", "SequenceMap"}
# Weights computed from constants are evaluated when the computation is this small and
# free of operators that are not pure functions of their inputs.
_MAX_FOLDED_NODES = 32
_NO_FOLD = {"If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike",
            "RandomUniformLike", "Multinomial", "Bernoulli"}
# TensorProto data types stored two per byte (INT4, UINT4, FLOAT4E2M1).
_PACKED_4BIT = {22, 21, 23}


def sniff(head: bytes, path: Path) -> bool:
    """An ONNX file starts with ir_version (tag 0x08, a small varint) and a model field."""
    return len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in _SECOND_TAGS


def read(path: Path, limits) -> ModelRecord:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model, spans = _parse(onnx, path)
        if model.functions and spans:  # the inliner gets the whole model
            model, spans = _parse(onnx, path, cut=False)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ModelReadError(path, f"not a valid ONNX model ({_first_line(error)})") from None
    if model.functions:  # modules exported as local functions: their convs are inside
        model = _inline_functions(model, path)
    graph = model.graph
    if not graph.node:
        raise ModelReadError(path, "ONNX model has no graph nodes")
    walk = _Walk(path)
    initializer_names = ({t.name for t in graph.initializer}
                         | {t.values.name for t in graph.sparse_initializer})
    walk.graph(graph, _TensorSource(path, graph, limits, model.opset_import, spans=spans),
               [i.name for i in graph.input if i.name not in initializer_names], "", 0)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return ModelRecord(
        name=path.stem,
        path=os.fspath(path),
        framework="onnx",
        producer=producer,
        opset=opset,
        operator_counts=dict(walk.operators),
        total_depth=total_depth(walk.depths),
        layers=walk.layers,
    )


class _Walk:
    """The conv layers of a graph and of the subgraphs its If, Loop and Scan nodes hold
    (nested to any level), with their depths, graph order and operator counts.

    A subgraph's nodes run as part of the node that holds it: a node inside reading
    the subgraph's inputs, or values of the enclosing graphs that are not constants,
    has that node's depth, and the depths grow inside from there; the nodes that read
    the holder's outputs come after its deepest subgraph's nodes (the holder spans as
    many steps as that subgraph has depth levels). Layers inside are named
    ``<holder>/<attribute>/<node>`` (``<attribute>[i]`` for a list of graphs); their
    weights may come from the subgraph or from any enclosing graph.
    """

    def __init__(self, path: Path):
        self.path = path
        self.layers: list[ConvLayer] = []
        # by the tensor the weight comes from, with its scope (kept alive by the key)
        self.by_weight: dict[tuple, ConvLayer] = {}
        self.depths: list[int | None] = []
        self.operators: Counter = Counter()
        self.position = 0  # graph order over all graphs, a subgraph after its holder
        self.computed: dict[str, tuple] = {}  # _depths of each (sub)graph, by its prefix

    def _depths(self, graph, tensors: _TensorSource, inputs: list[str], prefix: str):
        """The graph's subgraphs per node, its nodes, their depths (from 0) and spans;
        computed once per graph, whose prefix (``<holder>/<attribute>/``) names it."""
        if prefix not in self.computed:
            self.computed[prefix] = self._compute_depths(graph, tensors, inputs, prefix)
        return self.computed[prefix]

    def _compute_depths(self, graph, tensors: _TensorSource, inputs: list[str], prefix: str):
        held = [_subgraphs(n) for n in graph.node]
        # a node holding subgraphs also reads what they read from the enclosing graphs
        nodes = [Node(prefix + (n.name or f"{n.op_type}_{i}").removeprefix("/" if prefix else ""),
                      [*n.input, *_implicit_inputs(subgraphs)], list(n.output))
                 for i, (n, subgraphs) in enumerate(zip(graph.node, held, strict=True))]
        spans = [max([1, *(self._levels(g, tensors, f"{node.name}/{label}/")
                           for label, g in subgraphs)])
                 for node, subgraphs in zip(nodes, held, strict=True)]
        try:
            depths = node_depths(nodes, [*inputs, *tensors.outer_values(nodes)], spans)
        except GraphCycleError as error:
            raise ModelReadError(self.path, str(error)) from None
        return held, nodes, depths, spans

    def _levels(self, subgraph, tensors: _TensorSource, path: str) -> int:
        """Depth levels of a subgraph's nodes, a nested holder with its own span (the
        holder's span)."""
        _, _, depths, spans = self._depths(subgraph, tensors.scope(subgraph),
                                           [i.name for i in subgraph.input], path)
        return max((d + span for d, span in zip(depths, spans, strict=True)
                    if d is not None), default=0)

    def graph(self, graph, tensors: _TensorSource, inputs: list[str], prefix: str,
              base: int) -> None:
        held, nodes, depths, _ = self._depths(graph, tensors, inputs, prefix)
        for index, node in enumerate(graph.node):
            depth = None if depths[index] is None else base + depths[index]
            self.depths.append(depth)
            self.operators[node.op_type] += 1
            position, self.position = self.position, self.position + 1
            if _readable_conv(self.path, node, nodes[index].name):
                self._add(node, nodes[index].name, tensors, depth or 0, position)
            else:
                _refuse_unknown_operator(self.path, node, nodes[index].name, tensors)
            for label, subgraph in held[index]:
                self.graph(subgraph, tensors.scope(subgraph, node),
                           [i.name for i in subgraph.input], f"{nodes[index].name}/{label}/",
                           depth or 0)

    def _add(self, node, name: str, tensors: _TensorSource, depth: int, position: int):
        """The conv node's layer, or, for a weight another conv node read first (a
        shared layer, a function called twice), that layer at the shallower depth: a
        weight counts once, as in the other formats."""
        weight_index = _CONV_OPS[node.op_type][1]
        weight = node.input[weight_index] if len(node.input) > weight_index else ""
        key = None
        if weight:  # with the parameters a quantized conv dequantizes its weight with
            key = (tensors.weight_key(weight), *(
                tensors.weight_key(node.input[i]) if i < len(node.input) and node.input[i]
                else None for i in _WEIGHT_PARAMETERS.get(node.op_type, ())))
        if key is not None and key in self.by_weight:
            shared = self.by_weight[key]
            shared.depth = min(shared.depth, depth)
            return
        layer = _conv_layer(node, name, tensors)
        if layer is not None:
            layer.depth, layer.order = depth, position
            origin = tensors.origin(weight)[1].removesuffix("_quantized") if weight else ""
            if _GENERATED_NAME.fullmatch(node.name.removesuffix("_quant")) \
                    and origin.endswith(".weight"):
                # torch.onnx's dynamo exporter makes up node names (node_conv2d_1) but
                # keeps the parameter's name on the weight: the module's name, as in the
                # other formats (also after onnxruntime quantized it: node_Conv_91_quant,
                # stem.weight_quantized)
                layer.name = name.removesuffix(node.name) + origin.removesuffix(".weight")
            self.layers.append(layer)
            self.by_weight[key] = layer


#: Inputs of quantized conv operators that dequantize the weight (scale, zero point).
_WEIGHT_PARAMETERS = {"QLinearConv": (4, 5), "ConvInteger": (3,)}


#: Domains whose conv operators keep the ONNX weight layout (c_out, c_in / groups, kh, kw):
#: the standard one and onnxruntime's contrib operators (FusedConv, QLinearConv).
_LAYOUT_DOMAINS = {"", "ai.onnx", "com.microsoft"}


def _readable_conv(path: Path, node, name: str) -> bool:
    """Whether ``node`` is a conv operator this reader reads. Any other convolution (a
    known conv of another domain, such as the ``com.microsoft.nchwc`` Conv of a graph
    onnxruntime saved after its layout optimizations, whose weights are reordered into
    blocks under the same shape; a contrib conv such as NhwcConv) is refused, not read
    scrambled or left out unseen."""
    known = node.op_type in _CONV_OPS
    if known and node.domain in _LAYOUT_DOMAINS:
        return True
    if known or (node.domain not in ("", "ai.onnx") and _CONV_NAME.search(node.op_type)):
        hint = (" (onnxruntime's blocked NCHWc layout: save the model with an optimization "
                "level below ORT_ENABLE_ALL)" if node.domain == "com.microsoft.nchwc" else "")
        raise ModelReadError(path, f"node {name!r} is a {node.domain}:{node.op_type}, a "
                                   f"convolution whose weight layout is not ONNX's{hint}")
    return False


def _refuse_unknown_operator(path: Path, node, name: str, tensors: _TensorSource) -> None:
    """Refuse a node of the ONNX domain that ONNX does not define and that takes a 4-D
    constant: tf2onnx leaves a TensorFlow ``PartitionedCall`` where it cannot convert a
    function (a grouped Conv2D), whose convolution would otherwise go missing unseen."""
    import onnx

    if node.domain not in ("", "ai.onnx") or node.op_type in _HOLDERS \
            or onnx.defs.has(node.op_type):
        return
    for value in node.input:
        source, origin = tensors.origin(value) if value else (None, "")
        tensor = source.initializers.get(origin) if source is not None else None
        if tensor is not None and len(tensor.dims) == 4:
            raise ModelReadError(path, f"node {name!r} is a {node.op_type}, which is no ONNX "
                                       f"operator, and takes the 4-D tensor {value!r}: a "
                                       "convolution the conversion left unconverted? (the "
                                       "model does not run)")


def _passes_on(output: str, value: str, produced: dict) -> bool:
    """Whether a subgraph's ``output`` is its input ``value``, directly or by Identity."""
    for _ in range(64):
        if output == value:
            return True
        node = produced.get(output)
        if node is None or node.op_type != "Identity" or not node.input:
            return False
        output = node.input[0]
    return False


def _subgraphs(node) -> list[tuple[str, object]]:
    """(label, graph) of each graph attribute of ``node`` (If, Loop, Scan bodies)."""
    if node.domain in ("", "ai.onnx") and node.op_type not in _HOLDERS:
        return []  # looking through every node's attributes costs more than the rest
    found = []
    for attribute in node.attribute:
        if attribute.HasField("g"):
            found.append((attribute.name, attribute.g))
        found += [(f"{attribute.name}[{k}]", g) for k, g in enumerate(attribute.graphs)]
    return found


def _implicit_inputs(subgraphs: list[tuple[str, object]]) -> list[str]:
    """Values of the enclosing graphs that ``subgraphs`` (a node's :func:`_subgraphs`)
    read, at any level."""
    names = []
    for _, graph in subgraphs:
        defined = ({i.name for i in graph.input} | {t.name for t in graph.initializer}
                   | {out for inner in graph.node for out in inner.output})
        names += [name for inner in graph.node
                  for name in (*inner.input, *_implicit_inputs(_subgraphs(inner)))
                  if name and name not in defined]
    return names


def _parse(onnx, path: Path, cut: bool = True) -> tuple[object, dict[str, Span]]:
    """The ModelProto of ``path`` and where its large top-level initializers' data lies.

    The file is mapped read-only, not copied into memory first, and with ``cut`` the
    raw data of its large initializers is left out of what the parser gets
    (:func:`~.onnx_wire.cut_initializers`): :meth:`_TensorSource.resolve` reads that
    data from the file once, where parsing would copy it twice. Otherwise the same as
    ``onnx.load(path, load_external_data=False)``. Files that cannot be mapped (empty,
    special) are read whole.
    """
    from google.protobuf.message import DecodeError

    model, spans = onnx.ModelProto(), {}
    with open(path, "rb") as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            data = handle.read()
            decoded, size = model.ParseFromString(data), len(data)
        else:
            with mapped, memoryview(mapped) as view:
                found = cut_initializers(view) if cut else None
                if found is not None:
                    data, spans = found
                    decoded, size = model.ParseFromString(data), len(data)
                else:
                    decoded, size = model.ParseFromString(view), len(view)
    if decoded is not None and decoded != size:
        raise DecodeError(f"decoding consumed {decoded} of {size} bytes")
    return model, spans


def _inline_functions(model, path: Path):
    """The model with its local functions expanded at their call sites (onnx's inliner),
    so that a conv inside a function body is read, and its depth counted, like any other;
    the weights reach it through the call's inputs."""
    from onnx import inliner

    try:
        return inliner.inline_local_functions(model)
    except Exception as error:  # onnx's C++ inliner raises several types for bad bodies
        raise ModelReadError(path, f"cannot expand its local functions "
                                   f"({_first_line(error)})") from None


def _conv_layer(node, name: str, tensors: _TensorSource) -> ConvLayer | None:
    kind, weight_index = _CONV_OPS[node.op_type]
    if len(node.input) <= weight_index or not node.input[weight_index]:
        raise ModelReadError(tensors.path, f"{node.op_type} node {name!r} has no weight input")
    weight, source_dtype = tensors.resolve(node.input[weight_index], name)
    if weight.ndim != 4:
        return None  # 1-D and 3-D convolutions hold no 2-D filters
    try:
        if node.op_type == "ConvInteger":
            weight = _dequantize(weight, None, _optional_input(node, 3, tensors, name))
        elif node.op_type == "QLinearConv":
            scale = tensors.resolve(node.input[4], name)[0]
            weight = _dequantize(weight, scale, _optional_input(node, 5, tensors, name))
    except ValueError as error:
        raise ModelReadError(tensors.path, f"{node.op_type} node {name!r}: {error}") from None
    attrs = {a.name: a for a in node.attribute}
    groups = int(attrs["group"].i) if "group" in attrs else 1
    if kind == CONV_TRANSPOSE:
        c_out, c_in_per_group = weight.shape[1] * groups, weight.shape[0] // groups
    else:
        c_out, c_in_per_group = weight.shape[0], weight.shape[1]
    return ConvLayer(
        name=name,
        op_type=kind,
        weight=np.asarray(weight, dtype=np.float32),
        c_out=int(c_out),
        c_in_per_group=int(c_in_per_group),
        groups=groups,
        strides=tuple(attrs["strides"].ints) if "strides" in attrs else (1, 1),
        dilations=tuple(attrs["dilations"].ints) if "dilations" in attrs else (1, 1),
        source_dtype=source_dtype,
    )


def _optional_input(node, index, tensors, name):
    if len(node.input) > index and node.input[index]:
        return tensors.resolve(node.input[index], name)[0]
    return None


#: Cast targets that round a weight (TensorProto element types).
_ROUNDING_CASTS = {10: "float16", 16: "bfloat16"}


def _cast(values: np.ndarray, source_dtype: str, to: int) -> tuple[np.ndarray, str]:
    """A Cast of a weight: to float16 or bfloat16 it rounds the values (the conv uses
    them so; a float weight then has that precision); other casts change nothing the
    float32 filters show."""
    target = _ROUNDING_CASTS.get(to)
    if target is None or np.asarray(values).dtype.kind not in "fiuV":
        return values, source_dtype
    import ml_dtypes  # onnx's own dependency

    rounding = np.float16 if target == "float16" else ml_dtypes.bfloat16
    rounded = np.asarray(values, dtype=np.float32).astype(rounding).astype(np.float32)
    integer = source_dtype.startswith(("int", "uint"))
    return rounded, source_dtype if integer else target


def _dequantize(values: np.ndarray, scale, zero_point, axis: int = 0,
                block_size: int = 0) -> np.ndarray:
    """(values - zero_point) * scale; per-channel parameters broadcast along ``axis``,
    blocked ones (opset 21, same rank as ``values``) repeated ``block_size`` times."""

    def along_axis(param):
        param = np.asarray(param, dtype=np.float32)
        if param.size == 1:
            return param.reshape(())
        if param.ndim == 1:
            shape = [1] * values.ndim
            shape[axis] = param.size
            return param.reshape(shape)
        if param.ndim == values.ndim and block_size > 0:
            repeated = np.repeat(param, block_size, axis=axis)
            return np.take(repeated, np.arange(values.shape[axis]), axis=axis)
        raise ValueError(f"quantization parameter of shape {param.shape} does not fit "
                         f"a weight of shape {values.shape}")

    result = values.astype(np.float32)
    if zero_point is not None:
        result -= along_axis(zero_point)
    if scale is not None:
        result *= along_axis(scale)
    return result


class _TensorSource:
    """Finds the constant tensor behind a name: initializer, Constant, Cast/Identity chain
    or DequantizeLinear, reading external data only from inside the model's folder."""

    def __init__(self, path: Path, graph, limits, opsets=(), parent=None,
                 spans: dict[str, Span] | None = None, bindings: dict[str, str] | None = None):
        self.path = path
        # subgraph inputs that are the holder's inputs, unchanged (see :meth:`scope`)
        self.bindings = bindings or {}
        self.spans = spans or {}  # initializers whose raw data is still in the file
        self.opsets = list(opsets)
        self.folder = path.resolve().parent
        self.limits = limits
        self.parent = parent  # the enclosing graph's, for a subgraph
        self.initializers = {t.name: t for t in graph.initializer}
        self.sparse = {t.values.name: t for t in graph.sparse_initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.inputs = {value.name for value in graph.input}
        self.order = {id(node): index for index, node in enumerate(graph.node)}

    def scope(self, subgraph, holder=None) -> _TensorSource:
        """The source of a subgraph, which also sees this graph's values; a Loop's state
        that the body passes on unchanged (tf2onnx hands ConvLSTM kernels into the loop
        so) is the Loop's input for it, constants included."""
        bindings = {}
        if holder is not None and holder.op_type == "Loop" and holder.domain in ("", "ai.onnx"):
            produced = {out: node for node in subgraph.node for out in node.output}
            outputs = [value.name for value in subgraph.output]
            # body inputs (iteration, condition, states...), outputs (condition, states...)
            for k, value in enumerate(subgraph.input[2:]):
                initial = holder.input[k + 2] if k + 2 < len(holder.input) else ""
                if initial and k + 1 < len(outputs) and _passes_on(outputs[k + 1], value.name,
                                                                   produced):
                    bindings[value.name] = initial
        return _TensorSource(self.path, subgraph, self.limits, self.opsets, parent=self,
                             bindings=bindings)

    def _has(self, name: str) -> bool:
        return (name in self.initializers or name in self.sparse or name in self.producers
                or name in self.inputs)

    def _outer(self, name: str) -> _TensorSource | None:
        """The enclosing graph that has ``name`` (an initializer, a node's output or an
        input of its own), if this one does not."""
        if self._has(name):
            return None
        scope = self.parent
        while scope is not None and not scope._has(name):
            scope = scope.parent
        return scope

    def outer_values(self, nodes: list[Node]) -> list[str]:
        """The values ``nodes`` (of this graph) read from enclosing graphs that are not
        constants: where a subgraph's depth counts from, besides its inputs."""
        names = []
        if self.parent is None:
            return names
        for node in nodes:
            for name in node.inputs:
                scope = self._outer(name) if name else None
                if scope is not None and name not in scope.initializers \
                        and name not in scope.sparse and getattr(
                        scope.producers.get(name), "op_type", "") != "Constant":
                    names.append(name)
        return names

    def origin(self, name: str, hops: int = 0, dequantize: bool = True
               ) -> tuple[_TensorSource, str]:
        """The tensor a weight comes from: its initializer or constant, through Cast,
        Identity and (``dequantize``) DequantizeLinear steps, with the graph scope that
        holds it (a subgraph's initializer may have the name of an outer one)."""
        if name in self.initializers or name in self.sparse:
            return self, name
        if name in self.bindings and hops <= 64:
            return self.parent.origin(self.bindings[name], hops + 1, dequantize)
        if (outer := self._outer(name)) is not None:
            return outer.origin(name, hops, dequantize)
        node = self.producers.get(name)
        if node is not None and node.input and hops <= 64 and (
                node.op_type in _PASS_THROUGH
                or dequantize and node.op_type == "DequantizeLinear"):
            return self.origin(node.input[0], hops + 1, dequantize)
        return self, name

    def weight_key(self, name: str, hops: int = 0) -> tuple:
        """What tells one weight from another: the tensor it comes from (:meth:`origin`;
        an inlined function's Constant by its content, see :meth:`constant_key`) and, for
        one a DequantizeLinear computes, the tensors and axis it is dequantized with: two
        convs that share an int8 tensor with scales of their own (onnxsim merges equal
        initializers) are two weights."""
        source, origin = self.origin(name, hops, dequantize=False)
        node = source.producers.get(origin)
        if node is not None and node.op_type == "DequantizeLinear" and node.input \
                and hops <= 64:
            return ("DequantizeLinear", *(source.weight_key(i, hops + 1) if i else None
                                          for i in node.input),
                    tuple(sorted((a.name, a.i) for a in node.attribute)))
        return source.constant_key(origin) or (source, origin)

    def constant_key(self, name: str) -> tuple | None:
        """For a weight that a Constant node of an inlined function holds, a key of its
        value: a function called twice gives each call its own copy of the Constant
        (the inliner renames ``w`` to ``w__1``, ``w__2``), one weight all the same.
        Other Constants of equal values (zero-initialised layers) stay apart."""
        node = self.producers.get(name)
        copy = _INLINED.fullmatch(name)
        if node is None or node.op_type != "Constant" or copy is None:
            return None
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is None:
            return None
        if value.HasField("raw_data"):
            data = value.raw_data
        else:  # values in typed fields; the tensor's name may differ between copies
            unnamed = type(value)()
            unnamed.CopyFrom(value)
            unnamed.ClearField("name")
            data = unnamed.SerializeToString()
        digest = hashlib.blake2b(data, digest_size=16).digest()
        return ("Constant", copy.group(1), tuple(value.dims), value.data_type, digest)

    def resolve(self, name: str, consumer: str, hops: int = 0) -> tuple[np.ndarray, str]:
        """The tensor's values (original dtype) and the name of its source dtype."""
        if name in self.initializers:
            return self._array(self.initializers[name], self.spans.get(name))
        if name in self.sparse:
            return self._dense(self.sparse[name])
        if name in self.bindings and hops <= 64:
            return self.parent.resolve(self.bindings[name], consumer, hops + 1)
        if (outer := self._outer(name)) is not None:
            return outer.resolve(name, consumer, hops)
        node = self.producers.get(name)
        if node is None or hops > 64:
            reason = ("it is an input of the graph (a model saved without its weights, e.g. "
                      "by torch.onnx.export(..., export_params=False))"
                      if name in self.inputs and self.parent is None else "it is not a constant")
            raise ModelReadError(self.path, f"cannot resolve the weight {name!r} of node "
                                            f"{consumer!r}: {reason}")
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            sparse = next((a.sparse_tensor for a in node.attribute
                           if a.name == "sparse_value"), None)
            if value is None and sparse is not None:
                return self._dense(sparse)
            if value is None:
                raise ModelReadError(self.path, f"Constant node {node.name!r} feeding "
                                                f"{consumer!r} holds no tensor value")
            return self._array(value)
        if node.op_type == "Cast":
            values, source_dtype = self.resolve(node.input[0], consumer, hops + 1)
            return _cast(values, source_dtype, next(
                (a.i for a in node.attribute if a.name == "to"), 0))
        if node.op_type in _PASS_THROUGH:
            return self.resolve(node.input[0], consumer, hops + 1)
        if node.op_type == "DequantizeLinear":
            values, source_dtype = self.resolve(node.input[0], consumer, hops + 1)
            scale = self.resolve(node.input[1], consumer, hops + 1)[0]
            zero_point = (self.resolve(node.input[2], consumer, hops + 1)[0]
                          if len(node.input) > 2 and node.input[2] else None)
            attrs = {a.name: a.i for a in node.attribute}
            try:
                weight = _dequantize(values, scale, zero_point,
                                     attrs.get("axis", 1) % max(values.ndim, 1),
                                     attrs.get("block_size", 0))
            except ValueError as error:
                raise ModelReadError(self.path, f"DequantizeLinear node {node.name!r} feeding "
                                                f"{consumer!r}: {error}") from None
            scale_type = np.asarray(scale).dtype
            if scale_type.kind == "f" and scale_type.itemsize < 4 or scale_type.kind == "V":
                weight = weight.astype(scale_type).astype(np.float32)  # its output's type
            return weight, source_dtype
        return self._fold(name, consumer)

    def _fold(self, name: str, consumer: str) -> tuple[np.ndarray, str]:
        """Evaluate a small computation on constants only (Transpose, Reshape, Mul, ...)
        with onnx's reference evaluator: pure numpy operators, nothing from the file runs."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        nodes, leaves, pending, seen = [], {}, [name], set()
        while pending:
            tensor = pending.pop()
            if tensor in seen or not tensor:
                continue
            seen.add(tensor)
            if tensor in self.initializers:
                leaves[tensor] = self._array(self.initializers[tensor],
                                             self.spans.get(tensor))
                continue
            if tensor in self.sparse:
                leaves[tensor] = self._dense(self.sparse[tensor])
                continue
            if tensor in self.bindings:
                leaves[tensor] = self.parent.resolve(self.bindings[tensor], consumer)
                continue
            if (outer := self._outer(tensor)) is not None:
                leaves[tensor] = outer.resolve(tensor, consumer)
                continue
            node = self.producers.get(tensor)
            if node is None or len(nodes) >= _MAX_FOLDED_NODES or node.op_type in _NO_FOLD:
                reason = ("it depends on a graph input" if node is None else
                          f"it is computed by a {node.op_type} node")
                raise ModelReadError(self.path, f"cannot resolve the weight {name!r} of node "
                                                f"{consumer!r}: {reason}")
            nodes.append(node)
            pending.extend(node.input)
        source_dtype = "float32"
        initializers = []
        for leaf, (values, dtype) in leaves.items():
            source_dtype = dtype if values.ndim == 4 else source_dtype
            initializers.append(numpy_helper_from_array(values, leaf))
        nodes.sort(key=lambda node: self.order[id(node)])  # graph order is topological
        graph = helper.make_graph(nodes, "fold", [], [
            helper.make_tensor_value_info(name, 0, None)], initializer=initializers)
        try:
            value = ReferenceEvaluator(helper.make_model(graph, opset_imports=self.opsets)).run(
                None, {})[0]
        except Exception as error:  # the evaluator raises many types for bad graphs
            raise ModelReadError(self.path, f"cannot compute the weight {name!r} of node "
                                            f"{consumer!r}: {_first_line(error)}") from None
        value = np.asarray(value)
        if value.dtype.kind in "iu":  # quantized by the graph (QuantizeLinear): stored so
            source_dtype = value.dtype.name
        return value, source_dtype

    def _array(self, tensor, span: Span | None = None) -> tuple[np.ndarray, str]:
        """The tensor's values; ``span``: where its raw data lies in the model file, cut
        from the parsed tensor (:func:`_parse`)."""
        import onnx
        from onnx import numpy_helper

        dims = [int(d) for d in tensor.dims]
        elements = int(np.prod(dims, dtype=object)) if dims else 1
        if any(d < 0 for d in dims) or elements > self.limits.max_tensor_elements:
            raise ModelReadError(self.path, f"tensor {tensor.name!r} declares {dims}, "
                                            "beyond the element limit")
        try:
            np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        except (KeyError, ValueError):
            raise ModelReadError(self.path, f"tensor {tensor.name!r} has unknown data type "
                                            f"{tensor.data_type}") from None
        # 4-bit types pack two values per byte.
        nbytes = ((elements + 1) // 2 if tensor.data_type in _PACKED_4BIT
                  else elements * np_dtype.itemsize)
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if external:
            raw = self._external_data(tensor, nbytes)
        elif span is not None:
            raw = self._read_span(span)
        elif tensor.HasField("raw_data"):
            raw = tensor.raw_data  # each access of the field copies it: once only
        else:
            raw = None
        if raw is not None:
            if len(raw) != nbytes:
                raise ModelReadError(self.path, f"tensor {tensor.name!r} declares {dims} but "
                                                f"holds {len(raw)} bytes")
            if tensor.data_type not in _PACKED_4BIT and sys.byteorder == "little":
                # what numpy_helper.to_array does for raw data, without a second copy
                return np.frombuffer(raw, dtype=np_dtype).reshape(dims), np_dtype.name
            if external or span is not None:  # numpy_helper unpacks from the tensor
                tensor = _inline(tensor, raw)
        try:
            return numpy_helper.to_array(tensor).reshape(dims), np_dtype.name
        except (ValueError, TypeError) as error:
            raise ModelReadError(self.path, f"tensor {tensor.name!r}: "
                                            f"{_first_line(error)}") from None

    def _dense(self, sparse) -> tuple[np.ndarray, str]:
        """A sparse tensor (``sparse_initializer``, a Constant's ``sparse_value``) as the
        dense array it stands for: its values at its indices (linear, or one row of
        coordinates each), zeros elsewhere."""
        name = sparse.values.name
        dims = [int(d) for d in sparse.dims]
        elements = int(np.prod(dims, dtype=object)) if dims else 1
        if any(d < 0 for d in dims) or elements > self.limits.max_tensor_elements:
            raise ModelReadError(self.path, f"sparse tensor {name!r} declares {dims}, "
                                            "beyond the element limit")
        values, dtype = self._array(sparse.values)
        indices = self._array(sparse.indices)[0]
        if indices.dtype.kind not in "iu":
            raise ModelReadError(self.path, f"sparse tensor {name!r}: its indices are "
                                            f"{indices.dtype}, not integers")
        indices = indices.astype(np.int64)
        flat = indices if indices.ndim == 1 else None
        if indices.ndim == 2 and indices.shape[1] == len(dims):
            try:
                flat = np.ravel_multi_index(tuple(indices.T), dims)
            except ValueError:  # a coordinate outside the shape
                flat = None
        if (flat is None or values.ndim != 1 or len(flat) != len(values)
                or (len(flat) and (flat.min() < 0 or flat.max() >= elements))
                or len(np.unique(flat)) != len(flat)):
            raise ModelReadError(self.path, f"sparse tensor {name!r}: its indices do not fit "
                                            f"its {len(values)} values and shape {dims}")
        dense = np.zeros(elements, dtype=values.dtype)
        dense[flat] = values
        return dense.reshape(dims), dtype

    def _read_span(self, span: Span) -> np.ndarray:
        """The bytes at ``span`` of the model file."""
        raw = _read_at(self.path, span.offset, span.length)
        if len(raw) != span.length:
            raise ModelReadError(self.path, "the file changed while it was read")
        return raw

    def _external_data(self, tensor, nbytes: int) -> np.ndarray:
        """The ``nbytes`` of an external-data tensor, from a file in the model's folder."""
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (self.folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(self.folder):
            raise ModelReadError(self.path, f"external data {location!r} of tensor "
                                            f"{tensor.name!r} lies outside the model's folder")
        offset = int(info.get("offset", 0))
        length = int(info.get("length", nbytes))
        if length != nbytes:
            raise ModelReadError(self.path, f"external data of tensor {tensor.name!r} has "
                                            f"{length} bytes, its dims need {nbytes}")
        try:
            raw = _read_at(target, offset, nbytes)
        except OSError as error:
            raise ModelReadError(self.path, f"external data {location!r} of tensor "
                                            f"{tensor.name!r}: {error.strerror}") from None
        if len(raw) != nbytes:
            raise ModelReadError(self.path, f"external data {location!r} of tensor "
                                            f"{tensor.name!r} is truncated")
        return raw


def _read_at(path: Path, offset: int, length: int) -> np.ndarray:
    """``length`` bytes of a file from ``offset``, read once into a new array; fewer
    where the file ends before."""
    raw = np.empty(length, dtype=np.uint8)
    done = 0
    with open(path, "rb", buffering=0) as handle:
        while done < length:  # one read returns at most ~2 GB
            count = os.preadv(handle.fileno(), [raw[done:]], offset + done)
            if count <= 0:
                break
            done += count
    return raw[:done]


def _inline(tensor, raw: np.ndarray):
    """A copy of ``tensor`` holding ``raw`` as its own raw data."""
    import onnx

    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = raw.tobytes()
    return inline


def numpy_helper_from_array(values: np.ndarray, name: str):
    from onnx import numpy_helper

    return numpy_helper.from_array(values, name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def cannot_run(path: Path) -> str:
    """Why this file cannot be run here: onnxruntime is missing (see ``readers.running``)."""
    require_runtime("onnxruntime", path, "run")
    return ""


def run(path: Path, input_shapes, seed: int):
    """Run the model once with onnxruntime (in a verification run's child process)."""
    from .onnx_run import run as run_onnx

    return run_onnx(path, input_shapes, seed)
