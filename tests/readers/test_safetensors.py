"""Tests of the safetensors reader through ``filterdb.readers.open_model``."""

from __future__ import annotations

import json
import os
import struct
import sys

import ml_dtypes
import numpy as np
import pytest

from filterdb.errors import MissingDependencyError, ModelReadError
from filterdb.extraction import conv_depths, ordered_layers
from filterdb.readers import Limits, find_reader, is_model_file, open_model
from filterdb.readers import safetensors as reader

from .network import equivalence_network, expected_filters
from .refusals import one_line, refused_within
from .writers_safetensors import cast, write_ordered, write_raw, write_safetensors

NAMES = ["plain", "strided", "grouped", "depthwise", "transposed", "wide"]


@pytest.fixture(scope="module")
def network():
    return equivalence_network()


# the equivalence network ---------------------------------------------------------

def test_library_file_gives_the_expected_filters_in_order(tmp_path, network):
    path = write_safetensors(tmp_path / "net.safetensors", network)
    record = open_model(path)

    assert record.framework == "safetensors"
    assert record.name == "net"
    assert record.path == os.fspath(path)
    assert record.producer == "safetensors (pt)"
    assert [layer.name for layer in record.layers] == [
        f"features.{i}.{name}" for i, name in enumerate(NAMES)]
    assert len(record.layers) == len(network)
    for layer, expected in zip(record.layers, expected_filters(network), strict=True):
        assert layer.weight.dtype == np.float32
        assert layer.source_dtype == "float32"
        np.testing.assert_array_equal(layer.filters(), expected)
    # filter 0 of the asymmetric 'plain' kernel is weight[0, 0], not its transpose
    plain = network[0].weight
    assert not np.array_equal(plain[0, 0], plain[0, 0].T)
    np.testing.assert_array_equal(record.layers[0].filters()[0], plain[0, 0])
    assert not np.array_equal(record.layers[0].filters()[0], plain[0, 0].T)


def test_depth_is_parameter_order_and_marked_approximate(tmp_path, network):
    record = open_model(write_safetensors(tmp_path / "net.safetensors", network))
    assert [layer.depth for layer in record.layers] == [0, 1, 2, 3, 4, 5]
    assert [layer.order for layer in record.layers] == [0, 1, 2, 3, 4, 5]
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert record.total_depth == 6
    assert ordered_layers(record) == record.layers
    assert [c for c, _ in conv_depths(record.layers)] == [0, 1, 2, 3, 4, 5]


def test_layer_attributes_inferred_without_a_graph(tmp_path, network):
    record = open_model(write_safetensors(tmp_path / "net.safetensors", network))
    got = {layer.name.split(".")[-1]: (layer.op_type, layer.c_out, layer.c_in_per_group,
                                       layer.groups, layer.depthwise, layer.kernel_shape)
           for layer in record.layers}
    assert got == {
        "plain": ("conv", 8, 3, 1, False, (3, 3)),
        "strided": ("conv", 8, 8, 1, False, (3, 3)),
        # no 1x1 conv beside it says 8 channels come in: plain (see test_statedict)
        "grouped": ("conv", 8, 4, 1, False, (3, 3)),
        "depthwise": ("conv", 8, 1, 8, True, (3, 3)),
        "transposed": ("conv_transpose", 4, 8, 1, False, (3, 3)),  # by its name
        "wide": ("conv", 6, 4, 1, False, (1, 3)),
    }
    transposed = record.layers[4]
    np.testing.assert_array_equal(transposed.weight, network[4].weight)  # (c_in, c_out, ..)


def test_header_order_kept_when_the_writer_chose_it(tmp_path, network):
    path = write_ordered(tmp_path / "ordered.safetensors", network)
    header = json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    assert list(header) == [f"{name}.weight" for name in NAMES]  # not sorted
    record = open_model(path)
    assert [layer.name for layer in record.layers] == NAMES
    for layer, expected in zip(record.layers, expected_filters(network), strict=True):
        np.testing.assert_array_equal(layer.filters(), expected)


def test_library_order_is_numeric_aware(tmp_path):
    rng = np.random.default_rng(3)
    tensors = {f"blocks.{i}.conv.weight": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
               for i in range(12)}
    from safetensors.numpy import save_file

    path = tmp_path / "twelve.safetensors"
    save_file(tensors, str(path))
    record = open_model(path)
    assert [layer.name for layer in record.layers] == [f"blocks.{i}.conv" for i in range(12)]
    for i, layer in enumerate(record.layers):
        np.testing.assert_array_equal(layer.weight, tensors[f"blocks.{i}.conv.weight"])


def test_only_4d_float_weights_are_layers(tmp_path):
    rng = np.random.default_rng(4)
    conv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    path = write_raw(tmp_path / "mixed.safetensors", [
        ("conv.weight", conv),
        ("conv.bias", np.zeros(4, np.float32)),
        ("fc.weight", rng.standard_normal((10, 4)).astype(np.float32)),
        ("pos_embed", rng.standard_normal((1, 2, 3, 4)).astype(np.float32)),  # not *weight
        ("q.weight", np.ones((4, 4, 3, 3), np.int8)),  # integers: no scales known
        ("weight", conv * 2),
    ])
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["conv", "weight"]
    np.testing.assert_array_equal(record.layers[1].weight, conv * 2)


def test_tensorflow_kernels_are_transposed_to_the_onnx_layout(tmp_path):
    """TF names and (kh, kw, c_in, c_out) kernels; expected filters built by indexing."""
    rng = np.random.default_rng(7)
    stem = rng.standard_normal((3, 3, 3, 16)).astype(np.float32)
    depthwise = rng.standard_normal((3, 3, 16, 2)).astype(np.float32)   # multiplier 2
    up = rng.standard_normal((3, 3, 8, 32)).astype(np.float32)          # 32 -> 8 channels
    path = write_raw(tmp_path / "tf.safetensors", [
        ("model/conv1/kernel:0", stem), ("model/conv1/bias:0", np.zeros(16, np.float32)),
        ("model/dw/depthwise_kernel:0", depthwise),
        ("model/up/conv2d_transpose/kernel:0", up)], metadata={"format": "tf"})
    layers = {layer.name: layer for layer in open_model(path).layers}
    assert sorted(layers) == ["model/conv1", "model/dw", "model/up/conv2d_transpose"]

    conv = layers["model/conv1"]
    assert (conv.op_type, conv.c_out, conv.c_in_per_group, conv.groups) == ("conv", 16, 3, 1)
    for o in range(16):
        for i in range(3):
            np.testing.assert_array_equal(conv.weight[o, i], stem[:, :, i, o])
    dw = layers["model/dw"]
    assert (dw.c_out, dw.c_in_per_group, dw.groups, dw.depthwise) == (32, 1, 16, True)
    for c in range(16):
        for m in range(2):
            np.testing.assert_array_equal(dw.weight[c * 2 + m, 0], depthwise[:, :, c, m])
    transposed = layers["model/up/conv2d_transpose"]
    assert (transposed.op_type, transposed.c_out, transposed.c_in_per_group) == (
        "conv_transpose", 8, 32)
    for i in range(32):
        for o in range(8):
            np.testing.assert_array_equal(transposed.weight[i, o], up[:, :, o, i])


def test_kernel_named_parameters_of_pytorch_files_keep_their_layout(tmp_path):
    """A Flax kernel is transposed; a PyTorch parameter called ``kernel`` is not, where
    the metadata says PyTorch or only its last two axes can be a kernel's."""
    rng = np.random.default_rng(8)
    flax = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    torch_kernel = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    wide = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    layer = open_model(write_raw(tmp_path / "flax.safetensors",
                                 [("params.Conv_0.kernel", flax)])).layers[0]
    assert layer.name == "params.Conv_0"
    np.testing.assert_array_equal(layer.weight, flax.transpose(3, 2, 0, 1))
    layer = open_model(write_raw(tmp_path / "pt.safetensors", [("mix.kernel", torch_kernel)],
                                 metadata={"format": "pt"})).layers[0]
    np.testing.assert_array_equal(layer.weight, torch_kernel)
    layer = open_model(write_raw(tmp_path / "bare.safetensors",
                                 [("blocks.0.kernel", wide)])).layers[0]
    assert (layer.name, layer.c_out, layer.c_in_per_group) == ("blocks.0", 64, 32)
    np.testing.assert_array_equal(layer.weight, wide)


def test_model_without_conv_weights_has_no_layers(tmp_path):
    path = write_raw(tmp_path / "mlp.safetensors",
                     [("fc.weight", np.ones((3, 2), np.float32))])
    record = open_model(path)
    assert record.layers == [] and record.total_depth == 0


# precision -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_become_float32(tmp_path, network, dtype):
    path = write_safetensors(tmp_path / f"{dtype}.safetensors", network, dtype=dtype)
    record = open_model(path)
    assert [layer.source_dtype for layer in record.layers] == [dtype] * len(network)
    for layer, spec in zip(record.layers, network, strict=True):
        assert layer.weight.dtype == np.float32
        expected = cast(spec.weight, dtype).astype(np.float32)
        np.testing.assert_array_equal(layer.filters(), expected.reshape(-1, *spec.kernel))
    if dtype != "float64":  # the rounding really happened
        assert not np.array_equal(record.layers[0].weight, network[0].weight)


def test_bfloat16_decoded_from_raw_bytes(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0, -0.0, 65280.0, 1e-3, np.inf, -np.inf],
                      np.float32)
    weight = np.resize(values, (3, 1, 3, 3)).astype(ml_dtypes.bfloat16)
    path = write_raw(tmp_path / "bf16.safetensors", [("a.weight", weight)])
    layer = open_model(path).layers[0]
    assert layer.source_dtype == "bfloat16"
    np.testing.assert_array_equal(layer.weight, weight.astype(np.float32))
    assert np.isposinf(layer.weight).sum() == 3 and np.isneginf(layer.weight).sum() == 3


# broken and hostile files ----------------------------------------------------------

def test_huge_declared_tensor_over_the_limit_is_refused_before_allocation(tmp_path):
    tiny = np.zeros((1, 1, 1, 1), np.float32)
    path = write_raw(tmp_path / "huge.safetensors", [("big.weight", tiny)], header_entries={
        "big.weight": {"dtype": "F32", "shape": [65536, 65536, 3, 3], "data_offsets": [0, 4]}})
    assert "big.weight" in one_line(refused_within(path, 10 * 2**20))


def test_declared_size_not_matching_the_data_is_refused_before_allocation(tmp_path):
    # within the element limit (1 GiB of float32), but the file holds 4 bytes
    tiny = np.zeros((1, 1, 1, 1), np.float32)
    path = write_raw(tmp_path / "liar.safetensors", [("big.weight", tiny)], header_entries={
        "big.weight": {"dtype": "F32", "shape": [1024, 1024, 16, 16], "data_offsets": [0, 4]}})
    assert "holds 4 bytes" in one_line(refused_within(path, 10 * 2**20))


def test_element_limit_is_enforced(tmp_path, network):
    path = write_safetensors(tmp_path / "net.safetensors", network)
    with pytest.raises(ModelReadError) as caught:
        open_model(path, Limits(max_tensor_elements=100))
    assert "element limit" in one_line(caught.value)


def test_truncated_data_is_a_read_error(tmp_path, network):
    whole = write_safetensors(tmp_path / "whole.safetensors", network).read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(whole[:-100])
    assert reader.sniff(whole[:64], path)  # header intact: still recognised
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "truncated" in one_line(caught.value)


def test_truncated_header_is_not_sniffed_but_fails_by_extension(tmp_path, network):
    whole = write_safetensors(tmp_path / "whole.safetensors", network).read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(whole[:40])
    assert not reader.sniff(whole[:40], path)
    assert find_reader(path) is reader
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "does not fit" in one_line(caught.value)


@pytest.mark.parametrize("header", [
    b"{not json}",
    b'{"a.weight": {"dtype": "F32", "shape": [1, 1, 1, 1]}}',  # no data_offsets
    b'{"a.weight": {"dtype": "F32", "shape": [-1, 1, 1, 1], "data_offsets": [0, 4]}}',
    b'{"a.weight": {"dtype": "F32", "shape": [1, 1, 1, 1], "data_offsets": [4, 0]}}',
    b'["a", "list"]',
])
def test_malformed_headers_are_one_line_errors(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(ModelReadError):
        open_model(path)
    with pytest.raises(ModelReadError) as caught:
        reader.read(path, Limits())
    one_line(caught.value)


def test_overlapping_offsets_are_rejected_by_the_library(tmp_path):
    weight = np.ones((1, 1, 2, 2), np.float32)
    path = write_raw(tmp_path / "overlap.safetensors", [("a.weight", weight),
                                                         ("b.weight", weight)],
                     header_entries={"b.weight": {"dtype": "F32", "shape": [1, 1, 2, 2],
                                                  "data_offsets": [0, 16]}})
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "not a valid safetensors file" in one_line(caught.value)


def test_sniff(tmp_path, network):
    path = write_safetensors(tmp_path / "net.safetensors", network)
    head = path.read_bytes()[:64]
    assert reader.sniff(head, path)
    renamed = tmp_path / "weights.bin"  # content decides, not the suffix
    renamed.write_bytes(path.read_bytes())
    assert find_reader(renamed) is reader
    assert not reader.sniff(b"\x89HDF\r\n\x1a\n" + b"\0" * 56, path)
    assert not reader.sniff(b"PK\x03\x04" + b"\0" * 60, path)
    assert not reader.sniff(struct.pack("<Q", 10**12) + b"{", path)  # longer than the file
    assert is_model_file(path)


def test_missing_package_names_the_extra(tmp_path, network, monkeypatch):
    path = write_safetensors(tmp_path / "net.safetensors", network)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(MissingDependencyError) as caught:
        open_model(path)
    assert "filterdb[safetensors]" in one_line(caught.value)
