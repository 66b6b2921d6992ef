"""Tests of the Keras reader (.keras archives, legacy HDF5) through ``open_model``; a
zoo mixing Keras and safetensors files built into a database."""

from __future__ import annotations

import json
import os
import zipfile

import h5py
import ml_dtypes
import numpy as np
import pytest

import filterdb
from filterdb.build import build
from filterdb.errors import ModelReadError
from filterdb.extraction import conv_depths, ordered_layers
from filterdb.readers import Limits, find_reader, is_model_file, open_model
from filterdb.readers import keras as reader

from . import writers_keras as wk
from .network import equivalence_network, expected_filters
from .refusals import one_line, refused_within
from .writers_safetensors import write_safetensors

NAMES = ["plain", "strided", "grouped", "depthwise", "transposed", "wide"]
ATTRIBUTES = [  # op_type, c_out, c_in_per_group, groups, depthwise, kernel, strides
    ("conv", 8, 3, 1, False, (3, 3), (1, 1)),
    ("conv", 8, 8, 1, False, (3, 3), (2, 2)),
    ("conv", 8, 4, 2, False, (3, 3), (1, 1)),
    ("conv", 8, 1, 8, True, (3, 3), (1, 1)),
    ("conv_transpose", 4, 8, 1, False, (3, 3), (2, 2)),
    ("conv", 6, 4, 1, False, (1, 3), (1, 1)),
]


def _attributes(layer):
    return (layer.op_type, layer.c_out, layer.c_in_per_group, layer.groups, layer.depthwise,
            layer.kernel_shape, layer.strides)


@pytest.fixture(scope="module")
def network():
    return equivalence_network()


def _check_network(record, network, names=NAMES, depths=(0, 2, 4, 6, 8, 10)):
    assert record.framework == "keras"
    assert [layer.name for layer in record.layers] == list(names)
    for layer, expected in zip(record.layers, expected_filters(network), strict=True):
        assert layer.weight.dtype == np.float32
        assert layer.source_dtype == "float32"
        np.testing.assert_array_equal(layer.filters(), expected)
    assert [_attributes(layer) for layer in record.layers] == ATTRIBUTES
    # filter 0 of the asymmetric 'plain' kernel is weight[0, 0], not its transpose
    plain = network[0].weight
    assert not np.array_equal(plain[0, 0], plain[0, 0].T)
    np.testing.assert_array_equal(record.layers[0].filters()[0], plain[0, 0])
    assert [layer.depth for layer in record.layers] == list(depths)
    assert not any(layer.depth_is_approximate for layer in record.layers)
    assert ordered_layers(record) == record.layers
    assert [c for c, _ in conv_depths(record.layers)] == [0, 1, 2, 3, 4, 5]


# .keras ---------------------------------------------------------------------------

def test_keras_functional(tmp_path, network):
    path = wk.write_network_keras(tmp_path / "net.keras", network)
    record = open_model(path)
    _check_network(record, network)
    assert record.name == "net" and record.path == os.fspath(path)
    assert record.producer == f"keras {wk.KERAS3_VERSION}"
    assert record.total_depth == 12
    assert record.operator_counts == {"Conv2D": 4, "ReLU": 6,
                                      "DepthwiseConv2D": 1, "Conv2DTranspose": 1}
    assert [layer.order for layer in record.layers] == [0, 2, 4, 6, 8, 10]


def test_keras_weight_groups_are_named_after_classes(tmp_path, network):
    """What Keras writes, and what the reader relies on."""
    path = wk.write_network_keras(tmp_path / "net.keras", network)
    with zipfile.ZipFile(path) as archive:
        assert set(archive.namelist()) == {"metadata.json", "config.json", "model.weights.h5"}
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as handle:
        assert sorted(handle["layers"]) == [
            "conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "conv2d_transpose",
            "depthwise_conv2d", "input_layer", "re_lu", "re_lu_1", "re_lu_2", "re_lu_3",
            "re_lu_4", "re_lu_5"]
        assert handle["layers/conv2d_2/vars/0"].shape == (3, 3, 4, 8)  # 'grouped'
        assert handle["layers/conv2d_3/vars/0"].shape == (1, 3, 4, 6)  # 'wide'
        assert handle["layers/depthwise_conv2d/vars/0"].shape == (3, 3, 8, 1)
        assert handle["layers/conv2d_transpose/vars/0"].shape == (3, 3, 4, 8)


def test_compressed_keras_archive(tmp_path, network):
    layers = wk.network_layers(network)
    path = wk.write_keras(tmp_path / "zipped.keras", layers, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
    _check_network(open_model(path), network)


def test_keras_sequential(tmp_path, network):
    path = wk.write_network_keras(tmp_path / "seq.keras", network, sequential=True)
    record = open_model(path)
    _check_network(record, network, depths=range(6))
    assert record.total_depth == 6


def test_tf_keras_archive_layout(tmp_path, network):
    """tf.keras 2.13-2.15: ``_layer_checkpoint_dependencies`` and skipped numbers."""
    path = wk.write_network_keras(tmp_path / "tfk.keras", network, tf_keras=True)
    with zipfile.ZipFile(path) as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as handle:
        groups = sorted(handle["_layer_checkpoint_dependencies"])
        assert [g for g in groups if g.startswith("conv2d")] == [
            "conv2d", "conv2d_2", "conv2d_4", "conv2d_6", "conv2d_transpose"]
    _check_network(open_model(path), network)


def test_weight_groups_named_after_layers_are_found_too(tmp_path, network):
    path = wk.write_keras(tmp_path / "named.keras", wk.network_layers(network), by_name=True)
    _check_network(open_model(path), network)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_keras_low_precision(tmp_path, network, dtype):
    path = wk.write_network_keras(tmp_path / f"{dtype}.keras", network, dtype=dtype)
    record = open_model(path)
    assert [layer.source_dtype for layer in record.layers] == [dtype] * 6
    for layer, spec in zip(record.layers, network, strict=True):
        assert layer.weight.dtype == np.float32
        low = spec.weight.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16)
        np.testing.assert_array_equal(layer.filters(),
                                      low.astype(np.float32).reshape(-1, *spec.kernel))
    assert not np.array_equal(record.layers[0].weight, network[0].weight)


def test_nested_functional_is_flattened(tmp_path, network):
    layers = wk.nest(wk.network_layers(network), 5)  # plain..grouped+relu in 'backbone'
    path = wk.write_keras(tmp_path / "nested.keras", layers)
    record = open_model(path)
    names = ["backbone/plain", "backbone/strided", "backbone/grouped", "depthwise",
             "transposed", "wide"]
    _check_network(record, network, names=names)


def test_depthwise_multiplier_channel_order(tmp_path):
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)  # (kh, kw, c_in, m)
    layer = wk.KLayer("DepthwiseConv2D", "dw",
                      {"name": "dw", "kernel_size": [3, 3], "strides": [1, 1],
                       "depth_multiplier": 2, "dilation_rate": [1, 1]},
                      [("depthwise_kernel", kernel), ("bias", np.zeros(8, np.float32))],
                      ["input_layer"])
    path = wk.write_keras(tmp_path / "dw.keras", [wk.input_layer(channels=4), layer])
    (got,) = open_model(path).layers
    assert (got.c_out, got.c_in_per_group, got.groups, got.depthwise) == (8, 1, 4, True)
    for c in range(4):
        for m in range(2):
            np.testing.assert_array_equal(got.weight[c * 2 + m, 0], kernel[:, :, c, m])


def test_separable_conv_is_two_layers(tmp_path):
    rng = np.random.default_rng(6)
    depthwise = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    pointwise = rng.standard_normal((1, 1, 6, 5)).astype(np.float32)
    after = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    layers = [
        wk.input_layer(),
        wk.KLayer("SeparableConv2D", "sep",
                  {"name": "sep", "filters": 5, "kernel_size": [3, 3], "strides": [2, 2],
                   "depth_multiplier": 2, "dilation_rate": [1, 1]},
                  [("depthwise_kernel", depthwise), ("pointwise_kernel", pointwise),
                   ("bias", np.zeros(5, np.float32))], ["input_layer"]),
        wk.KLayer("Conv2D", "after", {"name": "after", "filters": 4, "kernel_size": [3, 3]},
                  [("kernel", after), ("bias", np.zeros(4, np.float32))], ["sep"]),
    ]
    for path in (wk.write_keras(tmp_path / "sep.keras", layers),
                 wk.write_keras_h5(tmp_path / "sep.h5", layers)):
        record = open_model(path)
        assert [layer.name for layer in record.layers] == [
            "sep/depthwise", "sep/pointwise", "after"]
        first, second, third = record.layers
        assert (first.c_out, first.groups, first.strides) == (6, 3, (2, 2))
        np.testing.assert_array_equal(first.weight,
                                      depthwise.transpose(2, 3, 0, 1).reshape(6, 1, 3, 3))
        assert (second.c_out, second.c_in_per_group, second.kernel_shape) == (5, 6, (1, 1))
        np.testing.assert_array_equal(second.weight, pointwise.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(third.weight, after.transpose(3, 2, 0, 1))
        assert [layer.depth for layer in record.layers] == [0, 1, 2]


def _branch_layers():
    rng = np.random.default_rng(7)

    def conv(name, inbound, c_in=3):
        kernel = rng.standard_normal((3, 3, c_in, 4)).astype(np.float32)
        return wk.KLayer("Conv2D", name, {"name": name, "filters": 4, "kernel_size": [3, 3]},
                         [("kernel", kernel), ("bias", np.zeros(4, np.float32))], inbound)

    return [wk.input_layer(), conv("a", ["input_layer"]), conv("b", ["input_layer"]),
            wk.KLayer("Add", "add", {"name": "add"}, [], ["a", "b"]),
            conv("c", ["add"], c_in=4)]


def test_parallel_branches_share_a_depth(tmp_path):
    layers = _branch_layers()
    for path in (wk.write_keras(tmp_path / "branch.keras", layers),
                 wk.write_keras_h5(tmp_path / "branch.h5", layers)):
        record = open_model(path)
        assert [layer.name for layer in record.layers] == ["a", "b", "c"]
        assert [layer.depth for layer in record.layers] == [0, 0, 2]
        assert conv_depths(record.layers) == [(0, 0.0), (0, 0.0), (1, 1.0)]


def test_shared_layer_takes_its_first_depth(tmp_path):
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
    layers = [wk.input_layer(),
              wk.KLayer("Conv2D", "shared", {"name": "shared", "filters": 3,
                                             "kernel_size": [3, 3]},
                        [("kernel", kernel), ("bias", np.zeros(3, np.float32))],
                        ["input_layer"]),
              wk.relu("relu", "shared")]
    config = wk.model_config(layers)
    history = config["config"]["layers"][1]["inbound_nodes"][0]
    second = json.loads(json.dumps(history))
    second["args"][0]["config"]["keras_history"] = ["relu", 0, 0]
    config["config"]["layers"][1]["inbound_nodes"].append(second)  # shared(relu(shared(x)))
    config["config"]["output_layers"] = [["shared", 1, 0]]
    record = open_model(wk.write_keras(tmp_path / "shared.keras", layers, config=config))
    assert [layer.depth for layer in record.layers] == [0]
    assert record.total_depth == 3


def test_lambda_layer_is_never_run(tmp_path, network):
    layers = wk.network_layers(network[:1])
    code = "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwApAk7pAgAAAKkAKQHaAXhyAgAAAHIC"
    layers.append(wk.KLayer("Lambda", "lam", {"name": "lam", "function": {
        "class_name": "__lambda__", "config": {"code": code, "defaults": None,
                                               "closure": None}}}, [], ["plain_relu"]))
    record = open_model(wk.write_keras(tmp_path / "lam.keras", layers))
    assert [layer.name for layer in record.layers] == ["plain"]
    assert record.operator_counts["Lambda"] == 1


def test_subclassed_model_falls_back_to_file_order(tmp_path, network):
    config = {"module": "mymodels", "class_name": "MyNet", "config": {"trainable": True},
              "registered_name": "custom>MyNet"}
    path = wk.write_keras(tmp_path / "sub.keras", wk.network_layers(network), config=config)
    record = open_model(path)
    by_name = {layer.name: layer for layer in record.layers}
    assert list(by_name) == ["layers/conv2d", "layers/conv2d_1", "layers/conv2d_2",
                             "layers/conv2d_3", "layers/conv2d_transpose",
                             "layers/depthwise_conv2d"]
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert [layer.depth for layer in record.layers] == list(range(6))
    expected = dict(zip(by_name, [0, 1, 2, 5, 4, 3], strict=True))  # group -> network index
    filters = expected_filters(network)
    for name, layer in by_name.items():
        np.testing.assert_array_equal(layer.filters(), filters[expected[name]])


def test_keras3_weights_file_alone(tmp_path, network):
    path = wk.write_keras_weights(tmp_path / "net.weights.h5", wk.network_layers(network))
    with h5py.File(path, "a") as handle:  # a trained model's optimizer state
        state = handle.create_group("optimizer/vars")
        state["0"] = np.array(100)
        state["1"] = np.zeros((3, 3, 3, 8), np.float32)  # momentum of a kernel
    assert is_model_file(path)
    assert find_reader(path) is reader
    record = open_model(path)
    assert len(record.layers) == 6
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert record.layers[-1].depthwise  # layers/depthwise_conv2d, by its group name


# legacy HDF5 ---------------------------------------------------------------------

@pytest.mark.parametrize("style", ["keras2", "keras3", "short"])
def test_legacy_h5_functional(tmp_path, network, style):
    path = wk.write_network_h5(tmp_path / "net.h5", network, style=style)
    with h5py.File(path) as handle:
        assert "model_config" in handle.attrs
        if style == "keras2":
            assert "model_weights/plain/plain/kernel:0" in handle
    record = open_model(path)
    _check_network(record, network)
    assert record.producer == f"keras {wk.KERAS2_VERSION} (tensorflow)"
    assert record.total_depth == 12


def test_legacy_h5_sequential(tmp_path, network):
    path = wk.write_network_h5(tmp_path / "seq.hdf5", network, sequential=True)
    _check_network(open_model(path), network, depths=range(6))


def test_legacy_h5_nested_model(tmp_path, network):
    layers = wk.nest(wk.network_layers(network, input_name="input_1"), 5)
    path = wk.write_keras_h5(tmp_path / "nested.h5", layers)
    with h5py.File(path) as handle:
        assert "model_weights/backbone/plain/kernel:0" in handle
    names = ["backbone/plain", "backbone/strided", "backbone/grouped", "depthwise",
             "transposed", "wide"]
    _check_network(open_model(path), network, names=names)


def test_legacy_weights_only_file(tmp_path, network):
    path = wk.write_network_h5(tmp_path / "weights.h5", network, weights_only=True)
    with h5py.File(path) as handle:
        assert "layer_names" in handle.attrs and "model_config" not in handle.attrs
    record = open_model(path)
    assert [layer.name for layer in record.layers] == NAMES
    for layer, expected in zip(record.layers, expected_filters(network), strict=True):
        np.testing.assert_array_equal(layer.filters(), expected)
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert [layer.depth for layer in record.layers] == list(range(6))
    # without a config: depthwise and transposed from weight and layer names
    assert [layer.op_type for layer in record.layers] == [a[0] for a in ATTRIBUTES]
    assert record.layers[3].depthwise


def test_legacy_attribute_lists_split_in_chunks(tmp_path, network):
    path = wk.write_network_h5(tmp_path / "chunked.h5", network)
    with h5py.File(path, "a") as handle:
        group = handle["model_weights"]
        names = group.attrs["layer_names"]
        del group.attrs["layer_names"]
        group.attrs["layer_names0"], group.attrs["layer_names1"] = names[:3], names[3:]
        del handle.attrs["model_config"]  # weights-only reading uses layer_names
    record = open_model(path)
    assert [layer.name for layer in record.layers] == NAMES


def test_weights_only_file_of_one_nested_model_keeps_same_named_layers_apart(tmp_path):
    """The layout of transformers' TF checkpoints (``tf_model.h5``): one group for the
    whole model, weight names with the full layer path, many layers called
    ``convolution``. Each is its own layer, named by its path inside the group."""
    rng = np.random.default_rng(0)
    stem = rng.standard_normal((3, 3, 3, 16)).astype(np.float32)      # HWIO
    block = rng.standard_normal((3, 3, 16, 32)).astype(np.float32)
    depthwise = rng.standard_normal((3, 3, 32, 1)).astype(np.float32)
    weights = {"tf_res_net_model/resnet/embedder/convolution/kernel:0": stem,
               "tf_res_net_model/resnet/embedder/normalization/gamma:0": np.ones(16),
               "tf_res_net_model/resnet/stages.0/layers.0/convolution/kernel:0": block,
               "tf_res_net_model/resnet/stages.0/dw/depthwise_kernel:0": depthwise}
    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["backend"], handle.attrs["keras_version"] = "tensorflow", "2.15.0"
        handle.attrs["layer_names"] = np.array([b"tf_res_net_model"])
        group = handle.create_group("tf_res_net_model")
        group.attrs["weight_names"] = np.array([name.encode() for name in weights])
        for name, values in weights.items():
            group.create_dataset(name, data=values)

    record = open_model(path)
    assert [layer.name for layer in record.layers] == [
        "resnet/embedder/convolution", "resnet/stages.0/layers.0/convolution",
        "resnet/stages.0/dw"]
    np.testing.assert_array_equal(record.layers[0].weight, stem.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(record.layers[1].weight, block.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(record.layers[2].weight, depthwise.transpose(2, 3, 0, 1))
    assert [layer.groups for layer in record.layers] == [1, 1, 32]


# broken, hostile and foreign files -------------------------------------------------

def test_kernel_not_matching_the_config_is_a_read_error(tmp_path, network):
    layers = wk.network_layers(network)
    layers[1].config = {**layers[1].config, "kernel_size": [5, 5]}
    with pytest.raises(ModelReadError) as caught:
        open_model(wk.write_keras(tmp_path / "bad.keras", layers))
    assert "kernel_size [5, 5]" in one_line(caught.value)


def test_missing_weights_are_a_read_error(tmp_path, network):
    def drop(handle):
        del handle["layers/conv2d_1"]

    path = wk.write_keras(tmp_path / "missing.keras", wk.network_layers(network), tamper=drop)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "no weights found for conv layer" in one_line(caught.value)


def test_huge_declared_kernel_is_refused_before_allocation(tmp_path, network):
    def inflate(handle):
        del handle["layers/conv2d/vars/0"]
        handle["layers/conv2d/vars"].create_dataset("0", shape=(3, 3, 2**16, 2**16),
                                                    dtype="f4", chunks=(3, 3, 16, 16))

    layers = wk.network_layers(network)
    layers[1].config = {**layers[1].config, "filters": 2**16}
    path = wk.write_keras(tmp_path / "huge.keras", layers, tamper=inflate)
    assert "element limit" in one_line(refused_within(path, 20 * 2**20))


def test_element_limit_is_enforced(tmp_path, network):
    path = wk.write_network_h5(tmp_path / "net.h5", network)
    with pytest.raises(ModelReadError) as caught:
        open_model(path, Limits(max_tensor_elements=100))
    assert "element limit" in one_line(caught.value)


def test_npz_weights_are_refused(tmp_path):
    path = tmp_path / "npz.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.npz", b"")
    assert reader.sniff(path.read_bytes()[:64], path)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "npz" in one_line(caught.value)


def test_zip_that_is_not_keras(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert not reader.sniff(path.read_bytes()[:64], path)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "no config.json" in one_line(caught.value)
    renamed = tmp_path / "other.zip"
    renamed.write_bytes(path.read_bytes())
    assert not is_model_file(renamed)


def test_truncated_keras_archive(tmp_path, network):
    whole = wk.write_network_keras(tmp_path / "whole.keras", network).read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(whole[: len(whole) // 2])
    assert not reader.sniff(whole[:64], path)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "damaged .keras archive" in one_line(caught.value)


def test_truncated_legacy_h5(tmp_path, network):
    whole = wk.write_network_h5(tmp_path / "whole.h5", network).read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(whole[: len(whole) // 2])
    assert not reader.sniff(whole[:64], path)
    assert is_model_file(path)  # a damaged model: built as failed, not ignored
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "not a readable HDF5 file" in one_line(caught.value)


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle["layers/table"] = np.arange(10)
        handle["weights"] = np.ones((3, 3, 3, 3), np.float32)
        handle.attrs["title"] = "some measurements"
    assert not reader.sniff(path.read_bytes()[:64], path)
    assert not is_model_file(path)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "holds no Keras model" in one_line(caught.value)


def test_sniff_ignores_other_formats(tmp_path, network):
    path = write_safetensors(tmp_path / "net.safetensors", network)
    assert not reader.sniff(path.read_bytes()[:64], path)
    keras = wk.write_network_keras(tmp_path / "net.keras", network)
    assert reader.sniff(keras.read_bytes()[:64], keras)
    legacy = wk.write_network_h5(tmp_path / "net.h5", network)
    assert reader.sniff(legacy.read_bytes()[:64], legacy)
    assert is_model_file(legacy)


# the CLI and a zoo ---------------------------------------------------------------

def test_check_cli_reads_a_keras_file(tmp_path, network, cli):
    path = wk.write_network_keras(tmp_path / "net.keras", network)
    result = cli("check", path, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == NAMES
    table = cli("check", path)
    assert table.returncode == 0, table.stderr
    assert f"{path}: " in table.stdout and "6 conv layers" in table.stdout


def test_zoo_of_keras_and_safetensors_files_builds(tmp_path, network):
    zoo = tmp_path / "zoo"
    wk.write_network_keras(zoo / "functional.keras", network)
    # another seed: the same weights in two files would be skipped as duplicates
    wk.write_network_h5(zoo / "legacy.h5", equivalence_network(seed=1))
    write_safetensors(zoo / "tensors.safetensors", network, dtype="float16")
    with h5py.File(zoo / "measurements.h5", "w") as handle:  # an HDF5 data file, no model
        handle["x"] = np.arange(3)
    db = tmp_path / "db.h5"
    report = build(zoo, db)
    assert report.count("added") == 3, [(o.model, o.status, o.reason) for o in report.outcomes]
    assert len(report.outcomes) == 3
    opened = filterdb.open(db)
    formats = dict(zip(opened.models["model"], opened.models["format"], strict=True))
    assert formats == {"functional": "keras", "legacy": "keras", "tensors": "safetensors"}
    precision = dict(zip(opened.models["model"], opened.models["weight_dtype"], strict=True))
    assert precision == {"functional": "float32", "legacy": "float32", "tensors": "float16"}
    layers = opened.layers
    keras_layers = layers[layers["model_id"] == 0]
    assert list(keras_layers["conv_depth"]) == [0, 1, 2, 3, 4, 5]
    assert not keras_layers["depth_is_approximate"].any()
    assert layers[layers["model_id"] == 2]["depth_is_approximate"].all()
    assert opened.filter_count() == 3 * sum(
        f.shape[0] for f in expected_filters(network) if f.shape[1:] == (3, 3))
    # the database itself is HDF5 with a .h5 suffix: never taken for a Keras model
    assert not reader.sniff(db.read_bytes()[:64], db)
    assert not is_model_file(db)
    with pytest.raises(ModelReadError):
        open_model(db)


# Keras 2 (tf.keras) legacy files, laid out as tf.keras 2.15 writes them ------------------

def _conv(name: str, inbound: list, shape=(3, 3, 4, 4), **config) -> tuple[dict, list]:
    """A Keras 2 config entry of a Conv2D-like layer and its (variable, array) list."""
    spec_class = config.pop("class_name", "Conv2D")
    kernel = np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
    base = {"name": name, "trainable": True, "dtype": "float32", "filters": shape[-1],
            "kernel_size": list(shape[:2]), "strides": [1, 1], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
            "activation": "linear", "use_bias": False, **config}
    entry = {"class_name": spec_class, "config": base, "name": name,
             "inbound_nodes": [[[ref, node, 0, {}] for ref, node in call] for call in inbound]}
    return entry, [("kernel" if spec_class != "DepthwiseConv2D" else "depthwise_kernel",
                    kernel)]


def _input(name: str, channels: int = 4) -> dict:
    return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
            "config": {"batch_input_shape": [None, 16, 16, channels], "dtype": "float32",
                       "sparse": False, "ragged": False, "name": name}}


def _functional(name: str, entries: list, inputs: list, outputs: list) -> dict:
    return {"class_name": "Functional", "config": {
        "name": name, "trainable": True, "layers": entries,
        "input_layers": [[n, 0, 0] for n in inputs],
        "output_layers": [[n, node, 0] for n, node in outputs]}}


def _write_keras2(path, config: dict, groups: dict[str, list], weights_only=False):
    """groups: top-level layer -> [(weight name ``owner/var:0``, array)]."""
    with h5py.File(path, "w") as handle:
        root = handle
        if not weights_only:
            handle.attrs["keras_version"] = b"2.15.0"
            handle.attrs["backend"] = b"tensorflow"
            handle.attrs["model_config"] = json.dumps(config).encode()
            root = handle.create_group("model_weights")
        root.attrs["layer_names"] = np.array([name.encode() for name in groups])
        for name, weights in groups.items():
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array([w.encode() for w, _ in weights]) \
                if weights else np.array([], dtype="S1")
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=value)
    return path


def test_keras2_nested_model_called_twice_has_its_calls_numbered_from_one(tmp_path):
    # tf.keras 2 numbers the calls of a nested Functional model that starts with an
    # InputLayer from 1 (node 0 is its construction), so head_a reads call 1 (the image)
    # and head_b call 2 (after pre1..pre3).
    enc_conv, enc_weights = _conv("enc_conv", [[("enc_in", 0)]])
    enc = {**_functional("enc", [_input("enc_in"), enc_conv], ["enc_in"], [("enc_conv", 0)]),
           "name": "enc", "inbound_nodes": [[["image", 0, 0, {}]], [["pre3", 0, 0, {}]]]}
    pre = [_conv(f"pre{i}", [[("image" if i == 1 else f"pre{i - 1}", 0)]]) for i in (1, 2, 3)]
    head_a = _conv("head_a", [[("enc", 1)]], shape=(1, 1, 4, 4))
    head_b = _conv("head_b", [[("enc", 2)]], shape=(1, 1, 4, 4))
    entries = [_input("image"), enc, *(e for e, _ in pre), head_a[0], head_b[0]]
    config = _functional("model", entries, ["image"], [("head_a", 0), ("head_b", 0)])
    groups = {"image": [], "enc": [(f"enc_conv/{v}:0", a) for v, a in enc_weights],
              **{e["name"]: [(f"{e['name']}/{v}:0", a) for v, a in w] for e, w in pre},
              **{e["name"]: [(f"{e['name']}/{v}:0", a) for v, a in w]
                 for e, w in (head_a, head_b)}}
    record = open_model(_write_keras2(tmp_path / "siamese.h5", config, groups))
    depths = {layer.name: layer.depth for layer in record.layers}
    assert depths == {"pre1": 0, "pre2": 1, "pre3": 2, "enc/enc_conv": 0, "head_a": 1,
                      "head_b": 4}
    assert not any(layer.depth_is_approximate for layer in record.layers)


def test_keras2_time_distributed_saves_its_layers_variables_as_its_own(tmp_path):
    up, up_weights = _conv("up", [], shape=(3, 3, 4, 6), class_name="Conv2DTranspose",
                           strides=[2, 2], output_padding=None, filters=4)  # (.., out, in)
    wrapped, wrapped_weights = _conv("g", [], shape=(3, 3, 2, 6), groups=3,
                                     dilation_rate=[2, 2])
    td = [{"class_name": "TimeDistributed", "name": outer, "inbound_nodes": [[[src, 0, 0, {}]]],
           "config": {"name": outer, "trainable": True, "dtype": "float32",
                      "layer": {"class_name": inner["class_name"], "config": inner["config"]}}}
          for outer, src, inner in (("tdg", "frames", wrapped), ("tdt", "tdg", up))]
    frames = _input("frames", 6)
    frames["config"]["batch_input_shape"] = [None, 3, 16, 16, 6]
    config = _functional("model", [frames, *td], ["frames"], [("tdt", 0)])
    groups = {"frames": [], "tdg": [(f"tdg/{v}:0", a) for v, a in wrapped_weights],
              "tdt": [(f"tdt/{v}:0", a) for v, a in up_weights]}
    record = open_model(_write_keras2(tmp_path / "td.h5", config, groups))
    got = [(layer.name, layer.op_type, layer.c_out, layer.c_in_per_group, layer.groups,
            layer.strides, layer.dilations) for layer in record.layers]
    assert got == [("tdg/g", "conv", 6, 2, 3, (1, 1), (2, 2)),
                   ("tdt/up", "conv_transpose", 4, 6, 1, (2, 2), (1, 1))]


def test_keras2_weights_only_submodel_saved_in_two_groups_counts_once(tmp_path):
    # save_weights("x.h5") of a model that calls a sub-model ``unit`` at the top and again
    # inside the Sequential ``seq``: Keras 2 writes unit's weights into both groups.
    rng = np.random.default_rng(0)
    unit = [("unit_conv/kernel:0", rng.standard_normal((3, 3, 4, 4)).astype(np.float32)),
            ("unit_conv/bias:0", np.zeros(4, np.float32))]
    seq = [*unit, ("seq_pw/kernel:0", rng.standard_normal((1, 1, 4, 4)).astype(np.float32))]
    up = [("up/kernel:0", rng.standard_normal((2, 2, 3, 4)).astype(np.float32))]
    path = _write_keras2(tmp_path / "nested_weights.h5", {},
                         {"input_1": [], "unit": unit, "seq": seq, "up": up},
                         weights_only=True)
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["unit_conv", "seq_pw", "up"]
    changed = [*unit[:1], ("unit_conv/bias:0", np.ones(4, np.float32)), *seq[2:]]
    path = _write_keras2(tmp_path / "two_layers.h5", {},
                         {"unit": unit, "seq": changed}, weights_only=True)
    assert [layer.name for layer in open_model(path).layers] == [
        "unit_conv", "unit_conv", "seq_pw"]  # equal names, other values: two layers
