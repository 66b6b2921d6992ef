"""The same network in every format gives the same filters, order and orientation.

Each writer saves tests/readers/network.py's network; every reader must return
exactly ``weight.reshape(-1, kh, kw)`` in ONNX layout, in the network's layer order
(int8 TFLite within half a quantisation step per output channel).
"""

from __future__ import annotations

import numpy as np
import pytest

from filterdb.extraction import ordered_layers
from filterdb.readers import open_model

from . import writers_keras, writers_safetensors, writers_tflite, writers_torch
from .network import equivalence_network, expected_filters, write_onnx

WRITERS = {
    "onnx": ("net.onnx", write_onnx),
    "state dict": ("net.pt", lambda p, n: writers_torch.write(p, n, "state_dict")),
    "lightning checkpoint": ("net.ckpt", lambda p, n: writers_torch.write(p, n, "lightning")),
    "torchscript": ("net.pt", lambda p, n: writers_torch.write(p, n, "torchscript")),
    "safetensors": ("net.safetensors", writers_safetensors.write_safetensors),
    "keras": ("net.keras", writers_keras.write_network_keras),
    "keras legacy h5": ("net.h5", writers_keras.write_network_h5),
    "tflite": ("net.tflite", writers_tflite.write_network),
}

@pytest.mark.parametrize("form", sorted(WRITERS))
def test_every_format_gives_the_same_filters(form, tmp_path):
    network = equivalence_network()
    name, write = WRITERS[form]
    record = open_model(write(tmp_path / name, network) or tmp_path / name)
    layers = ordered_layers(record)
    assert len(layers) == len(network)
    for layer, spec, expected in zip(layers, network, expected_filters(network), strict=True):
        assert layer.kernel_shape == spec.kernel
        assert (layer.c_out, layer.c_in_per_group) == (spec.c_out,
                                                       spec.c_in // spec.groups), spec.name
        np.testing.assert_array_equal(layer.filters(), expected, err_msg=f"{form} {spec.name}")
    # orientation: the first 'plain' filter is weight[0, 0], not its transpose or flip
    plain = layers[0].filters()[0]
    assert plain[0, 2] == network[0].weight[0, 0, 0, 2]
    assert plain[2, 0] == network[0].weight[0, 0, 2, 0]
    assert plain[0, 2] != plain[2, 0]


def test_int8_tflite_within_quantisation_step(tmp_path):
    network = equivalence_network()
    path = writers_tflite.write_network(tmp_path / "int8.tflite", network, variant="int8")
    layers = ordered_layers(open_model(path or tmp_path / "int8.tflite"))
    for layer, spec in zip(layers, network, strict=True):
        weight = spec.weight
        axis = 1 if spec.kind == "conv_transpose" else 0
        step = np.abs(weight).max(axis=tuple(a for a in range(4) if a != axis)) / 127
        error = np.abs(layer.weight - weight)
        bound = np.expand_dims(step / 2, tuple(a for a in range(4) if a != axis)) + 1e-7
        assert (error <= bound).all(), spec.name


def test_a_mixed_format_zoo_builds_into_one_database(tmp_path):
    import subprocess
    import sys

    import filterdb

    network = equivalence_network()
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    forms = ["onnx", "torchscript", "safetensors", "keras", "tflite"]
    for number, form in enumerate(forms):
        name, write = WRITERS[form]
        # one seed per file: the same weights in two formats would be skipped as duplicates
        write(zoo / f"m{number}-{name}", equivalence_network(seed=number))
    db = tmp_path / "db.h5"
    built = subprocess.run([sys.executable, "-m", "filterdb", "build", str(zoo), "-o", str(db)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    models = filterdb.open(db).models
    assert sorted(models["format"]) == ["keras", "onnx", "safetensors", "tflite", "torchscript"]
    three = sum(len(f) for f, spec in zip(expected_filters(network), network, strict=True)
                if spec.kernel == (3, 3))
    assert (models["(3, 3) filters"] == three).all()
    info = subprocess.run([sys.executable, "-m", "filterdb", "info", str(db)],
                          capture_output=True, text=True, check=True).stdout
    section = info[info.index("models by format:"):].splitlines()[1:6]
    assert sorted(line.split() for line in section) == sorted(
        ["1", form] for form in ["keras", "onnx", "safetensors", "tflite", "torchscript"])
