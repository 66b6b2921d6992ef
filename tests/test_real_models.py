"""Real trained models: the three PaddlePaddle-exported ONNX models of rapidocr-onnxruntime
1.4.4 (text detection, recognition, direction classification). Their weights sit in
``Constant`` nodes (no initializers), one model has ConvTranspose layers.

Everything is compared with tests/reference.py, an independent onnx + numpy_helper
reading, model by model, in the stored order (depth, then graph order)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest

import filterdb
from filterdb.build import BuildOptions, build

from .reference import expand_filter_ids, reference_model

MODELS = ("ch_PP-OCRv4_det_infer", "ch_PP-OCRv4_rec_infer", "ch_ppocr_mobile_v2.0_cls_infer")


@pytest.fixture(scope="module")
def real_db(rapidocr_models, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("real") / "rapidocr.h5"
    report = build(rapidocr_models, db, options=BuildOptions(workers=2))
    assert {o.model: o.status for o in report.outcomes} == dict.fromkeys(MODELS, "added")
    return db


@pytest.fixture(scope="module")
def references(rapidocr_models):
    return {name: reference_model(rapidocr_models / f"{name}.onnx") for name in MODELS}


def _independent_3x3_count(path: Path) -> int:
    """Count 3x3 filters straight from the graph: weights of Conv nodes come from
    Constant nodes (no initializers in PaddlePaddle exports)."""
    model = onnx.load(str(path))
    assert len(model.graph.initializer) == 0
    constants = {node.output[0]: attr.t for node in model.graph.node
                 if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"}
    count = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            dims = list(constants[node.input[1]].dims)
            if len(dims) == 4 and dims[2:] == [3, 3]:
                count += dims[0] * dims[1]
    return count


def test_models_and_3x3_counts(real_db, rapidocr_models, references):
    opened = filterdb.open(real_db)
    models = opened.models.set_index("model")
    assert list(opened.models["model"]) == list(MODELS)
    for name in MODELS:
        count = _independent_3x3_count(rapidocr_models / f"{name}.onnx")
        assert count > 0
        assert models.loc[name, "(3, 3) filters"] == count == references[name].count((3, 3))
        ref = references[name]
        shapes = {layer.kernel for layer in ref.layers}
        for shape in shapes:
            column = f"({shape[0]}, {shape[1]}) filters"
            assert models.loc[name, column] == ref.count(shape), (name, shape)
        assert models.loc[name, "total_filters"] == sum(ref.count(s) for s in shapes)
        assert models.loc[name, "n_layers"] == len(ref.layers)
        assert models.loc[name, "depth"] == ref.total_depth
        assert models.loc[name, "producer"] == ref.producer
        assert models.loc[name, "opset"] == ref.opset
        for op, n in ref.op_counts.items():
            assert models.loc[name, f"op:{op}"] == n, (name, op)
    assert models.loc["ch_PP-OCRv4_det_infer", "op:ConvTranspose"] == 2
    assert opened.filter_count() == sum(models["(3, 3) filters"])


def test_filters_equal_the_model_weights(real_db, references):
    opened = filterdb.open(real_db)
    with h5py.File(real_db, "r") as handle:
        filters = handle["filters"][...].reshape(-1, 9)
    assert len(filters) == sum(ref.count() for ref in references.values())
    for row in opened.models.to_dict("records"):
        ref = references[row["model"]]
        stored = filters[row["filter_id_start"]:row["filter_id_stop"]]
        np.testing.assert_array_equal(stored, ref.filters().reshape(-1, 9))
        np.testing.assert_array_equal(opened.select(model=row["model"]).read(), ref.filters())


def test_layers_follow_depth_then_graph_order(real_db, references):
    opened = filterdb.open(real_db)
    for model_id, name in enumerate(MODELS):
        layers = opened.layers[opened.layers["model_id"] == model_id]
        ref = references[name]
        assert len(layers) == len(ref.layers)
        assert list(layers["conv_depth"]) == [layer.conv_depth for layer in ref.layers]
        assert list(layers["n_filters"]) == [int(np.prod(layer.weight.shape[:2]))
                                             for layer in ref.layers]
        assert list(zip(layers["kh"], layers["kw"], strict=True)) == [
            layer.kernel for layer in ref.layers]
        top = max(layer.conv_depth for layer in ref.layers)
        np.testing.assert_allclose(layers["conv_depth_norm"],
                                   [layer.conv_depth / top for layer in ref.layers])


def test_meta_rows_per_model(real_db, references):
    meta = pd.read_hdf(real_db, "meta")
    with h5py.File(real_db, "r") as handle:
        filters = handle["filters"][...].reshape(-1, 9)
    covered = []
    for model_id, name in enumerate(MODELS):
        ref = references[name]
        rows = meta.loc[model_id]
        depths = sorted({layer.conv_depth for layer in ref.layers if layer.kernel == (3, 3)})
        assert list(rows.index.get_level_values("conv_depth")) == depths
        assert set(rows["model"]) == {name}
        for (conv_depth, _), row in rows.iterrows():
            ids = expand_filter_ids(row["filter_ids"])
            covered.extend(ids)
            np.testing.assert_array_equal(
                filters[ids.start:ids.stop],
                ref.filters((3, 3), conv_depth=conv_depth).reshape(-1, 9))
        assert set(rows["(3, 3) filters"]) == {ref.count()}
        assert set(rows["Conv"]) == {ref.op_counts["Conv"]}
    assert sorted(covered) == list(range(len(filters)))
