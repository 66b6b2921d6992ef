"""Agreement with the published tool, torchconvquality 0.3.0, on real trained models:
the three rapidocr-onnxruntime 1.4.4 ONNX models and the facenet-pytorch 2.6.0 MTCNN
state dicts (pnet, rnet, onet)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torchconvquality import measure_conv_weight_quality

import filterdb
from filterdb import extraction
from filterdb.api import model_record
from filterdb.layer_quality import layer_metrics

TIGHT = ("sparsity", "variance_entropy", "variance_entropy_norm", "variance_entropy_clean",
         "variance_entropy_clean_norm")
RAPIDOCR = {"ch_PP-OCRv4_det_infer": 12, "ch_PP-OCRv4_rec_infer": 7,
            "ch_ppocr_mobile_v2.0_cls_infer": 4}   # 3x3 conv layers (depthwise included)
MTCNN = {"pnet": 3, "rnet": 2, "onet": 3}


def reference(weight: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchconvquality imports distutils
        return measure_conv_weight_quality(
            torch.from_numpy(np.ascontiguousarray(weight, np.float32)))


def assert_agrees(ours: dict, weight: np.ndarray, where: str) -> None:
    theirs = reference(weight)
    assert ours["n"] == theirs["n"], where
    for key in TIGHT:
        assert abs(ours[key] - theirs[key]) <= 1e-6, (where, key, ours[key], theirs[key])
    assert abs(ours["orthogonality"] - theirs["orthogonality"]) <= 1e-5, (
        where, ours["orthogonality"], theirs["orthogonality"])


def layers_3x3(model) -> list:
    return [layer for layer in extraction.ordered_layers(model_record(model))
            if layer.kernel_shape == (3, 3)]


def test_rapidocr_3x3_layers_agree_with_torchconvquality(rapidocr_models):
    compared = 0
    for name, count in RAPIDOCR.items():
        path = rapidocr_models / f"{name}.onnx"
        table = filterdb.quality(path).set_index("name")
        layers = layers_3x3(path)
        assert len(layers) == count, name
        for layer in layers:
            row = table.loc[layer.name]
            assert row["shape"] == "x".join(map(str, layer.weight.shape))
            assert_agrees(row.to_dict(), layer.weight, f"{name}:{layer.name}")
            compared += 1
    assert compared == 23


def test_mtcnn_state_dicts_agree_with_torchconvquality(facenet_models):
    compared = 0
    for name, count in MTCNN.items():
        state = torch.load(facenet_models / f"{name}.pt", weights_only=True)
        keys = [key for key, value in state.items()
                if value.ndim == 4 and tuple(value.shape[2:]) == (3, 3)]
        assert len(keys) == count, name
        table = filterdb.quality(state).set_index("name")
        direct = layer_metrics([state[key].numpy() for key in keys])
        for key, row in zip(keys, direct, strict=True):
            weight = state[key].numpy()
            assert_agrees(table.loc[key].to_dict(), weight, f"{name}:{key}")
            assert_agrees(row, weight, f"{name}:{key} (layer_metrics)")
            compared += 1
    assert compared == 8


def orthogonality_float64(weight: np.ndarray) -> float:
    """method.md's formula in float64: every non-zero row divided by its norm."""
    rows = np.asarray(weight, np.float64).reshape(len(weight), -1)
    norms = np.linalg.norm(rows, axis=1)
    rows /= np.where(norms == 0, 1, norms)[:, None]
    c = len(rows)
    return 1.0 if c < 2 else 1 - np.abs(rows @ rows.T - np.eye(c)).sum() / (c * (c - 1))


@pytest.mark.parametrize("name", list(RAPIDOCR))
def test_every_rapidocr_layer_agrees(rapidocr_models, name):
    """All kernel sizes (1x1, 5x5, 1x3, 2x2 as well): sparsity and the unnormalised
    entropies equal torchconvquality's; orthogonality equals the formula in float64.

    (torchconvquality computes row norms in float32, where rows of norm below ~1e-19
    underflow to 0 and stay unnormalised; det p2o.Conv.22 and rec p2o.Conv.20 hold such
    rows. The rec model also holds rows of norm ~2e-39, whose reciprocal does not fit in
    float32.)"""
    layers = extraction.ordered_layers(model_record(rapidocr_models / f"{name}.onnx"))
    rows = layer_metrics([layer.weight for layer in layers])
    for layer, row in zip(layers, rows, strict=True):
        where = f"{name}:{layer.name} {layer.weight.shape}"
        theirs = reference(layer.weight)
        for key in ("sparsity", "variance_entropy", "variance_entropy_clean"):
            assert abs(row[key] - theirs[key]) <= 1e-6, (where, key, row[key], theirs[key])
        assert abs(row["orthogonality"] - orthogonality_float64(layer.weight)) <= 1e-5, (
            where, row["orthogonality"], orthogonality_float64(layer.weight))
