"""TFLite fixtures written with the flatbuffers Builder and the ``tflite`` package's
generated builder functions: no TensorFlow, nothing run.

:class:`ModelDef` describes one subgraph (tensors, operators, graph inputs and outputs)
and serialises it the way TensorFlow's converter lays a model out: schema version 3,
file identifier ``TFL3``, buffer 0 empty, every constant in its own 16-byte aligned
buffer, operator codes with both ``builtin_code`` and ``deprecated_builtin_code``,
NHWC activations and the ``min_runtime_version`` metadata. With ``external_buffers``
the constants go after the flatbuffer and are found through ``Buffer.offset``/``size``,
as in models over 2 GB.

:func:`write_network` saves the format-free equivalence network of ``network.py`` in
the variants TFLite produces: float32 weights, float16 weights through DEQUANTIZE,
full-integer int8 with per-channel weight scales, and a sparse weight through DENSIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite import (
    ActivationFunctionType,
    BuiltinOperator,
    BuiltinOptions,
    DimensionType,
    Padding,
    SparseIndexVector,
    TensorType,
)

from .network import INPUT_CHANNELS, INPUT_SIZE, ConvSpec

SCHEMA_VERSION = 3
DESCRIPTION = "MLIR Converted."  # what the TF converter writes
MIN_RUNTIME = "2.3.0"
VARIANTS = ("float32", "float16", "int8", "sparse")

_NUMPY = {TensorType.FLOAT32: "<f4", TensorType.FLOAT16: "<f2", TensorType.INT8: "i1",
          TensorType.UINT8: "u1", TensorType.INT32: "<i4", TensorType.INT16: "<i2",
          TensorType.FLOAT64: "<f8"}


# ---------------------------------------------------------------------------
# model description

@dataclass
class Quant:
    scale: Sequence[float]
    zero_point: Sequence[int] | None = None
    quantized_dimension: int = 0


@dataclass
class DimMeta:
    format: int
    dense_size: int = 0
    segments: Sequence[int] | None = None
    indices: Sequence[int] | None = None
    index_type: int = SparseIndexVector.Int32Vector


@dataclass
class Sparsity:
    traversal_order: Sequence[int]
    block_map: Sequence[int]
    dim_metadata: list[DimMeta]


@dataclass
class TensorDef:
    name: str
    shape: Sequence[int]
    type: int = TensorType.FLOAT32
    data: bytes | None = None
    quant: Quant | None = None
    sparsity: Sparsity | None = None


@dataclass
class OpDef:
    code: int
    inputs: Sequence[int]
    outputs: Sequence[int]
    options: dict = field(default_factory=dict)


@dataclass
class ModelDef:
    tensors: list[TensorDef] = field(default_factory=list)
    operators: list[OpDef] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    description: str = DESCRIPTION
    #: which OperatorCode fields carry the code: "both" (the TFLite converter), "builtin"
    #: (ai-edge-quantizer's added operators), "deprecated" (files from before schema v3a)
    opcode_fields: str = "both"
    name: str = "main"
    #: Subgraphs 1, 2, ... (their own tensors, operators, inputs, outputs and name).
    subgraphs: list[ModelDef] = field(default_factory=list)

    def tensor(self, name, shape, type=TensorType.FLOAT32, data=None, quant=None,
               sparsity=None) -> int:
        """Add a tensor; ``data`` may be a numpy array (stored little-endian as is)."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data, dtype=np.dtype(_NUMPY[type])).tobytes()
        self.tensors.append(TensorDef(name, list(shape), type, data, quant, sparsity))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, **options) -> int:
        self.operators.append(OpDef(code, list(inputs), list(outputs), options))
        return len(self.operators) - 1

    def serialize(self, external_buffers: bool = False) -> bytes:
        if not external_buffers:
            return _serialize(self, None)
        blobs = [t.data for graph in (self, *self.subgraphs) for t in graph.tensors
                 if t.data is not None]
        draft = _serialize(self, [2] * len(blobs))  # offsets are fixed-size: same length
        offsets, position = [], _align(len(draft))
        for blob in blobs:
            offsets.append(position)
            position = _align(position + len(blob))
        head = _serialize(self, offsets)
        assert len(head) == len(draft)
        out = bytearray(head)
        for offset, blob in zip(offsets, blobs, strict=True):
            out.extend(b"\0" * (offset - len(out)))
            out.extend(blob)
        return bytes(out)

    def save(self, path, external_buffers: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.serialize(external_buffers))
        return path


def _align(n: int, to: int = 16) -> int:
    return (n + to - 1) // to * to


# ---------------------------------------------------------------------------
# serialisation

def _serialize(model: ModelDef, external_offsets: list[int] | None) -> bytes:
    b = flatbuffers.Builder(1024)

    # buffers: 0 is the empty sentinel, then one per constant, then the metadata
    graphs = [model, *model.subgraphs]
    buffer_of: dict[tuple[int, int], int] = {}
    buffer_tables = [_buffer(b)]
    blob = 0
    for number, graph in enumerate(graphs):
        for index, tensor in enumerate(graph.tensors):
            if tensor.data is None:
                continue
            if external_offsets is None:
                buffer_tables.append(_buffer(b, data=tensor.data))
            else:
                buffer_tables.append(_buffer(b, offset=external_offsets[blob],
                                             size=len(tensor.data)))
                blob += 1
            buffer_of[number, index] = len(buffer_tables) - 1
    runtime = MIN_RUNTIME.encode().ljust(16, b"\0")
    buffer_tables.append(_buffer(b, data=runtime))
    runtime_buffer = len(buffer_tables) - 1

    codes: list[tuple[int, str | None]] = []  # (builtin code, custom code)
    for graph in graphs:
        for op in graph.operators:
            if _code(op) not in codes:
                codes.append(_code(op))
    subgraph_tables = []
    for number, graph in enumerate(graphs):
        tensor_tables = [_tensor(b, t, buffer_of.get((number, i), 0))
                         for i, t in enumerate(graph.tensors)]
        operator_tables = [_operator(b, op, codes.index(_code(op))) for op in graph.operators]
        name = b.CreateString(graph.name)
        tensors = _table_vector(b, tflite.SubGraphStartTensorsVector, tensor_tables)
        inputs = _int32_vector(b, graph.inputs)
        outputs = _int32_vector(b, graph.outputs)
        operators = _table_vector(b, tflite.SubGraphStartOperatorsVector, operator_tables)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors)
        tflite.SubGraphAddInputs(b, inputs)
        tflite.SubGraphAddOutputs(b, outputs)
        tflite.SubGraphAddOperators(b, operators)
        tflite.SubGraphAddName(b, name)
        subgraph_tables.append(tflite.SubGraphEnd(b))

    code_tables = []
    for code, custom in codes:
        custom_code = b.CreateString(custom) if custom else None
        tflite.OperatorCodeStart(b)
        if custom_code is not None:
            tflite.OperatorCodeAddCustomCode(b, custom_code)
        if model.opcode_fields in ("both", "deprecated"):
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        if model.opcode_fields in ("both", "builtin"):
            tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        code_tables.append(tflite.OperatorCodeEnd(b))

    metadata_name = b.CreateString("min_runtime_version")
    tflite.MetadataStart(b)
    tflite.MetadataAddName(b, metadata_name)
    tflite.MetadataAddBuffer(b, runtime_buffer)
    metadata = tflite.MetadataEnd(b)

    description = b.CreateString(model.description)
    operator_codes = _table_vector(b, tflite.ModelStartOperatorCodesVector, code_tables)
    subgraphs = _table_vector(b, tflite.ModelStartSubgraphsVector, subgraph_tables)
    buffers = _table_vector(b, tflite.ModelStartBuffersVector, buffer_tables)
    metadata_vector = _table_vector(b, tflite.ModelStartMetadataVector, [metadata])
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, operator_codes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers)
    tflite.ModelAddMetadata(b, metadata_vector)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _code(op: OpDef) -> tuple[int, str | None]:
    """An operator's code: builtin, and for CUSTOM the ``custom_code`` option."""
    return op.code, op.options.get("custom_code")


def _buffer(b, data: bytes | None = None, offset: int = 0, size: int = 0) -> int:
    vector = None
    if data:
        b.StartVector(1, len(data), 16)  # TFLite aligns constant data to 16 bytes
        b.head -= len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        vector = b.EndVector()
    tflite.BufferStart(b)
    if vector is not None:
        tflite.BufferAddData(b, vector)
    if offset:
        tflite.BufferAddOffset(b, offset)
        tflite.BufferAddSize(b, size)
    return tflite.BufferEnd(b)


def _tensor(b, tensor: TensorDef, buffer: int) -> int:
    name = b.CreateString(tensor.name)
    shape = _int32_vector(b, tensor.shape)
    quant = _quantization(b, tensor.quant) if tensor.quant is not None else None
    sparsity = _sparsity(b, tensor.sparsity) if tensor.sparsity is not None else None
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, tensor.type)
    tflite.TensorAddBuffer(b, buffer)
    tflite.TensorAddName(b, name)
    if quant is not None:
        tflite.TensorAddQuantization(b, quant)
    if sparsity is not None:
        tflite.TensorAddSparsity(b, sparsity)
    return tflite.TensorEnd(b)


def _quantization(b, quant: Quant) -> int:
    scale = b.CreateNumpyVector(np.asarray(quant.scale, dtype="<f4").reshape(-1))
    zero_point = None
    if quant.zero_point is not None:
        zero_point = b.CreateNumpyVector(np.asarray(quant.zero_point, dtype="<i8").reshape(-1))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, scale)
    if zero_point is not None:
        tflite.QuantizationParametersAddZeroPoint(b, zero_point)
    tflite.QuantizationParametersAddQuantizedDimension(b, quant.quantized_dimension)
    return tflite.QuantizationParametersEnd(b)


_INDEX_DTYPES = {SparseIndexVector.Int32Vector: ("<i4", "Int32Vector"),
                 SparseIndexVector.Uint16Vector: ("<u2", "Uint16Vector"),
                 SparseIndexVector.Uint8Vector: ("u1", "Uint8Vector")}


def _index_vector(b, values, index_type: int) -> int:
    dtype, name = _INDEX_DTYPES[index_type]
    array = np.asarray(values, dtype=np.int64)
    assert array.size == 0 or (array.min() >= 0 and array.max() <= np.iinfo(dtype).max)
    vector = b.CreateNumpyVector(array.astype(dtype))
    getattr(tflite, f"{name}Start")(b)
    getattr(tflite, f"{name}AddValues")(b, vector)
    return getattr(tflite, f"{name}End")(b)


def _sparsity(b, sparsity: Sparsity) -> int:
    dims = []
    for dim in sparsity.dim_metadata:
        segments = indices = None
        if dim.format == DimensionType.SPARSE_CSR:
            segments = _index_vector(b, dim.segments, dim.index_type)
            indices = _index_vector(b, dim.indices, dim.index_type)
        tflite.DimensionMetadataStart(b)
        tflite.DimensionMetadataAddFormat(b, dim.format)
        tflite.DimensionMetadataAddDenseSize(b, dim.dense_size)
        if segments is not None:
            tflite.DimensionMetadataAddArraySegmentsType(b, dim.index_type)
            tflite.DimensionMetadataAddArraySegments(b, segments)
            tflite.DimensionMetadataAddArrayIndicesType(b, dim.index_type)
            tflite.DimensionMetadataAddArrayIndices(b, indices)
        dims.append(tflite.DimensionMetadataEnd(b))
    traversal = _int32_vector(b, sparsity.traversal_order)
    block_map = _int32_vector(b, sparsity.block_map) if len(sparsity.block_map) else None
    dim_vector = _table_vector(b, tflite.SparsityParametersStartDimMetadataVector, dims)
    tflite.SparsityParametersStart(b)
    tflite.SparsityParametersAddTraversalOrder(b, traversal)
    if block_map is not None:
        tflite.SparsityParametersAddBlockMap(b, block_map)
    tflite.SparsityParametersAddDimMetadata(b, dim_vector)
    return tflite.SparsityParametersEnd(b)


def _options(b, op: OpDef) -> tuple[int, int | None]:
    o = op.options
    padding = o.get("padding", Padding.SAME)
    activation = o.get("activation", ActivationFunctionType.NONE)
    stride = o.get("stride", 1)
    dilation = o.get("dilation", 1)
    if op.code == BuiltinOperator.CONV_2D:
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, padding)
        tflite.Conv2DOptionsAddStrideW(b, o.get("stride_w", stride))
        tflite.Conv2DOptionsAddStrideH(b, o.get("stride_h", stride))
        tflite.Conv2DOptionsAddFusedActivationFunction(b, activation)
        tflite.Conv2DOptionsAddDilationWFactor(b, o.get("dilation_w", dilation))
        tflite.Conv2DOptionsAddDilationHFactor(b, o.get("dilation_h", dilation))
        return BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if op.code == BuiltinOperator.DEPTHWISE_CONV_2D:
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
        tflite.DepthwiseConv2DOptionsAddStrideW(b, o.get("stride_w", stride))
        tflite.DepthwiseConv2DOptionsAddStrideH(b, o.get("stride_h", stride))
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, o.get("depth_multiplier", 1))
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, activation)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, o.get("dilation_w", dilation))
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, o.get("dilation_h", dilation))
        return BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if op.code == BuiltinOperator.TRANSPOSE_CONV:
        tflite.TransposeConvOptionsStart(b)
        tflite.TransposeConvOptionsAddPadding(b, padding)
        tflite.TransposeConvOptionsAddStrideW(b, o.get("stride_w", stride))
        tflite.TransposeConvOptionsAddStrideH(b, o.get("stride_h", stride))
        tflite.TransposeConvOptionsAddFusedActivationFunction(b, activation)
        return BuiltinOptions.TransposeConvOptions, tflite.TransposeConvOptionsEnd(b)
    if op.code == BuiltinOperator.IF:
        tflite.IfOptionsStart(b)
        tflite.IfOptionsAddThenSubgraphIndex(b, o["then_subgraph"])
        tflite.IfOptionsAddElseSubgraphIndex(b, o["else_subgraph"])
        return BuiltinOptions.IfOptions, tflite.IfOptionsEnd(b)
    if op.code == BuiltinOperator.CALL_ONCE:
        tflite.CallOnceOptionsStart(b)
        tflite.CallOnceOptionsAddInitSubgraphIndex(b, o["init_subgraph"])
        return BuiltinOptions.CallOnceOptions, tflite.CallOnceOptionsEnd(b)
    empty = {BuiltinOperator.DEQUANTIZE: "DequantizeOptions",
             BuiltinOperator.DENSIFY: "DensifyOptions",
             BuiltinOperator.QUANTIZE: "QuantizeOptions"}
    if op.code in empty:
        name = empty[op.code]
        getattr(tflite, f"{name}Start")(b)
        return getattr(BuiltinOptions, name), getattr(tflite, f"{name}End")(b)
    return BuiltinOptions.NONE, None


def _operator(b, op: OpDef, opcode_index: int) -> int:
    inputs = _int32_vector(b, op.inputs)
    outputs = _int32_vector(b, op.outputs)
    options_type, options = _options(b, op)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, opcode_index)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(b, options_type)
        tflite.OperatorAddBuiltinOptions(b, options)
    return tflite.OperatorEnd(b)


def _int32_vector(b, values) -> int:
    return b.CreateNumpyVector(np.asarray(list(values), dtype="<i4"))


def _table_vector(b, start, tables: list[int]) -> int:
    start(b, len(tables))
    for table in reversed(tables):
        b.PrependUOffsetTRelative(table)
    return b.EndVector()


# ---------------------------------------------------------------------------
# sparse encoding (TFLite's format, written independently of the reader's decoder)

def encode_sparse(dense: np.ndarray, traversal_order: Sequence[int], formats: Sequence[int],
                  block_map: Sequence[int] = (), block_size: Sequence[int] = (),
                  index_type: int = SparseIndexVector.Int32Vector
                  ) -> tuple[np.ndarray, Sparsity]:
    """The stored values and SparsityParameters of ``dense``: ``formats`` gives DENSE or
    SPARSE_CSR per traversal level; block dimension ``n + i`` splits dimension
    ``block_map[i]`` into blocks of ``block_size[i]``."""
    rank = dense.ndim
    shape, axes_dims, axes_blocks = [], [], [None] * len(block_map)
    for dim in range(rank):
        if dim in block_map:
            k = list(block_map).index(dim)
            shape += [dense.shape[dim] // block_size[k], block_size[k]]
            axes_dims.append(len(shape) - 2)
            axes_blocks[k] = len(shape) - 1
        else:
            shape.append(dense.shape[dim])
            axes_dims.append(len(shape) - 1)
    expanded = dense.reshape(shape).transpose(axes_dims + axes_blocks)
    ordered = expanded.transpose(list(traversal_order))
    levels = ordered.ndim
    segments = {lv: [0] for lv in range(levels) if formats[lv] == DimensionType.SPARSE_CSR}
    indices: dict[int, list[int]] = {lv: [] for lv in segments}
    values: list = []

    def visit(level: int, sub: np.ndarray) -> None:
        if level == levels:
            values.append(sub)
            return
        sparse = formats[level] == DimensionType.SPARSE_CSR
        for i in range(sub.shape[0]):
            if sparse:
                if not np.any(sub[i] != 0):
                    continue
                indices[level].append(i)
            visit(level + 1, sub[i])
        if sparse:
            segments[level].append(len(indices[level]))

    visit(0, ordered)
    dims = [DimMeta(DimensionType.SPARSE_CSR, 0, segments[lv], indices[lv], index_type)
            if lv in segments else DimMeta(DimensionType.DENSE, ordered.shape[lv])
            for lv in range(levels)]
    stored = np.array(values, dtype=dense.dtype).reshape(-1)
    return stored, Sparsity(list(traversal_order), list(block_map), dims)


# ---------------------------------------------------------------------------
# the equivalence network

def is_depthwise(spec: ConvSpec) -> bool:
    return spec.kind == "conv" and spec.groups > 1 and spec.weight.shape[1] == 1


def tflite_weight(spec: ConvSpec) -> np.ndarray:
    """ONNX layout -> TFLite layout: CONV_2D (out, kh, kw, in/groups), DEPTHWISE_CONV_2D
    (1, kh, kw, in*mult), TRANSPOSE_CONV (out, kh, kw, in)."""
    if spec.kind == "conv_transpose" or is_depthwise(spec):
        return np.ascontiguousarray(spec.weight.transpose(1, 2, 3, 0))
    return np.ascontiguousarray(spec.weight.transpose(0, 2, 3, 1))


def quantized_dimension(spec: ConvSpec) -> int:
    """The output-channel axis of the TFLite filter: 3 for depthwise, 0 otherwise."""
    return 3 if is_depthwise(spec) else 0


def quantize_symmetric(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's int8 weight quantization: per channel along ``axis``, zero point 0,
    scale max|w| / 127."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    scale = (np.abs(weight).max(axis=reduce) / 127).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = scale.size
    q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def with_zeros(network: list[ConvSpec], layer: str = "plain", seed: int = 5) -> list[ConvSpec]:
    """The network with about half of ``layer``'s weights set to zero."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in network:
        if spec.name == layer:
            weight = spec.weight * (rng.random(spec.weight.shape) < 0.5)
            spec = ConvSpec(spec.name, spec.kind, weight.astype(np.float32), spec.groups,
                            spec.stride)
        out.append(spec)
    return out


#: Default sparse format of the "sparse" variant: dense (out, kh, kw), CSR over in.
SPARSE_FORMAT = {"traversal_order": (0, 1, 2, 3),
                 "formats": (DimensionType.DENSE, DimensionType.DENSE, DimensionType.DENSE,
                             DimensionType.SPARSE_CSR),
                 "index_type": SparseIndexVector.Uint8Vector}


def network_model(network: list[ConvSpec], variant: str = "float32",
                  sparse_layer: str = "plain", sparse_format: dict | None = None,
                  activation_scales: dict[str, float] | None = None) -> ModelDef:
    """The equivalence network as a TFLite subgraph, conv and RELU alternating.

    ``activation_scales`` (int8 only) gives the output scale per layer name; 0.05 else.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} not in {VARIANTS}")
    m = ModelDef()
    int8 = variant == "int8"
    act_type = TensorType.INT8 if int8 else TensorType.FLOAT32
    def act_quant(scale):
        return Quant([scale], [0]) if int8 else None

    x = m.tensor("x", [1, INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS])
    m.inputs = [x]
    dequantize_ops: list[OpDef] = []
    body: list[OpDef] = []
    current = x
    if int8:
        current = m.tensor("x/quantized", [1, INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS],
                           TensorType.INT8, quant=act_quant(1 / 64))
        body.append(OpDef(BuiltinOperator.QUANTIZE, [x], [current]))
    in_scale = 1 / 64
    height = width = INPUT_SIZE

    def constant(name, array, float_type=TensorType.FLOAT32):
        """A float constant of the variant: float32, or float16 behind a DEQUANTIZE."""
        if variant != "float16":
            return m.tensor(name, array.shape, float_type, data=array)
        half = m.tensor(f"{name}/float16", array.shape, TensorType.FLOAT16,
                        data=array.astype(np.float16))
        out = m.tensor(name, array.shape)
        dequantize_ops.append(OpDef(BuiltinOperator.DEQUANTIZE, [half], [out]))
        return out

    for spec in network:
        weight = tflite_weight(spec)
        c_out = spec.c_out
        if int8:
            axis = quantized_dimension(spec)
            q, scale = quantize_symmetric(weight, axis)
            w = m.tensor(f"{spec.name}/weight", weight.shape, TensorType.INT8, data=q,
                         quant=Quant(scale, np.zeros(scale.size, np.int64), axis))
            bias_scale = (in_scale * scale.astype(np.float64)).astype(np.float32)
            bias = m.tensor(f"{spec.name}/bias", [c_out], TensorType.INT32,
                            data=np.zeros(c_out, np.int32),
                            quant=Quant(bias_scale, np.zeros(c_out, np.int64), 0))
        elif variant == "sparse" and spec.name == sparse_layer:
            fmt = dict(SPARSE_FORMAT if sparse_format is None else sparse_format)
            values, sparsity = encode_sparse(weight, **fmt)
            sparse = m.tensor(f"{spec.name}/weight/sparse", weight.shape, data=values,
                              sparsity=sparsity)
            w = m.tensor(f"{spec.name}/weight", weight.shape)
            body.append(OpDef(BuiltinOperator.DENSIFY, [sparse], [w]))
            bias = constant(f"{spec.name}/bias", np.zeros(c_out, np.float32))
        else:
            w = constant(f"{spec.name}/weight", weight)
            bias = constant(f"{spec.name}/bias", np.zeros(c_out, np.float32))

        if spec.kind == "conv_transpose":
            height, width = height * spec.stride, width * spec.stride
        else:
            height, width = -(-height // spec.stride), -(-width // spec.stride)
        out_shape = [1, height, width, c_out]
        act_scale = (activation_scales or {}).get(spec.name, 0.05)
        y = m.tensor(spec.name, out_shape, act_type, quant=act_quant(act_scale))
        if spec.kind == "conv_transpose":
            output_shape = m.tensor(f"{spec.name}/output_shape", [4], TensorType.INT32,
                                    data=np.array(out_shape, np.int32))
            body.append(OpDef(BuiltinOperator.TRANSPOSE_CONV, [output_shape, w, current, bias],
                              [y], {"stride": spec.stride}))
        elif is_depthwise(spec):
            body.append(OpDef(BuiltinOperator.DEPTHWISE_CONV_2D, [current, w, bias], [y],
                              {"stride": spec.stride,
                               "depth_multiplier": spec.c_out // spec.c_in}))
        else:
            body.append(OpDef(BuiltinOperator.CONV_2D, [current, w, bias], [y],
                              {"stride": spec.stride}))
        r = m.tensor(f"{spec.name}/relu", out_shape, act_type, quant=act_quant(act_scale))
        body.append(OpDef(BuiltinOperator.RELU, [y], [r]))
        current, in_scale = r, act_scale

    if int8:
        out = m.tensor("y", [1, height, width, network[-1].c_out])
        body.append(OpDef(BuiltinOperator.DEQUANTIZE, [current], [out]))
        current = out
    # the converter puts the weight DEQUANTIZE operators first
    m.operators = dequantize_ops + body
    m.outputs = [current]
    return m


def write_network(path, network: list[ConvSpec], variant: str = "float32",
                  external_buffers: bool = False, **kwargs) -> Path:
    """Save the equivalence network as a .tflite file in one of :data:`VARIANTS`."""
    return network_model(network, variant, **kwargs).save(path, external_buffers)
