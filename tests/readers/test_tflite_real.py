"""The TFLite reader on real trained models that PyPI packages ship, against LiteRT.

Models (fetched by scripts/fetch_test_models.py):

- mediapipe 0.10.21: float16 weights behind DEQUANTIZE (face detection, face landmark,
  selfie segmentation), sparse float16 weights behind DENSIFY and DEQUANTIZE (full range
  face detection), float32 weights with 1x1 depthwise layers (hand recrop), MediaPipe's
  custom transposed convolution ``Convolution2DTransposeBias`` (selfie segmentation);
- pymicro-wakeword 2.5.0: int8 per-channel weights consumed by the convolutions, depthwise
  (k, 1) kernels, a second subgraph (the variables' initialiser);
- pyopen-wakeword 1.1.0: float32 speech embedding, and a wake word model with an IF and
  its two branch subgraphs but no convolution.

The reference is independent of the reader: the LiteRT interpreter lists the operators,
tensor shapes, quantization parameters and constants, and after one run without
delegates it holds the runtime's own DEQUANTIZE and DENSIFY results; the conv options come
straight from the ``tflite`` schema classes. Layouts are converted here with numpy.

The same models with their operator codes in ``builtin_code`` alone (as ai-edge-quantizer
writes the operators it adds) must read the same. What the wheels lack (builtin
TRANSPOSE_CONV, depth multipliers above 1, grouped CONV_2D, dilations, uint8 and int4
weights) is covered by the generated models of test_tflite.py.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from filterdb.errors import ModelReadError
from filterdb.readers import open_model
from filterdb.records import CONV, CONV_TRANSPOSE, QUANTIZED_CONV

#: fixture -> model stems
MODELS = {
    "mediapipe_models": ("face_detection_short_range", "face_detection_full_range_sparse",
                         "face_landmark", "hand_recrop", "selfie_segmentation"),
    "microwakeword_models": ("alexa", "hey_jarvis", "hey_mycroft", "okay_nabu"),
    "openwakeword_models": ("embedding_model", "hey_jarvis"),
}
CASES = [(fixture, stem) for fixture, stems in MODELS.items() for stem in stems]
IDS = [f"{fixture.split('_')[0]}-{stem}" for fixture, stem in CASES]

#: (fixture, stem) -> (conv layers, 3x3 filters), counted once from the reference; pins
#: the models so that a changed wheel shows up here rather than as a silent pass.
EXPECTED = {
    ("mediapipe_models", "face_detection_short_range"): (37, 978),
    ("mediapipe_models", "face_detection_full_range_sparse"): (91, 3804),
    ("mediapipe_models", "face_landmark"): (45, 46560),
    ("mediapipe_models", "hand_recrop"): (33, 136),
    ("mediapipe_models", "selfie_segmentation"): (55, 280),
    ("microwakeword_models", "alexa"): (9, 0),
    ("microwakeword_models", "hey_jarvis"): (9, 0),
    ("microwakeword_models", "hey_mycroft"): (9, 0),
    ("microwakeword_models", "okay_nabu"): (14, 0),
    ("openwakeword_models", "embedding_model"): (20, 24),
    ("openwakeword_models", "hey_jarvis"): (0, 0),
}

_CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "Convolution2DTransposeBias"}


@dataclass
class RefLayer:
    index: int  # operator index in subgraph 0
    kind: str
    weight: np.ndarray  # ONNX layout
    groups: int
    strides: tuple[int, int]
    dilations: tuple[int, int]
    source_dtype: str


def _model_path(request, fixture: str, stem: str) -> Path:
    return request.getfixturevalue(fixture) / f"{stem}.tflite"


def _interpreter(path: Path) -> tuple[Interpreter, bool]:
    """LiteRT's view of the model, run once on zeros when every operator is known."""
    interpreter = Interpreter(
        model_path=os.fspath(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        interpreter.allocate_tensors()
        interpreter.invoke()
    except RuntimeError as error:  # MediaPipe's custom operators are not in LiteRT
        assert "unresolved custom op" in str(error)
        return interpreter, False
    return interpreter, True


def _dequantized(values: np.ndarray, parameters: dict) -> np.ndarray:
    """(q - zero_point) * scale in float32: q - zero_point is a small exact integer, so one
    float32 product rounds once, as the reader's float64 product rounded to float32."""
    scales, zero_points = parameters["scales"], parameters["zero_points"]
    assert scales.size, "integer weights without a scale"
    shape = [1] * values.ndim
    shape[parameters["quantized_dimension"]] = -1
    scales = scales.astype(np.float32).reshape(shape if scales.size > 1 else ())
    zero_points = zero_points.reshape(shape if zero_points.size > 1 else ())
    return (values.astype(np.int64) - zero_points).astype(np.float32) * scales


def _options(model, index: int, code_name: str):
    op = model.Subgraphs(0).Operators(index)
    if code_name == "Convolution2DTransposeBias":
        # MediaPipe's TfLiteTransposeConvParams: padding, stride_width, stride_height
        _padding, stride_w, stride_h = struct.unpack("<3i", op.CustomOptionsAsNumpy()[:12])
        return (stride_h, stride_w), (1, 1)
    cls = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
           "TRANSPOSE_CONV": tflite.TransposeConvOptions}[code_name]
    options = cls()
    table = op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    strides = (options.StrideH(), options.StrideW())
    if code_name == "TRANSPOSE_CONV":
        return strides, (1, 1)
    return strides, (options.DilationHFactor(), options.DilationWFactor())


def reference_layers(path: Path) -> tuple[list[RefLayer], int]:
    """The 2-D convolutions of subgraph 0 and the number of subgraphs."""
    interpreter, ran = _interpreter(path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    producers = {out: op for op in ops for out in op["outputs"]}
    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    layers = []
    for op in ops:
        if op["op_name"] not in _CONV_OPS:
            continue
        transposed = op["op_name"] in ("TRANSPOSE_CONV", "Convolution2DTransposeBias")
        weight_index = op["inputs"][1]
        input_index = op["inputs"][2 if op["op_name"] == "TRANSPOSE_CONV" else 0]
        # the constant the weight comes from, through DEQUANTIZE and DENSIFY
        root = weight_index
        while root in producers:
            assert producers[root]["op_name"] in ("DEQUANTIZE", "DENSIFY")
            root = producers[root]["inputs"][0]
        if ran or root == weight_index:
            weight = interpreter.get_tensor(weight_index)  # the runtime's DEQUANTIZE
            quantized = weight.dtype.kind in "iu"  # consumed as integers
            source = weight_index
        else:  # not run: DEQUANTIZE done here
            assert producers[weight_index]["op_name"] == "DEQUANTIZE", "DENSIFY not run"
            weight, quantized, source = interpreter.get_tensor(root), False, root
        if weight.dtype.kind in "iu":
            weight = _dequantized(weight, details[source]["quantization_parameters"])
        weight = weight.astype(np.float32)
        if weight.ndim != 4:
            continue
        c_in = int(details[input_index]["shape"][-1])
        if op["op_name"] == "CONV_2D":
            assert c_in % weight.shape[3] == 0
            groups, onnx = c_in // weight.shape[3], weight.transpose(0, 3, 1, 2)
        elif op["op_name"] == "DEPTHWISE_CONV_2D":
            assert weight.shape[0] == 1 and weight.shape[3] % c_in == 0
            groups, onnx = c_in, weight.transpose(3, 0, 1, 2)
        else:
            assert weight.shape[3] == c_in
            groups, onnx = 1, weight.transpose(3, 0, 1, 2)
        strides, dilations = _options(model, op["index"], op["op_name"])
        kind = CONV_TRANSPOSE if transposed else QUANTIZED_CONV if quantized else CONV
        layers.append(RefLayer(op["index"], kind, onnx, groups, strides, dilations,
                               np.dtype(details[root]["dtype"]).name))
    return layers, model.SubgraphsLength()


def _count(layers, kernel=(3, 3)) -> int:
    return sum(int(np.prod(layer.weight.shape[:2])) for layer in layers
               if tuple(layer.weight.shape[2:]) == kernel)


@pytest.fixture(scope="module")
def references(request) -> dict[tuple[str, str], tuple[list[RefLayer], int]]:
    return {case: reference_layers(_model_path(request, *case)) for case in CASES}


def _assert_layers_equal(record, expected: list[RefLayer]) -> None:
    assert [layer.order for layer in record.layers] == [ref.index for ref in expected]
    for layer, ref in zip(record.layers, expected, strict=True):
        where = f"{record.name} operator {ref.index} ({layer.name})"
        assert layer.op_type == ref.kind, where
        assert layer.weight.dtype == np.float32, where
        assert layer.weight.shape == ref.weight.shape, where
        # exact: float32 and float16 are copied, int8 is one float32 rounding
        np.testing.assert_array_equal(layer.weight, ref.weight, err_msg=where)
        assert layer.groups == ref.groups, where
        assert layer.strides == ref.strides and layer.dilations == ref.dilations, where
        assert layer.source_dtype == ref.source_dtype, where
        if ref.kind == CONV_TRANSPOSE:
            assert (layer.c_out, layer.c_in_per_group) == (ref.weight.shape[1],
                                                           ref.weight.shape[0]), where
        else:
            assert (layer.c_out, layer.c_in_per_group) == ref.weight.shape[:2], where
            assert layer.c_out % layer.groups == 0, where


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layers_equal_litert(request, references, case):
    record = open_model(_model_path(request, *case))
    assert record.framework == "tflite" and record.name == case[1]
    _assert_layers_equal(record, references[case][0])


def _builtin_code_only(data: bytes) -> bytes:
    """The model as a writer that sets only ``builtin_code`` stores it (ai-edge-quantizer
    does so for the DEQUANTIZE operators it adds): every deprecated_builtin_code zeroed,
    its default. LiteRT takes the larger of the two codes, so it reads the same model."""
    out = bytearray(data)
    model = tflite.Model.GetRootAs(data, 0)
    for index in range(model.OperatorCodesLength()):
        table = model.OperatorCodes(index)._tab
        offset = table.Offset(4)  # vtable slot of deprecated_builtin_code
        if offset:
            out[table.Pos + offset] = 0
    return bytes(out)


@pytest.mark.parametrize("case", [("mediapipe_models", "face_detection_full_range_sparse"),
                                  ("microwakeword_models", "okay_nabu"),
                                  ("openwakeword_models", "embedding_model")],
                         ids=lambda case: case[1])
def test_operator_codes_in_builtin_code_alone(request, references, case, tmp_path):
    path = tmp_path / f"{case[1]}.tflite"
    path.write_bytes(_builtin_code_only(_model_path(request, *case).read_bytes()))
    expected, _subgraphs = reference_layers(path)
    assert len(expected) == len(references[case][0])
    record = open_model(path)
    _assert_layers_equal(record, expected)
    assert record.operator_counts == open_model(_model_path(request, *case)).operator_counts


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_3x3_counts(request, references, case):
    record = open_model(_model_path(request, *case))
    expected, _subgraphs = references[case]
    count = sum(layer.n_filters for layer in record.layers if layer.kernel_shape == (3, 3))
    assert (len(record.layers), count) == (len(expected), _count(expected)) == EXPECTED[case]


def test_the_models_hold_the_features_meant(references):
    """What the real models exercise, so a different wheel cannot quietly drop it."""
    layers = {case: refs for case, (refs, _n) in references.items()}
    subgraphs = {case: n for case, (_refs, n) in references.items()}
    every = [(case, layer) for case, refs in layers.items() for layer in refs]
    dtypes = {(layer.kind, layer.source_dtype) for _case, layer in every}
    assert {(CONV, "float16"), (CONV, "float32"), (QUANTIZED_CONV, "int8"),
            (CONV_TRANSPOSE, "float16")} <= dtypes
    assert any(layer.groups > 1 and layer.weight.shape[2:] == (1, 1) for _c, layer in every)
    assert any(layer.strides != (1, 1) for _c, layer in every)
    assert subgraphs[("microwakeword_models", "okay_nabu")] == 2
    assert subgraphs[("openwakeword_models", "hey_jarvis")] == 3


def test_database_from_the_real_models(request, references, tmp_path):
    zoo = tmp_path / "zoo"
    for fixture, stem in CASES:
        folder = zoo / fixture.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(_model_path(request, fixture, stem), folder)
    db = tmp_path / "tflite.h5"
    done = subprocess.run([sys.executable, "-m", "filterdb", "build", os.fspath(zoo), "-o",
                           os.fspath(db), "--no-quality"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total = sum(_count(refs) for refs, _n in references.values())
    with h5py.File(db, "r") as handle:
        assert handle["filters"].shape[0] == total
    meta = pd.read_hdf(db, "meta")
    with_3x3 = {stem for (_f, stem), (refs, _n) in references.items() if _count(refs)}
    assert set(meta["model"]) == with_3x3
    assert int(meta.groupby("model")["(3, 3) filters"].first().sum()) == total


@pytest.mark.parametrize("stem", ["face_detection_full_range_sparse", "selfie_segmentation"])
def test_damaged_copies_fail_in_one_line(mediapipe_models, tmp_path, stem):
    """Cut or overwritten copies of a real model: a record or one ModelReadError line."""
    data = (mediapipe_models / f"{stem}.tflite").read_bytes()
    rng = np.random.default_rng(0)
    damaged = [data[:cut] for cut in (8, 64, 4096, len(data) // 2, len(data) - 1)]
    for start in rng.integers(8, len(data) - 16, size=24):
        copy = bytearray(data)
        copy[start:start + 8] = rng.integers(0, 256, size=8, dtype=np.uint8).tobytes()
        damaged.append(bytes(copy))
    for number, content in enumerate(damaged):
        path = tmp_path / f"{stem}_{number}.tflite"
        path.write_bytes(content)
        try:
            open_model(path)
        except ModelReadError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


def test_mediapipe_transposed_conv_with_short_options(mediapipe_models, tmp_path):
    """Convolution2DTransposeBias keeps its strides in 12 bytes of custom options; fewer
    bytes are a one-line refusal, not a read past them."""
    data = bytearray((mediapipe_models / "selfie_segmentation.tflite").read_bytes())
    model = tflite.Model.GetRootAs(bytes(data), 0)
    graph = model.Subgraphs(0)
    custom = [graph.Operators(i) for i in range(graph.OperatorsLength())
              if model.OperatorCodes(graph.Operators(i).OpcodeIndex()).CustomCode()
              == b"Convolution2DTransposeBias"]
    assert len(custom) == 1 and custom[0].CustomOptionsLength() == 12
    table = custom[0]._tab
    start = table.Vector(table.Offset(14))  # custom_options, after its uint32 length
    data[start - 4:start] = struct.pack("<I", 8)
    path = tmp_path / "short_options.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert str(caught.value).startswith(f"{path}: Convolution2DTransposeBias operator ")
    assert "has 8 bytes of options, expected 12" in str(caught.value)


def test_a_custom_operator_litert_lacks_is_not_run_not_a_failure(mediapipe_models):
    """Selfie segmentation decodes with MediaPipe's Convolution2DTransposeBias, which
    LiteRT has no kernel for: the model is "not run" (it says nothing about the model),
    while a model of builtin operators runs."""
    from filterdb.readers import tflite_run
    from filterdb.records import NOT_RUN, RUNS_YES

    result = tflite_run.run(mediapipe_models / "selfie_segmentation.tflite", None, 0)
    assert result.runs == NOT_RUN
    assert "Convolution2DTransposeBias" in result.reason
    assert tflite_run.run(mediapipe_models / "hand_recrop.tflite", None, 0).runs == RUNS_YES
