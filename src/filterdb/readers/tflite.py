"""TFLite reader: CONV_2D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV of a ``.tflite`` flatbuffer,
and MediaPipe's custom transposed convolution ``Convolution2DTransposeBias``.

The flatbuffer is parsed with the generated schema classes of the ``tflite`` package
(no TensorFlow). Nothing in the model is executed. Weights come from a constant buffer
(inside the flatbuffer, or after it through ``Buffer.offset``/``size`` in models over
2 GB), possibly through DENSIFY (TFLite's sparse format, densified here) and DEQUANTIZE
(float16, or integers with per-tensor or per-channel scale and zero point). Integer
weights that a convolution consumes directly are dequantized too, and the layer is a
``quantized_conv``. Every weight ends up dense float32 in ONNX layout:

==========================  ============================  =======================
operator                    TFLite filter                 ConvLayer weight
==========================  ============================  =======================
CONV_2D                     (c_out, kh, kw, c_in/groups)  (c_out, c_in/groups, kh, kw)
DEPTHWISE_CONV_2D           (1, kh, kw, c_in*multiplier)  (c_in*multiplier, 1, kh, kw)
TRANSPOSE_CONV              (c_out, kh, kw, c_in)         (c_in, c_out, kh, kw)
Convolution2DTransposeBias  (c_out, kh, kw, c_in)         (c_in, c_out, kh, kw)
==========================  ============================  =======================
"""

from __future__ import annotations

import contextlib
import importlib.util
import mmap
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelReadError
from ..graph import GraphCycleError, Node, node_depths, total_depth
from ..records import CONV, CONV_TRANSPOSE, QUANTIZED_CONV, ConvLayer, ModelRecord
from . import require

NAME = "tflite"
EXTENSIONS = {".tflite"}

_IDENTIFIER = b"TFL3"

# BuiltinOperator codes (schema.fbs); they never change once published.
_CONV_2D, _DEPTHWISE_CONV_2D, _DEQUANTIZE, _CUSTOM = 3, 4, 6, 32
_TRANSPOSE_CONV, _DENSIFY = 67, 124
#: SPACE_TO_BATCH_ND, and the operators between it and a conv that change only the
#: layout (TRANSPOSE, RESHAPE, EXPAND_DIMS); TensorType INT32.
_SPACE_TO_BATCH_ND, _LAYOUT_OPS, _INT32 = 38, {39, 22, 70}, 2
_CONV_OPS = {_CONV_2D, _DEPTHWISE_CONV_2D, _TRANSPOSE_CONV}
_IF = 118
#: Calls nested deeper than this count as one level each (a hostile chain of calls).
_MAX_CALL_DEPTH = 64
# BuiltinOptions union members of the conv operators.
_OPTIONS = {_CONV_2D: 1, _DEPTHWISE_CONV_2D: 2, _TRANSPOSE_CONV: 49}
# BuiltinOptions union members that call subgraphs: (options class, its index getters).
_CALLS = {92: ("IfOptions", "ThenSubgraphIndex", "ElseSubgraphIndex"),
          93: ("WhileOptions", "CondSubgraphIndex", "BodySubgraphIndex"),
          103: ("CallOnceOptions", "InitSubgraphIndex")}
# MediaPipe's transposed convolution (its segmentation models decode with it): inputs
# (input, filter (c_out, kh, kw, c_in), bias), its custom options the raw C struct
# TfLiteTransposeConvParams that starts with int32 padding, stride_width, stride_height.
_MEDIAPIPE_TRANSPOSE_CONV = "Convolution2DTransposeBias"
_MEDIAPIPE_PARAMS = struct.Struct("<3i")

# TensorType -> (numpy dtype, source dtype name); INT4 packs two values per byte and
# BFLOAT16 is read as uint16 and widened.
_TYPES = {
    0: (np.dtype("<f4"), "float32"),
    1: (np.dtype("<f2"), "float16"),
    3: (np.dtype("u1"), "uint8"),
    7: (np.dtype("<i2"), "int16"),
    9: (np.dtype("i1"), "int8"),
    10: (np.dtype("<f8"), "float64"),
    17: (np.dtype("i1"), "int4"),
    18: (np.dtype("<u2"), "bfloat16"),
    19: (np.dtype("i1"), "int2"),
}
_INT4, _BFLOAT16, _INT2 = 17, 18, 19
_INTEGER_TYPES = {3, 7, 9, 17, 19}
#: Signed values packed several per byte, the lowest bits first: type -> bits per value.
_PACKED = {_INT4: 4, _INT2: 2}

# DimensionType and SparseIndexVector (schema.fbs).
DENSE, SPARSE_CSR = 0, 1
_INDEX_VECTORS = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}

_MAX_RANK = 16
_MAX_HOPS = 64
# What the generated accessors raise on a corrupted flatbuffer (offsets out of range,
# negative positions, vectors running past the end, undecodable strings).
_PARSE_ERRORS = (IndexError, struct.error, ValueError, TypeError, OverflowError)


def sniff(head: bytes, path: Path) -> bool:
    """A TFLite flatbuffer carries the file identifier ``TFL3`` at bytes 4..8."""
    return len(head) >= 8 and head[4:8] == _IDENTIFIER


def read(path: Path, limits) -> ModelRecord:
    tfl = require("tflite", path, "tflite")
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise ModelReadError(path, f"not a TFLite flatbuffer (only {size} bytes)")
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as error:
        raise ModelReadError(path, f"cannot open ({error.strerror})") from None
    try:
        if data[4:8] != _IDENTIFIER:
            raise ModelReadError(path, "not a TFLite flatbuffer (no TFL3 file identifier)")
        try:
            return _Reader(path, data, limits, tfl).record()
        except GraphCycleError as error:
            raise ModelReadError(path, str(error)) from None
        except _PARSE_ERRORS as error:
            raise ModelReadError(path, f"corrupted TFLite flatbuffer ({type(error).__name__}: "
                                       f"{_first_line(error)})") from None
    finally:
        with contextlib.suppress(BufferError):  # a view still alive: the collector closes it
            data.close()


@dataclass
class _Quantization:
    scale: np.ndarray  # float32, 1-D, may be empty
    zero_point: np.ndarray  # int64, 1-D, may be empty
    axis: int


class _Reader:
    """Subgraph 0 and the subgraphs its operators call (IF branches, WHILE condition and
    body, CALL_ONCE initialiser, to any depth), one after the other: operators to graph
    nodes, conv operators to layers.

    A called subgraph runs as part of its caller: its layers are named
    ``<subgraph name>/<layer>`` and their depths count on from the calling operator's;
    the operators after the caller come after the subgraph's deepest ones.
    Subgraphs that nothing calls are other entry points (signatures) and are not read.
    """

    def __init__(self, path: Path, data: mmap.mmap, limits, tfl):
        self.path = path
        self.data = data
        self.size = len(data)
        self.limits = limits
        self.tfl = tfl
        self.model = tfl.Model.GetRootAs(data, 0)
        self.n_buffers = self._length(self.model.BuffersLength(), 4, "buffers")
        self.n_subgraphs = self._length(self.model.SubgraphsLength(), 4, "subgraphs")
        if self.n_subgraphs == 0:
            raise ModelReadError(path, "TFLite model has no subgraph")
        self.op_names = self._operator_names()
        self.builtin_names = {value: key for key, value in vars(tfl.BuiltinOperator).items()
                              if not key.startswith("_") and isinstance(value, int)}
        #: called subgraph -> (calling subgraph, the tensor it passes to each input)
        self.calls: dict[int, tuple[int, list[int]]] = {}
        self.levels: dict[int, int] = {}  # depth levels of each called subgraph

    def _use(self, subgraph: int) -> None:
        """Read subgraph ``subgraph`` from now on: its tensors and operators."""
        self.subgraph = subgraph
        self.graph = self.model.Subgraphs(subgraph)
        self.n_tensors = self._length(self.graph.TensorsLength(), 4, "tensors")
        self.operators = []  # (builtin code, name, inputs, outputs, raw operator)
        where = f" of subgraph {subgraph}" if subgraph else ""
        for index in range(self._length(self.graph.OperatorsLength(), 4, "operators")):
            op = self.graph.Operators(index)
            opcode = op.OpcodeIndex()
            if not 0 <= opcode < len(self.op_names):
                raise ModelReadError(self.path, f"operator {index}{where} uses operator code "
                                                f"{opcode}, the model defines "
                                                f"{len(self.op_names)}")
            code, custom = self.op_names[opcode]
            name = (custom if code == _CUSTOM and custom
                    else self.builtin_names.get(code, f"BUILTIN_{code}"))
            inputs = self._tensor_list(op.InputsLength(), op.Inputs, f"operator {index}{where}")
            outputs = self._tensor_list(op.OutputsLength(), op.Outputs,
                                        f"operator {index}{where}")
            self.operators.append((code, name, inputs, outputs, op))
        self.producers = {out: i for i, (*_, outputs, _op) in enumerate(self.operators)
                          for out in outputs}
        self._tensors: dict[int, object] = {}
        self.inputs = self._tensor_list(self.graph.InputsLength(), self.graph.Inputs,
                                        f"subgraph {subgraph}")

    @contextlib.contextmanager
    def _in_caller(self, index: int):
        """Where input ``index`` of this subgraph comes from: the calling subgraph is read
        meanwhile, and the tensor it passes is yielded (None when there is none)."""
        caller, passed = self.calls.get(self.subgraph, (None, []))
        position = self.inputs.index(index)
        if caller is None or position >= len(passed) or passed[position] < 0:
            yield None
            return
        current = self.subgraph
        self._use(caller)
        try:
            yield passed[position]
        finally:
            self._use(current)

    def _graph_depths(self, visiting: frozenset = frozenset()
                      ) -> tuple[list[int | None], list[int]]:
        """Depths (from 0) of this subgraph's operators, and their spans: an operator that
        calls subgraphs spans their depth levels, so the operators after it come after
        theirs."""
        constants = {t for t in range(self.n_tensors) if self._has_data(t)}
        nodes = [Node(str(i), [str(t) for t in inputs if t >= 0 and t not in constants],
                      [str(t) for t in outputs if t >= 0])
                 for i, (_code, _name, inputs, outputs, _op) in enumerate(self.operators)]
        inside = visiting | {self.subgraph}
        spans = [max([1, *(self._levels(called, inside)
                           for called, _ in self._called(op, code, inputs))])
                 for code, _name, inputs, _outputs, op in list(self.operators)]
        return node_depths(nodes, [str(t) for t in self.inputs], spans), spans

    def _levels(self, subgraph: int, visiting: frozenset) -> int:
        """Depth levels of a called subgraph's operators, a nested caller with its own
        span (its caller's span)."""
        if subgraph in visiting or len(visiting) >= _MAX_CALL_DEPTH:
            return 1  # a subgraph calling itself again, or calls nested beyond reason
        if subgraph not in self.levels:
            current = self.subgraph
            self._use(subgraph)
            try:
                depths, spans = self._graph_depths(visiting)
            finally:
                self._use(current)
            self.levels[subgraph] = max((d + span for d, span in zip(depths, spans, strict=True)
                                         if d is not None), default=0)
        return self.levels[subgraph]

    # -- the record ------------------------------------------------------------------

    def record(self) -> ModelRecord:
        layers: list[ConvLayer] = []
        by_weight: dict[tuple[int, int] | None, ConvLayer] = {}
        depths_of_all: list[int | None] = []
        counts: Counter = Counter()
        pending, queued, position = [(0, "", 0)], {0}, 0
        while pending:  # a subgraph after the one that calls it
            subgraph, prefix, base = pending.pop(0)
            self._use(subgraph)
            depths = [None if d is None else base + d for d in self._graph_depths()[0]]
            depths_of_all += depths
            for index, (code, name, inputs, _outputs, op) in enumerate(self.operators):
                counts[name] += 1
                depth = depths[index] if depths[index] is not None else base
                for called, passed in self._called(op, code, inputs):
                    if called not in queued:
                        queued.add(called)
                        self.calls[called] = (subgraph, passed)
                        pending.append((called, f"{prefix}{self._subgraph_name(called)}/",
                                        depth))
                if not _is_conv(code, name):
                    continue
                # a weight tensor that two operators read is one layer (a weight counts
                # once, as in the other formats), at the shallower depth
                key = (subgraph, inputs[1]) if len(inputs) > 1 and inputs[1] >= 0 else None
                if key is not None and key in by_weight:
                    by_weight[key].depth = min(by_weight[key].depth, depth)
                    continue
                layer = self._conv_layer(index)
                if layer is None:
                    continue
                layer.name = prefix + layer.name
                layer.depth = depth
                layer.order = position + index
                layers.append(layer)
                by_weight[key] = layer
            position += len(self.operators)
        return ModelRecord(
            name=self.path.stem,
            path=os.fspath(self.path),
            framework=NAME,
            producer=self._producer(),
            opset=None,
            operator_counts=dict(counts),
            total_depth=total_depth(depths_of_all),
            layers=layers,
        )

    def _called(self, op, code: int, inputs: list[int]) -> list[tuple[int, list[int]]]:
        """The subgraphs an operator calls (IF, WHILE, CALL_ONCE), each with the tensors
        it passes to that subgraph's inputs (IF passes its inputs after the condition)."""
        methods = _CALLS.get(op.BuiltinOptionsType())
        table = op.BuiltinOptions() if methods else None
        if table is None:
            return []
        options = getattr(self.tfl, methods[0])()
        options.Init(table.Bytes, table.Pos)
        called = [int(getattr(options, method)()) for method in methods[1:]]
        for index in called:
            if not 0 <= index < self.n_subgraphs:
                raise ModelReadError(self.path, f"an operator calls subgraph {index}, the "
                                                f"model has {self.n_subgraphs}")
        passed = inputs[1:] if code == _IF else inputs
        return [(index, passed) for index in called]

    def _subgraph_name(self, index: int) -> str:
        name = self.model.Subgraphs(index).Name()
        return name.decode("utf-8", "replace") if name else f"subgraph{index}"

    def _conv_layer(self, index: int) -> ConvLayer | None:
        code, op_name, inputs, outputs, op = self.operators[index]
        weight_slot, input_slot = (1, 2) if code == _TRANSPOSE_CONV else (1, 0)
        name = self._layer_name(index, op_name, outputs)
        if len(inputs) <= max(weight_slot, input_slot) or inputs[weight_slot] < 0:
            raise ModelReadError(self.path, f"{op_name} operator {name!r} has no weight input")
        weight_index = inputs[weight_slot]
        weight_tensor = self._tensor(weight_index)
        raw, source_dtype = self._resolve(weight_index, name)
        if raw.ndim != 4 or 0 in raw.shape:
            return None  # not a 2-D convolution filter, or one without filters
        quantized = weight_tensor.Type() in _INTEGER_TYPES
        weight = (self._dequantize(raw, self._quantization(weight_index), weight_index, name)
                  if quantized else raw.astype(np.float32, copy=False))
        if code == _CUSTOM:
            options, strides = None, self._mediapipe_strides(op, name)
        else:
            options = self._options(op, code)
            strides = (_positive(options, "StrideH"), _positive(options, "StrideW"))
        dilations = (1, 1)
        if code in (_CONV_2D, _DEPTHWISE_CONV_2D):
            block = self._space_to_batch_block(inputs[input_slot]) or (1, 1)
            dilations = (_positive(options, "DilationHFactor") * block[0],
                         _positive(options, "DilationWFactor") * block[1])
        in_channels = self._channels(inputs[input_slot])

        if code == _CONV_2D:
            c_out, c_in_per_group = weight.shape[0], weight.shape[3]
            groups = 1
            if (in_channels and in_channels > c_in_per_group
                    and in_channels % c_in_per_group == 0
                    and c_out % (in_channels // c_in_per_group) == 0):
                groups = in_channels // c_in_per_group
            weight = weight.transpose(0, 3, 1, 2)
            kind = QUANTIZED_CONV if quantized else CONV
        elif code == _DEPTHWISE_CONV_2D:
            if weight.shape[0] != 1:
                raise ModelReadError(self.path, f"DEPTHWISE_CONV_2D operator {name!r} has a "
                                                f"filter of shape {list(weight.shape)}, "
                                                "expected (1, kh, kw, channels)")
            c_out = weight.shape[3]
            multiplier = options.DepthMultiplier() if options is not None else 0
            if in_channels and c_out % in_channels == 0:
                groups = in_channels
            elif multiplier > 0 and c_out % multiplier == 0:
                groups = c_out // multiplier
            else:
                groups = c_out
            c_in_per_group = 1
            weight = weight.transpose(3, 0, 1, 2)
            kind = QUANTIZED_CONV if quantized else CONV
        else:  # TRANSPOSE_CONV, MediaPipe's too: (c_out, kh, kw, c_in) -> (c_in, c_out, kh, kw)
            c_out, c_in_per_group, groups = weight.shape[0], weight.shape[3], 1
            weight = weight.transpose(3, 0, 1, 2)
            kind = CONV_TRANSPOSE
        return ConvLayer(
            name=name,
            op_type=kind,
            weight=np.ascontiguousarray(weight, dtype=np.float32),
            c_out=int(c_out),
            c_in_per_group=int(c_in_per_group),
            groups=int(groups),
            strides=strides,
            dilations=dilations,
            source_dtype=source_dtype,
        )

    def _space_to_batch_block(self, index: int) -> tuple[int, int] | None:
        """The block shape of a SPACE_TO_BATCH_ND that feeds a conv's input (through
        TRANSPOSE, RESHAPE or EXPAND_DIMS): the converter writes a dilated conv of a
        model without a fixed batch size as SPACE_TO_BATCH_ND, a conv of dilation 1 and
        BATCH_TO_SPACE_ND; the block is the dilation ((1, b) for a Conv1D's one)."""
        for _ in range(4):
            producer = self.producers.get(index)
            if producer is None:
                return None
            code, _name, inputs, _outputs, _op = self.operators[producer]
            if code == _SPACE_TO_BATCH_ND and len(inputs) > 1:
                block = self._int32_values(inputs[1])
                if block is None or not 1 <= len(block) <= 2 or (block < 1).any():
                    return None
                return (1, int(block[0])) if len(block) == 1 else (int(block[0]),
                                                                   int(block[1]))
            if code not in _LAYOUT_OPS or not inputs or inputs[0] < 0:
                return None
            index = inputs[0]
        return None

    def _int32_values(self, index: int) -> np.ndarray | None:
        """A small constant INT32 tensor's values, or None."""
        if index < 0:
            return None
        tensor = self._tensor(index)
        if tensor.Type() != _INT32 or not self._has_data(index):
            return None
        raw = self._buffer(tensor.Buffer(), repr(self._tensor_name(index)))
        return raw.view("<i4") if len(raw) % 4 == 0 and len(raw) <= 64 else None

    # -- weights ---------------------------------------------------------------------

    def _resolve(self, index: int, consumer: str, hops: int = 0) -> tuple[np.ndarray, str]:
        """The tensor's values, dense, in its own dtype (float32 after DEQUANTIZE), and
        the dtype name of the constant they came from."""
        if self._has_data(index):
            return self._constant(index)
        producer = self.producers.get(index)
        if producer is None and hops <= _MAX_HOPS and index in self.inputs:
            with self._in_caller(index) as passed:  # a constant the caller passes in
                if passed is not None:
                    return self._resolve(passed, consumer, hops + 1)
        if producer is None or hops > _MAX_HOPS:
            raise ModelReadError(self.path, f"cannot resolve the weight "
                                            f"{self._tensor_name(index)!r} of {consumer!r}: "
                                            "it is not a constant")
        code, op_name, inputs, _outputs, _op = self.operators[producer]
        if code not in (_DEQUANTIZE, _DENSIFY):
            raise ModelReadError(self.path, f"cannot resolve the weight "
                                            f"{self._tensor_name(index)!r} of {consumer!r}: "
                                            f"it is computed by a {op_name} operator")
        if not inputs or inputs[0] < 0:
            raise ModelReadError(self.path, f"{op_name} operator {producer} feeding "
                                            f"{consumer!r} has no input")
        source = inputs[0]
        values, source_dtype = self._resolve(source, consumer, hops + 1)
        shape = self._shape(index)
        if shape and list(values.shape) != shape:
            raise ModelReadError(self.path, f"{op_name} operator {producer} feeding "
                                            f"{consumer!r} turns shape {list(values.shape)} "
                                            f"into {shape}")
        if code == _DEQUANTIZE:
            if self._tensor(source).Type() in _INTEGER_TYPES:
                values = self._dequantize(values, self._quantization(source), source, consumer)
            else:
                values = values.astype(np.float32)
        return values, source_dtype

    def _constant(self, index: int) -> tuple[np.ndarray, str]:
        tensor = self._tensor(index)
        tensor_type = tensor.Type()
        label = repr(self._tensor_name(index))
        if tensor_type not in _TYPES:
            raise ModelReadError(self.path, f"tensor {label} has type {tensor_type}, which "
                                            "is not a weight type filterdb reads")
        dtype, source_dtype = _TYPES[tensor_type]
        shape = self._shape(index)
        elements = int(np.prod(shape, dtype=object)) if shape else 1
        if any(d < 0 for d in shape) or elements > self.limits.max_tensor_elements:
            raise ModelReadError(self.path, f"tensor {label} declares shape {shape}, beyond "
                                            "the element limit")
        sparsity = tensor.Sparsity()
        raw = self._buffer(tensor.Buffer(), label)
        if sparsity is not None:
            if tensor_type in _PACKED:
                raise ModelReadError(self.path, f"tensor {label}: sparse {source_dtype} "
                                                "weights are not supported")
            if len(raw) % dtype.itemsize:
                raise ModelReadError(self.path, f"sparse tensor {label} holds {len(raw)} "
                                                f"bytes, not a whole number of "
                                                f"{source_dtype} values")
            try:
                values = densify(raw.view(dtype), shape, *self._sparsity(sparsity, label),
                                 max_elements=self.limits.max_tensor_elements)
            except ValueError as error:
                raise ModelReadError(self.path, f"sparse tensor {label}: "
                                                f"{error}") from None
        else:
            bits = _PACKED.get(tensor_type)
            needed = -(-elements * bits // 8) if bits else elements * dtype.itemsize
            if len(raw) != needed:
                raise ModelReadError(self.path, f"tensor {label} declares shape {shape} "
                                                f"({needed} bytes) but its buffer holds "
                                                f"{len(raw)} bytes")
            if bits:
                values = _unpack(raw, elements, bits).reshape(shape)
            else:
                values = raw.view(dtype).reshape(shape)
        if tensor_type == _BFLOAT16:
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return values, source_dtype

    def _buffer(self, buffer_index: int, label: str) -> np.ndarray:
        """The bytes of a buffer as a uint8 copy, from the flatbuffer or after it."""
        if not 0 <= buffer_index < self.n_buffers:
            raise ModelReadError(self.path, f"tensor {label} refers to buffer {buffer_index}, "
                                            f"the model has {self.n_buffers}")
        buffer = self.model.Buffers(buffer_index)
        length = buffer.DataLength()
        if length > self.size:
            raise ModelReadError(self.path, f"buffer {buffer_index} of tensor {label} "
                                            f"declares {length} bytes, more than the file")
        if length > 0:
            view = buffer.DataAsNumpy()
            try:
                return np.array(view, dtype=np.uint8, copy=True)
            finally:
                del view
        # Models over 2 GB keep the data after the flatbuffer, at an offset from the file
        # start (offset 1 is the converter's placeholder); TFLite reads it only when the
        # buffer has no data of its own.
        offset, length = buffer.Offset(), buffer.Size()
        if offset > 1 and length > 0:
            if offset + length > self.size:
                raise ModelReadError(self.path, f"buffer {buffer_index} of tensor {label} "
                                                f"lies beyond the end of the file")
            return np.frombuffer(self.data, np.uint8, count=length, offset=offset).copy()
        return np.zeros(0, np.uint8)

    def _has_data(self, index: int) -> bool:
        buffer_index = self._tensor(index).Buffer()
        if not 0 < buffer_index < self.n_buffers:
            return False
        buffer = self.model.Buffers(buffer_index)
        return buffer.DataLength() > 0 or (buffer.Offset() > 1 and buffer.Size() > 0)

    def _sparsity(self, sparsity, label: str):
        traversal = self._int_vector(sparsity.TraversalOrderLength(),
                                     sparsity.TraversalOrderAsNumpy)
        block_map = self._int_vector(sparsity.BlockMapLength(), sparsity.BlockMapAsNumpy)
        metadata = []
        for level in range(self._length(sparsity.DimMetadataLength(), 4, "dim_metadata")):
            dim = sparsity.DimMetadata(level)
            if dim.Format() == DENSE:
                metadata.append((DENSE, dim.DenseSize(), None, None))
            elif dim.Format() == SPARSE_CSR:
                segments = self._index_vector(dim.ArraySegmentsType(), dim.ArraySegments())
                indices = self._index_vector(dim.ArrayIndicesType(), dim.ArrayIndices())
                if segments is None or indices is None:
                    raise ModelReadError(self.path, f"sparse tensor {label}: level {level} "
                                                    "is SPARSE_CSR without segments or "
                                                    "indices")
                metadata.append((SPARSE_CSR, dim.DenseSize(), segments, indices))
            else:
                raise ModelReadError(self.path, f"sparse tensor {label}: level {level} has "
                                                f"unknown format {dim.Format()}")
        return traversal, block_map, metadata

    def _index_vector(self, kind: int, table) -> np.ndarray | None:
        if kind not in _INDEX_VECTORS or table is None:
            return None
        vector = getattr(self.tfl, _INDEX_VECTORS[kind])()
        vector.Init(table.Bytes, table.Pos)
        return self._int_vector(vector.ValuesLength(), vector.ValuesAsNumpy)

    def _quantization(self, index: int, hops: int = 0) -> _Quantization | None:
        """The quantization of a tensor; a DENSIFY output without its own falls back to
        its sparse input's."""
        quant = self._tensor(index).Quantization()
        if quant is not None and quant.ScaleLength() > 0:
            if quant.ScaleLength() > self.size // 4 or quant.ZeroPointLength() > self.size // 8:
                raise ModelReadError(self.path, f"tensor {self._tensor_name(index)!r} declares "
                                                "more quantization parameters than the file "
                                                "holds")
            scale = np.array(quant.ScaleAsNumpy(), dtype=np.float32)
            zero_point = (np.array(quant.ZeroPointAsNumpy(), dtype=np.int64)
                          if quant.ZeroPointLength() > 0 else np.zeros(0, np.int64))
            return _Quantization(scale, zero_point, quant.QuantizedDimension())
        producer = self.producers.get(index)
        if producer is not None and hops < _MAX_HOPS:
            code, _name, inputs, _outputs, _op = self.operators[producer]
            if code == _DENSIFY and inputs and inputs[0] >= 0:
                return self._quantization(inputs[0], hops + 1)
        if producer is None and hops < _MAX_HOPS and index in self.inputs:
            with self._in_caller(index) as passed:
                if passed is not None:
                    return self._quantization(passed, hops + 1)
        return None

    def _dequantize(self, values: np.ndarray, quant: _Quantization | None, index: int,
                    consumer: str) -> np.ndarray:
        """(values - zero_point) * scale as float32; per-channel along quantized_dimension.
        Integer weights without a scale keep their integer values."""
        try:
            return dequantize(values, quant.scale if quant else None,
                              quant.zero_point if quant else None, quant.axis if quant else 0)
        except ValueError as error:
            raise ModelReadError(self.path, f"tensor {self._tensor_name(index)!r} feeding "
                                            f"{consumer!r}: {error}") from None

    # -- flatbuffer access -----------------------------------------------------------

    def _tensor(self, index: int):
        if not 0 <= index < self.n_tensors:
            raise ModelReadError(self.path, f"tensor index {index} out of range "
                                            f"(the subgraph has {self.n_tensors})")
        tensor = self._tensors.get(index)
        if tensor is None:
            tensor = self._tensors[index] = self.graph.Tensors(index)
        return tensor

    def _tensor_name(self, index: int) -> str:
        name = self._tensor(index).Name()
        return name.decode("utf-8", "replace") if name else f"tensor {index}"

    def _shape(self, index: int) -> list[int]:
        tensor = self._tensor(index)
        rank = tensor.ShapeLength()
        if rank > _MAX_RANK:
            raise ModelReadError(self.path, f"tensor {self._tensor_name(index)!r} declares "
                                            f"rank {rank}")
        return [int(tensor.Shape(j)) for j in range(rank)]

    def _channels(self, index: int) -> int:
        """The last (channel) dimension of an NHWC activation, 0 when unknown."""
        if index < 0:
            return 0
        shape = self._shape(index)
        return shape[-1] if len(shape) == 4 and shape[-1] > 0 else 0

    def _options(self, op, code: int):
        if op.BuiltinOptionsType() != _OPTIONS[code]:
            return None
        table = op.BuiltinOptions()
        if table is None:
            return None
        cls = {_CONV_2D: self.tfl.Conv2DOptions,
               _DEPTHWISE_CONV_2D: self.tfl.DepthwiseConv2DOptions,
               _TRANSPOSE_CONV: self.tfl.TransposeConvOptions}[code]
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    def _mediapipe_strides(self, op, name: str) -> tuple[int, int]:
        length = self._length(op.CustomOptionsLength(), 1, "custom options")
        if length < _MEDIAPIPE_PARAMS.size:
            raise ModelReadError(self.path, f"{_MEDIAPIPE_TRANSPOSE_CONV} operator {name!r} "
                                            f"has {length} bytes of options, expected "
                                            f"{_MEDIAPIPE_PARAMS.size} (padding and strides)")
        view = op.CustomOptionsAsNumpy()
        try:
            _padding, stride_w, stride_h = _MEDIAPIPE_PARAMS.unpack(
                view[:_MEDIAPIPE_PARAMS.size].tobytes())
        finally:
            del view
        return max(stride_h, 1), max(stride_w, 1)

    def _operator_names(self) -> list[tuple[int, str]]:
        names = []
        for index in range(self._length(self.model.OperatorCodesLength(), 4, "operator codes")):
            opcode = self.model.OperatorCodes(index)
            code = max(_builtin_code_field(opcode), opcode.DeprecatedBuiltinCode())
            custom = opcode.CustomCode()
            names.append((code, custom.decode("utf-8", "replace") if custom else ""))
        return names

    def _tensor_list(self, length: int, get, owner: str) -> list[int]:
        values = [int(get(j)) for j in range(self._length(length, 4, f"{owner} tensors"))]
        for value in values:
            if not -1 <= value < self.n_tensors:
                raise ModelReadError(self.path, f"{owner} refers to tensor {value}, the "
                                                f"subgraph has {self.n_tensors}")
        return values

    def _int_vector(self, length: int, as_numpy) -> np.ndarray:
        if length == 0:
            return np.zeros(0, np.int64)
        self._length(length, 1, "index vector")
        view = as_numpy()
        try:
            return np.array(view, dtype=np.int64)
        finally:
            del view

    def _length(self, length: int, element_size: int, what: str) -> int:
        if length * element_size > self.size:
            raise ModelReadError(self.path, f"corrupted TFLite flatbuffer ({what} vector of "
                                            f"{length} elements is longer than the file)")
        return length

    def _layer_name(self, index: int, op_name: str, outputs: list[int]) -> str:
        if outputs and outputs[0] >= 0:
            name = self._tensor(outputs[0]).Name()
            if name:
                return name.decode("utf-8", "replace")
        return f"{op_name}_{index}"

    def _producer(self) -> str:
        """The converter's note (``MLIR Converted.``, ``TOCO Converted.``) and the least
        runtime version; a description the model's author wrote instead (free text)
        is not a producer."""
        description = self.model.Description()
        text = description.decode("utf-8", "replace").strip() if description else ""
        producer = text if len(text) <= 40 and re.search(r"(?i)convert", text) else "tflite"
        for index in range(self._length(self.model.MetadataLength(), 4, "metadata")):
            entry = self.model.Metadata(index)
            if entry.Name() == b"min_runtime_version":
                buffer_index = entry.Buffer()
                if 0 < buffer_index < self.n_buffers:
                    raw = self._buffer(buffer_index, "min_runtime_version")[:64].tobytes()
                    version = raw.split(b"\0", 1)[0].decode("ascii", "replace")
                    if version:
                        producer = f"{producer} (min runtime {version})".strip()
        return producer


# -- numeric helpers (format-free, tested on their own) ---------------------------------

def dequantize(values: np.ndarray, scale, zero_point, axis: int = 0) -> np.ndarray:
    """(values - zero_point) * scale in float64, returned as float32 (what TFLite's
    DEQUANTIZE computes). ``scale``/``zero_point`` hold one value or one per index of
    ``axis``; either may be None or empty."""

    def along_axis(param, what):
        param = np.asarray(param).reshape(-1)
        if param.size == 1:
            return param.reshape(())
        if 0 <= axis < values.ndim and param.size == values.shape[axis]:
            shape = [1] * values.ndim
            shape[axis] = param.size
            return param.reshape(shape)
        raise ValueError(f"{param.size} {what} values do not fit a weight of shape "
                         f"{list(values.shape)} along quantized dimension {axis}")

    result = values.astype(np.float64)
    if zero_point is not None and np.size(zero_point):
        result -= along_axis(np.asarray(zero_point, dtype=np.float64), "zero point")
    if scale is not None and np.size(scale):
        result *= along_axis(np.asarray(scale, dtype=np.float32).astype(np.float64), "scale")
    with np.errstate(over="ignore"):  # a huge scale gives inf weights, counted downstream
        return result.astype(np.float32)


def densify(values: np.ndarray, shape, traversal_order, block_map, dim_metadata,
            max_elements: int = 2**31) -> np.ndarray:
    """The dense tensor of TFLite's sparse format (schema ``SparsityParameters``).

    Parameters
    ----------
    values : 1-D array
        The stored values, in traversal order.
    shape : sequence of int
        The dense shape (the tensor's ``shape``).
    traversal_order : sequence of int
        A permutation of the n dense dimensions, followed by one of the k block
        dimensions n..n+k-1.
    block_map : sequence of int
        For block dimension n+i, the dense dimension it splits.
    dim_metadata : sequence of (format, dense_size, array_segments, array_indices)
        One per traversal level: DENSE levels give their size, SPARSE_CSR levels their
        segments (one range of ``array_indices`` per position of the level above) and
        indices.

    Raises
    ------
    ValueError
        When the metadata is inconsistent with the shape or the values.
    """
    shape = [int(d) for d in shape]
    order = [int(t) for t in traversal_order]
    block_map = [int(b) for b in block_map]
    rank, blocks = len(shape), len(block_map)
    levels = rank + blocks
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    if len(order) != levels or sorted(order[:rank]) != list(range(rank)) \
            or sorted(order[rank:]) != list(range(rank, levels)):
        raise ValueError(f"traversal_order {order} is not a permutation of the {rank} "
                         f"dimensions followed by the {blocks} block dimensions")
    if len(dim_metadata) != levels:
        raise ValueError(f"{len(dim_metadata)} dim_metadata entries for {levels} levels")
    if len(set(block_map)) != blocks or any(not 0 <= d < rank for d in block_map):
        raise ValueError(f"block_map {block_map} does not name distinct dimensions")
    level_of = {dim: level for level, dim in enumerate(order)}
    block_size = []
    for k, dim in enumerate(block_map):
        size = int(dim_metadata[level_of[rank + k]][1])
        if size <= 0 or shape[dim] % size:
            raise ValueError(f"block size {size} does not divide dimension {dim} "
                             f"of size {shape[dim]}")
        block_size.append(size)
    extent = list(shape)  # per expanded dimension: blocks per dimension, then block sizes
    for k, dim in enumerate(block_map):
        extent[dim] //= block_size[k]
    extent += block_size
    dense_elements = int(np.prod(shape, dtype=object)) if shape else 1
    if dense_elements > max_elements:
        raise ValueError(f"dense shape {shape} exceeds the element limit")
    values = np.asarray(values).reshape(-1)
    if values.size > dense_elements:
        raise ValueError(f"{values.size} stored values for {dense_elements} dense elements")

    # Walk the levels breadth-first. Every path is a prefix of a coordinate; its
    # position is what the level below indexes (the dense position, or the place in a
    # CSR level's array_indices). Paths stay in depth-first order: the order of values.
    positions = np.zeros(1, dtype=np.int64)
    coordinates, parents = [], []
    for level in range(levels):
        fmt, dense_size, segments, indices = dim_metadata[level]
        size = extent[order[level]]
        count = positions.size
        if fmt == DENSE:
            if int(dense_size) != size:
                raise ValueError(f"level {level} is DENSE of size {dense_size}, the shape "
                                 f"needs {size}")
            if count * size > dense_elements:
                raise ValueError("the index arrays address more elements than the shape")
            parent = np.repeat(np.arange(count, dtype=np.int64), size)
            coordinate = np.tile(np.arange(size, dtype=np.int64), count)
            positions = positions[parent] * size + coordinate
        elif fmt == SPARSE_CSR:
            segments = np.asarray(segments, dtype=np.int64).reshape(-1)
            indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if count and positions.max() + 1 >= segments.size:
                raise ValueError(f"level {level} has {segments.size} array_segments for "
                                 f"{int(positions.max()) + 1} positions")
            starts, ends = segments[positions], segments[positions + 1]
            lengths = ends - starts
            if (lengths < 0).any() or (count and (starts.min() < 0
                                                  or ends.max() > indices.size)):
                raise ValueError(f"level {level} has array_segments out of order or beyond "
                                 f"its {indices.size} array_indices")
            total = int(lengths.sum())
            if total > dense_elements:
                raise ValueError("the index arrays address more elements than the shape")
            parent = np.repeat(np.arange(count, dtype=np.int64), lengths)
            offsets = np.cumsum(lengths) - lengths
            positions = starts[parent] + (np.arange(total, dtype=np.int64) - offsets[parent])
            coordinate = indices[positions]
            if total and (coordinate.min() < 0 or coordinate.max() >= size):
                raise ValueError(f"level {level} has array_indices outside 0..{size - 1}")
        else:
            raise ValueError(f"level {level} has unknown format {fmt}")
        coordinates.append(coordinate)
        parents.append(parent)
    if positions.size != values.size:
        raise ValueError(f"the index arrays address {positions.size} values, the buffer "
                         f"holds {values.size}")

    # Back from the leaves: the coordinate of every value at every level.
    per_level = [None] * levels
    path = np.arange(positions.size, dtype=np.int64)
    for level in reversed(range(levels)):
        per_level[level] = coordinates[level][path]
        path = parents[level][path]
    dense_index = [None] * rank
    for level in range(rank):
        dense_index[order[level]] = per_level[level]
    for level in range(rank, levels):
        k = order[level] - rank
        dim = block_map[k]
        dense_index[dim] = dense_index[dim] * block_size[k] + per_level[level]
    dense = np.zeros(dense_elements, dtype=values.dtype)
    if values.size:
        dense[np.ravel_multi_index(dense_index, shape)] = values
    return dense.reshape(shape)


def _unpack(raw: np.ndarray, elements: int, bits: int) -> np.ndarray:
    """Signed ``bits``-bit values (4: INT4, 2: INT2) packed into bytes, the lowest bits
    first, as int8."""
    per_byte = 8 // bits
    out = np.empty((raw.size, per_byte), dtype=np.int8)
    for k in range(per_byte):  # shift the value to the top, then back with its sign
        out[:, k] = (raw << (8 - bits * (k + 1))).astype(np.int8) >> (8 - bits)
    return out.reshape(-1)[:elements]


def _builtin_code_field(opcode) -> int:
    """The ``builtin_code`` field of an OperatorCode table as stored (0 when absent).

    Schema v3a: builtin_code (int32) supersedes deprecated_builtin_code (int8, capped at
    127), and TFLite takes the larger of the two. The ``tflite`` package's
    ``OperatorCode.BuiltinCode()`` returns deprecated_builtin_code whenever builtin_code
    is below 127, so a file that sets builtin_code alone (ai-edge-quantizer writes the
    DEQUANTIZE it adds so) would read as ADD: the field is read here directly.
    """
    table = opcode._tab
    offset = table.Offset(10)  # vtable slot of field 3
    if not offset:
        return 0
    return struct.unpack_from("<i", table.Bytes, table.Pos + offset)[0]


def _is_conv(code: int, name: str) -> bool:
    return code in _CONV_OPS or (code == _CUSTOM and name == _MEDIAPIPE_TRANSPOSE_CONV)


def _positive(options, field: str) -> int:
    value = getattr(options, field)() if options is not None else 1
    return int(value) if value > 0 else 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def cannot_run(path: Path) -> str:
    """Why this file cannot be run here: no TFLite interpreter is installed."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "no TFLite interpreter installed (pip install ai-edge-litert)"
    return ""


def run(path: Path, input_shapes, seed: int):
    """Run the model once with LiteRT (in a verification run's child process)."""
    from .tflite_run import run as run_tflite

    return run_tflite(path, input_shapes, seed)
