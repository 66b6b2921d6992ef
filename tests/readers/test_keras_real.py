"""The Keras reader on files written by real Keras 3 (torch backend), not by imitations.

Every model is built with random weights (no downloads), saved as ``.keras``
(``model.save``), legacy ``.h5`` (``model.save("x.h5")``) and ``.weights.h5``
(``save_weights``), and read through ``open_model``. The expectations come from the live
model, independently of the reader: the conv layers in ``model.layers`` order (nested
models inlined, a shared layer once), each kernel from ``get_weights()`` converted from
Keras layout to ONNX layout here, and each layer's depth from the Keras graph itself
(``keras_history``): the longest path, in layer calls, from a model input, a
SeparableConv2D being two steps, a shared layer at its first call.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import h5py
import numpy as np
import pytest

import filterdb
from filterdb.errors import ModelReadError
from filterdb.extraction import ordered_layers
from filterdb.readers import open_model

from .refusals import one_line

#: Keras on torch converts variables with ``__array__`` in a way numpy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

KERAS_VERSION = "3.15.1"
FORMATS = [".keras", ".h5", ".weights.h5"]


@pytest.fixture(scope="module")
def keras(tmp_path_factory):
    """Keras 3 on the torch backend; its config directory in a temporary folder."""
    os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is first imported
    os.environ.setdefault("KERAS_HOME", os.fspath(tmp_path_factory.mktemp("keras_home")))
    import keras

    assert keras.__version__ == KERAS_VERSION
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    return keras


# expectations from the live model --------------------------------------------------

@dataclass
class Expected:
    name: str
    op_type: str
    c_out: int
    c_in_per_group: int
    groups: int
    strides: tuple
    dilations: tuple
    weight: np.ndarray  # ONNX layout, float32
    dtype: str
    step: tuple = ()  # (id of the Keras layer, part): the key of graph_depths
    keras_class: str = ""
    lora: bool = False  # kernel + LoRA update, which the reader adds up for legacy files


def _kind(keras, layer) -> str | None:
    layers = keras.layers
    for cls, kind in ((layers.SeparableConv2D, "separable"),
                      (layers.DepthwiseConv2D, "depthwise"),
                      (layers.Conv2DTranspose, "transpose"), (layers.Conv2D, "conv")):
        if isinstance(layer, cls):
            return kind
    return None


def _depthwise(name, kernel, layer, dtype) -> Expected:
    kh, kw, c_in, mult = kernel.shape  # output channel c * mult + m, as Keras computes it
    weight = np.stack([kernel[:, :, c, m] for c in range(c_in) for m in range(mult)])
    return Expected(name, "conv", c_in * mult, 1, c_in, tuple(layer.strides),
                    tuple(layer.dilation_rate), weight[:, None], dtype)


def _expected_layer(keras, name: str, layer) -> list[Expected]:
    found = _converted_layer(keras, name, layer)
    for part, e in enumerate(found):
        e.step, e.keras_class = (id(layer), part), type(layer).__name__
        e.lora = getattr(layer, "lora_enabled", False)
    return found


def _converted_layer(keras, name: str, layer) -> list[Expected]:
    kind = _kind(keras, layer)
    weights = layer.get_weights()
    dtype = np.dtype(weights[0].dtype).name
    arrays = [w.astype(np.float32) for w in weights]
    strides, dilations = tuple(layer.strides), tuple(layer.dilation_rate)
    if kind == "separable":
        depthwise, pointwise = arrays[0], arrays[1]
        first = _depthwise(f"{name}/depthwise", depthwise, layer, dtype)
        c_in, c_out = pointwise.shape[2], pointwise.shape[3]
        second = Expected(f"{name}/pointwise", "conv", c_out, c_in, 1, (1, 1), (1, 1),
                          np.einsum("hwio->oihw", pointwise), dtype)
        return [first, second]
    kernel = arrays[0]
    if getattr(layer, "lora_enabled", False):  # what the layer convolves with
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)
    if kind == "depthwise":
        return [_depthwise(name, kernel, layer, dtype)]
    if kind == "transpose":  # (kh, kw, c_out, c_in) -> (c_in, c_out, kh, kw)
        c_out, c_in = kernel.shape[2], kernel.shape[3]
        return [Expected(name, "conv_transpose", c_out, c_in, 1, strides, dilations,
                         np.einsum("hwoi->iohw", kernel), dtype)]
    c_in_per_group, c_out = kernel.shape[2], kernel.shape[3]
    return [Expected(name, "conv", c_out, c_in_per_group, layer.groups, strides, dilations,
                     np.einsum("hwio->oihw", kernel), dtype)]


def expected_layers(keras, model, prefix: str = "", seen=None) -> list[Expected]:
    """2-D conv layers in ``model.layers`` order, nested models inlined (named
    ``model/layer``), a layer reached twice listed once."""
    seen = set() if seen is None else seen
    found = []
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            found += expected_layers(keras, layer, f"{prefix}{layer.name}/", seen)
        elif _kind(keras, layer) is not None:
            found += _expected_layer(keras, f"{prefix}{layer.name}", layer)
    return found


def graph_depths(keras, model) -> tuple[dict[tuple, int], int]:
    """Depth of every layer's steps, by (id of the layer, part), and the
    number of distinct depths, from the Keras graph: every layer call is a step (two for
    SeparableConv2D), nested models inlined, a shared layer at its smallest depth."""
    depths: dict[tuple, int] = {}
    levels: set[int] = set()

    def output_depth(tensor, env: dict, memo: dict) -> int:
        if id(tensor) in env:  # an input of a nested model: the outer tensor's depth
            return env[id(tensor)]
        if id(tensor) in memo:
            return memo[id(tensor)]
        operation, node_index, index = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            return -1
        node = operation._inbound_nodes[node_index]
        start = -1
        for t in node.input_tensors:
            start = max(start, output_depth(t, env, memo))
        start += 1
        if isinstance(operation, keras.Model):
            inner = dict(zip(map(id, keras.tree.flatten(operation.inputs)),
                             [output_depth(t, env, memo) for t in node.input_tensors],
                             strict=True))
            result = output_depth(keras.tree.flatten(operation.outputs)[index], inner, {})
        else:
            steps = 2 if isinstance(operation, keras.layers.SeparableConv2D) else 1
            for part in range(steps):
                key = id(operation), part
                depths[key] = min(depths.get(key, math.inf), start + part)
                levels.add(start + part)
            result = start + steps - 1
        memo[id(tensor)] = result
        return result

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # deep applications recurse once per layer
    try:
        memo: dict = {}
        for tensor in keras.tree.flatten(model.outputs):
            output_depth(tensor, {}, memo)
    finally:
        sys.setrecursionlimit(limit)
    return depths, len(levels)


# models -----------------------------------------------------------------------------

def hand_model(keras):
    """Every 2-D conv flavour with groups, dilation, strides, depth multipliers and an
    asymmetric kernel, beside Conv1D and Conv3D branches (skipped: no 2-D filters)."""
    L = keras.layers
    image = keras.Input((16, 16, 4), name="image")
    x = L.Conv2D(8, (3, 5), padding="same", name="plain")(image)
    x = L.Conv2D(8, 3, groups=2, dilation_rate=2, padding="same", name="grouped")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, name="depthwise")(x)
    x = L.ReLU(name="relu")(x)
    x = L.SeparableConv2D(6, (3, 5), depth_multiplier=2, strides=(1, 2), padding="same",
                          name="separable")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, name="transposed")(x)
    x = L.Conv2D(4, 1, use_bias=False, name="pointwise_nobias")(x)
    sequence = keras.Input((10, 3), name="sequence")
    s = L.Conv1D(4, 3, name="conv1d")(sequence)
    volume = keras.Input((6, 6, 6, 2), name="volume")
    v = L.Conv3D(4, 3, name="conv3d")(volume)
    v = L.Reshape((4 * 4, 16), name="flat")(v)
    v = L.Conv1D(4, 3, name="after3d")(v)
    return keras.Model([image, sequence, volume], [x, s, v], name="hand")


def nested_model(keras):
    """A functional backbone and a Sequential head inside a functional model; a functional
    block is called twice at the top and once inside the head: one layer object at two
    places of the hierarchy."""
    L = keras.layers
    inner = keras.Input((8, 8, 8))
    backbone = keras.Model(inner, L.DepthwiseConv2D(3, padding="same", name="bb_dw")(
        L.Conv2D(8, 3, padding="same", name="bb_conv")(inner)), name="backbone")
    block_in = keras.Input((8, 8, 8))
    block = keras.Model(block_in, L.SeparableConv2D(8, 3, padding="same", name="blk_sep")(
        block_in), name="block")
    head = keras.Sequential([keras.Input((8, 8, 8)), L.Conv2D(8, 1, name="head_conv"),
                             block, L.ReLU(), L.Conv2D(6, 3, name="head_out")], name="head")
    image = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(image)
    x = backbone(x)
    x = block(block(x))  # two more call sites of the block
    x = head(x)
    return keras.Model(image, x, name="nested")


def shared_model(keras):
    """One Conv2D called at two sites (on two branches) and a plain Sequential model."""
    L = keras.layers
    shared = L.Conv2D(4, 3, padding="same", name="shared")
    image = keras.Input((8, 8, 4))
    a = L.Conv2D(4, 3, padding="same", name="a")(image)
    b = shared(image)
    c = shared(L.ReLU()(a))  # second call, one step deeper
    x = L.Concatenate()([b, c])
    x = L.Conv2D(4, 3, name="out")(x)
    return keras.Model(image, x, name="shared_model")


def sequential_model(keras):
    """A Sequential model without an Input, built by a call."""
    L = keras.layers
    model = keras.Sequential([L.Conv2D(6, 3, strides=2, name="s1"), L.BatchNormalization(),
                              L.DepthwiseConv2D(3, name="s2"),
                              L.Conv2DTranspose(4, (2, 3), name="s3")], name="seq")
    model(np.zeros((1, 12, 12, 3), np.float32))
    return model


def precision_model(keras):
    """float16 and bfloat16 variables, and mixed policies that keep float32 variables."""
    L = keras.layers
    image = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, dtype="float16", name="half")(image)
    x = L.Conv2D(4, 3, dtype="bfloat16", name="brain")(x)
    x = L.DepthwiseConv2D(3, dtype="mixed_float16", name="mixed_half")(x)
    x = L.SeparableConv2D(4, 1, dtype="mixed_bfloat16", name="mixed_brain")(x)
    return keras.Model(image, x, name="precision")


def trained_model(keras):
    """Compiled and fitted one step: the files hold optimizer state shaped like kernels."""
    L = keras.layers
    image = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="c1")(image)
    x = L.GlobalAveragePooling2D()(L.SeparableConv2D(4, 3, name="c2")(x))
    model = keras.Model(image, L.Dense(2)(x), name="trained")
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((4, 8, 8, 3)).astype(np.float32),
              rng.standard_normal((4, 2)).astype(np.float32), epochs=1, verbose=0)
    return model


def lora_model(keras):
    """Conv2D layers with LoRA adapters (B factors randomised: they start at zero)."""
    L = keras.layers
    image = keras.Input((8, 8, 3))
    built = L.Conv2D(4, 3, lora_rank=2, name="built_with_lora")
    later = L.Conv2D(5, (1, 3), name="lora_enabled_later")
    model = keras.Model(image, later(built(image)), name="lora")
    later.enable_lora(3, lora_alpha=6)
    rng = np.random.default_rng(1)
    for layer in (built, later):
        layer.lora_kernel_b.assign(rng.standard_normal(layer.lora_kernel_b.shape)
                                   .astype(np.float32))
    return model


def _application(name: str, **kwargs):
    def build(keras):
        return getattr(keras.applications, name)(weights=None, **kwargs)

    return build


MODELS = {
    "hand": hand_model,
    "nested": nested_model,
    "shared": shared_model,
    "sequential": sequential_model,
    "precision": precision_model,
    "trained": trained_model,
    "lora": lora_model,
    "MobileNetV2": _application("MobileNetV2", input_shape=(32, 32, 3), alpha=0.35),
    "MobileNetV3Small": _application("MobileNetV3Small", input_shape=(32, 32, 3)),
    "Xception": _application("Xception", input_shape=(71, 71, 3)),
    "DenseNet121": _application("DenseNet121", input_shape=(32, 32, 3)),
    "ResNet50": _application("ResNet50", input_shape=(32, 32, 3)),
    "ConvNeXtTiny": _application("ConvNeXtTiny", input_shape=(32, 32, 3)),
    "EfficientNetB0": _application("EfficientNetB0", input_shape=(32, 32, 3)),
}


@pytest.fixture(scope="module")
def saved(keras, tmp_path_factory):
    """``saved(name)``: (model, {suffix: path}), each model built and saved once."""
    folder = tmp_path_factory.mktemp("keras_real")
    cache = {}

    def get(name):
        if name not in cache:
            model = MODELS[name](keras)
            paths = {}
            for suffix in FORMATS:
                path = folder / f"{name}{suffix}"
                if suffix == ".weights.h5":
                    model.save_weights(path)
                else:
                    model.save(path)
                paths[suffix] = path
            cache[name] = model, paths
        return cache[name]

    return get


# reading ------------------------------------------------------------------------------

def _attributes(layer):
    return (layer.name, layer.op_type, layer.c_out, layer.c_in_per_group, layer.groups,
            layer.strides, layer.dilations, layer.source_dtype)


def _expected_attributes(e: Expected):
    return (e.name, e.op_type, e.c_out, e.c_in_per_group, e.groups, e.strides, e.dilations,
            e.dtype)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_keras_file_with_config(keras, saved, name, suffix):
    model, paths = saved(name)
    record = open_model(paths[suffix])
    expected = expected_layers(keras, model)
    assert record.framework == "keras"
    assert record.producer == (f"keras {KERAS_VERSION}" if suffix == ".keras"
                               else f"keras {KERAS_VERSION} (torch)")
    assert [_attributes(layer) for layer in record.layers] == [
        _expected_attributes(e) for e in expected]
    for layer, e in zip(record.layers, expected, strict=True):
        assert layer.weight.dtype == np.float32
        if e.lora and suffix == ".h5":  # summed by numpy here, by torch in Keras
            np.testing.assert_allclose(layer.weight, e.weight, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(layer.weight, e.weight, err_msg=e.name)
    depths, total = graph_depths(keras, model)
    assert [layer.depth for layer in record.layers] == [depths[e.step] for e in expected]
    assert not any(layer.depth_is_approximate for layer in record.layers)
    assert record.total_depth == total
    assert [layer.order for layer in record.layers] == sorted(
        layer.order for layer in record.layers)


@pytest.mark.parametrize("name", sorted(MODELS))
def _same_layers_in_any_order(record, expected: list[Expected]) -> None:
    """Without a config: the same conv layers (kind, channels, values) in file order, the
    groups of a grouped Conv2D unknown (a Conv2D of c_in 1 may be one), depth approximate."""

    def key(op_type, c_out, c_in_per_group, depthwise, weight):
        return op_type, c_out, c_in_per_group, depthwise, weight.shape, weight.tobytes()

    assert sorted(key(layer.op_type, layer.c_out, layer.c_in_per_group, layer.depthwise,
                      layer.weight) for layer in record.layers) == sorted(
        key(e.op_type, e.c_out, e.c_in_per_group, e.keras_class != "Conv2D" and e.groups > 1
            and e.c_in_per_group == 1, e.weight) for e in expected)
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert [layer.depth for layer in record.layers] == list(range(len(expected)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_keras_weights_file(keras, saved, name):
    model, paths = saved(name)
    _same_layers_in_any_order(open_model(paths[".weights.h5"]), expected_layers(keras, model))


def subclassed_model(keras):
    """A subclassed model: its config cannot be followed, and its weight groups are named
    after its attributes, not after the layers' classes."""
    L = keras.layers

    class Net(keras.Model):
        # attributes named before "layers": Keras saves each layer under the first name
        # it meets when walking the model's attributes in sorted order
        def __init__(self):
            super().__init__(name="net")
            self.conv = L.Conv2D(6, 3, name="conv")
            self.expand = L.DepthwiseConv2D(3, depth_multiplier=2, name="expand")
            self.fuse = L.SeparableConv2D(5, 3, name="fuse")
            self.decoder = L.Conv2DTranspose(4, 3, strides=2, name="decoder")
            self.head = [L.DepthwiseConv2D(3, name="smooth"), L.Conv2D(2, 1, name="last")]

        def call(self, x):
            x = self.decoder(self.fuse(self.expand(self.conv(x))))
            for layer in self.head:
                x = layer(x)
            return x

    model = Net()
    model(np.zeros((1, 16, 16, 3), np.float32))
    return model


@pytest.mark.parametrize("suffix", FORMATS)
def test_real_subclassed_model(keras, tmp_path, suffix):
    """Each layer read as its class from the weights alone: a DepthwiseConv2D is not a
    Conv2D with channels swapped, a SeparableConv2D not a Conv2D missing its half."""
    model = subclassed_model(keras)
    path = tmp_path / f"net{suffix}"
    model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    record = open_model(path)
    _same_layers_in_any_order(record, expected_layers(keras, model))
    assert len(record.layers) == 7


def custom_layer_model(keras):
    """Conv layers held inside custom layers of a functional model: the config holds the
    custom layers alone, their weights hold the convs."""
    L = keras.layers

    class ConvBlock(L.Layer):
        """Configured like a conv (filters, kernel_size), holding two convs."""

        def __init__(self, filters, kernel_size, **kwargs):
            super().__init__(**kwargs)
            self.filters, self.kernel_size = filters, kernel_size
            self.conv = L.Conv2D(filters, kernel_size, padding="same")
            self.norm = L.BatchNormalization()
            self.spatial = L.DepthwiseConv2D(3, padding="same")

        def call(self, x):
            return self.spatial(self.norm(self.conv(x)))

        def get_config(self):
            return {**super().get_config(), "filters": self.filters,
                    "kernel_size": self.kernel_size}

    class Mixer(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.branches = [L.Conv2D(4, 1), L.Conv2DTranspose(4, 3, padding="same")]

        def call(self, x):
            return self.branches[0](x) + self.branches[1](x)

    image = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(image)
    block = ConvBlock(8, (3, 3), name="block")
    mixer = Mixer(name="mixer")
    x = L.Conv2D(2, 3, name="out")(mixer(block(x)))
    model = keras.Model(image, x, name="custom")
    held = {"block": [block.conv, block.spatial], "mixer": mixer.branches}
    return model, held


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_convs_inside_custom_layers(keras, tmp_path, suffix):
    """Held convs are read at their layer's depth, marked approximate, not skipped."""
    model, held = custom_layer_model(keras)
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    record = open_model(path)
    by_name = {layer.name: layer for layer in record.layers}
    assert [name for name in by_name if "/" not in name] == ["stem", "out"]
    depths = {"stem": 0, "block": 1, "mixer": 2, "out": 3}
    for name in ("stem", "out"):
        (e,) = _expected_layer(keras, name, model.get_layer(name))
        assert _attributes(by_name[name]) == _expected_attributes(e)
        np.testing.assert_array_equal(by_name[name].weight, e.weight)
        assert by_name[name].depth == depths[name]
        assert not by_name[name].depth_is_approximate
    for host, layers in held.items():
        got = [layer for layer in record.layers if layer.name.startswith(f"{host}/")]
        expected = [e for layer in layers for e in _expected_layer(keras, host, layer)]

        def key(op_type, c_out, c_in_per_group, groups, weight):
            return op_type, c_out, c_in_per_group, groups, weight.tobytes()

        assert sorted(key(g.op_type, g.c_out, g.c_in_per_group, g.groups, g.weight)
                      for g in got) == sorted(key(e.op_type, e.c_out, e.c_in_per_group,
                                                  e.groups, e.weight) for e in expected)
        assert all(g.depth == depths[host] and g.depth_is_approximate for g in got)
    assert ordered_layers(record)[0].name == "stem"
    assert ordered_layers(record)[-1].name == "out"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_renamed_subclasses_of_every_conv_class(keras, tmp_path, suffix):
    """Subclasses of DepthwiseConv2D, SeparableConv2D and Conv2DTranspose under names of
    their own are read like their base classes (they were dropped), as Conv2D's are."""
    L = keras.layers
    classes = {}
    for base in (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.Conv2DTranspose):
        name = f"My{base.__name__.replace('2D', '')}"
        classes[base] = keras.saving.register_keras_serializable("filterdb_test")(
            type(name, (base,), {}))
    image = keras.Input((12, 12, 4))
    x = classes[L.Conv2D](8, 3, name="conv")(image)
    x = classes[L.DepthwiseConv2D](3, depth_multiplier=2, name="dw")(x)
    x = classes[L.SeparableConv2D](8, 3, name="sep")(x)
    x = classes[L.Conv2DTranspose](4, 3, strides=2, name="up")(x)
    model = keras.Model(image, x)
    path = tmp_path / f"subclasses{suffix}"
    model.save(path)
    record = open_model(path)
    expected = expected_layers(keras, model)
    assert [e.name for e in expected] == ["conv", "dw", "sep/depthwise", "sep/pointwise", "up"]
    assert [_attributes(layer) for layer in record.layers] == \
        [_expected_attributes(e) for e in expected]
    for layer, e in zip(record.layers, expected, strict=True):
        np.testing.assert_array_equal(layer.weight, e.weight)
    assert [layer.depth for layer in record.layers] == [0, 1, 2, 3, 4]


def test_real_custom_layer_owning_its_kernels(keras, tmp_path):
    """A custom layer that owns depthwise kernels itself (MLTK's
    MultiScaleTemporalConvolution: one per scale), in a legacy .h5 with its config:
    each kernel is a layer, named by its variable (they were dropped)."""
    L = keras.layers

    @keras.saving.register_keras_serializable("filterdb_test")
    class MultiScale(L.Layer):
        def __init__(self, scales=(3, 5), **kwargs):
            super().__init__(**kwargs)
            self.scales = list(scales)

        def build(self, input_shape):
            self.kernels = [self.add_weight(shape=(k, 1, input_shape[-1], 1),
                                            name="depthwise_kernel" + (f"_{i}" if i else ""))
                            for i, k in enumerate(self.scales)]

        def call(self, x):
            return sum(keras.ops.depthwise_conv(x, k, padding="same") for k in self.kernels)

        def get_config(self):
            return {**super().get_config(), "scales": self.scales}

    image = keras.Input((16, 1, 6))
    x = L.Conv2D(6, 3, padding="same", name="stem")(image)
    x = MultiScale(name="mtconv")(x)
    model = keras.Model(image, L.Conv2D(2, 1, name="head")(x))
    path = tmp_path / "own.h5"
    model.save(path)
    record = open_model(path)
    layers = {layer.name: layer for layer in record.layers}
    assert sorted(layers) == ["head", "mtconv/depthwise_kernel", "mtconv/depthwise_kernel_1",
                              "stem"]
    own = model.get_layer("mtconv").get_weights()
    for name, kernel in zip(["mtconv/depthwise_kernel", "mtconv/depthwise_kernel_1"], own,
                            strict=True):
        layer = layers[name]
        assert (layer.c_out, layer.c_in_per_group, layer.groups) == (6, 1, 6)
        np.testing.assert_array_equal(layer.weight, np.moveaxis(kernel[..., 0], 2, 0)[:, None])
        assert layer.depth == 1 and layer.depth_is_approximate


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_time_distributed_convs_read_with_the_wrapped_config(keras, tmp_path, suffix):
    """TimeDistributed holds its layer's config: groups, dilations, strides and the class
    of a bias-free depthwise or transposed conv come from it (they were guessed), named
    after the wrapped layer; a wrapped model's convs are read too (legacy files lost
    them)."""
    L = keras.layers
    keras.utils.set_random_seed(1)
    sub = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, name="c1")], name="subseq")
    clip = keras.Input((3, 8, 8, 4))
    x = L.TimeDistributed(L.Conv2D(6, 3, groups=2, dilation_rate=2, padding="same",
                                   name="g"), name="td_g")(clip)
    x = L.TimeDistributed(L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False,
                                            padding="same", name="dw"), name="td_dw")(x)
    x = L.TimeDistributed(L.Conv2DTranspose(4, 3, strides=2, use_bias=False, name="tr"),
                          name="td_tr")(x)
    y = L.TimeDistributed(sub, name="td_seq")(clip)
    model = keras.Model(clip, [x, y])
    path = tmp_path / f"td{suffix}"
    model.save(path)
    layers = {layer.name: layer for layer in open_model(path).layers}
    expected = {f"td_{n}/{n}": e for n in ("g", "dw", "tr")
                for e in _expected_layer(keras, f"td_{n}/{n}", model.get_layer(f"td_{n}").layer)}
    for name, e in expected.items():
        assert _attributes(layers[name]) == _expected_attributes(e)
        np.testing.assert_array_equal(layers[name].weight, e.weight)
    (inner,) = [layer for name, layer in layers.items() if name.startswith("td_seq/")]
    np.testing.assert_array_equal(inner.weight, _expected_layer(
        keras, "c1", sub.get_layer("c1"))[0].weight)
    assert len(layers) == 4


def test_real_unrelated_layer_config_in_a_custom_config_is_not_a_held_convs(keras,
                                                                           tmp_path):
    """A custom block holding a conv named ``conv`` whose config also carries another
    layer config named ``conv`` (a template, stride 2, 16 filters): the held conv is
    read by its weights, not with the template's config (which refused the model)."""
    L = keras.layers

    @keras.saving.register_keras_serializable("filterdb_test")
    class Templated(L.Layer):
        def __init__(self, template=None, **kwargs):
            super().__init__(**kwargs)
            self.conv = L.Conv2D(8, 3, padding="same", name="conv")
            self.template = template or keras.layers.serialize(
                L.Conv2D(16, 3, strides=2, name="conv"))

        def call(self, x):
            return self.conv(x)

        def get_config(self):
            return {**super().get_config(), "template": self.template}

    image = keras.Input((16, 16, 4))
    model = keras.Model(image, Templated(name="block")(image))
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"templated{suffix}"
        model.save(path)
        (layer,) = open_model(path).layers
        assert (layer.c_out, layer.c_in_per_group, layer.strides) == (8, 4, (1, 1))


def test_real_conv_lstm_reads_both_kernels(keras, tmp_path):
    """ConvLSTM2D convolves the input and the state: both kernels (4 gates each) are
    layers at its depth, the input kernel with the config's strides."""
    L = keras.layers
    keras.utils.set_random_seed(2)
    clip = keras.Input((4, 16, 16, 3))
    cell = L.ConvLSTM2D(4, 3, strides=2, padding="same", name="clstm")
    model = keras.Model(clip, cell(clip))
    kernel, recurrent, _ = (np.asarray(w) for w in cell.get_weights())
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"clstm{suffix}"
        model.save(path)
        layers = open_model(path).layers
        assert [(layer.name, layer.c_out, layer.c_in_per_group, layer.strides, layer.depth)
                for layer in layers] == [("clstm/kernel", 16, 3, (2, 2), 0),
                                         ("clstm/recurrent_kernel", 16, 4, (1, 1), 0)]
        np.testing.assert_array_equal(layers[0].weight, np.einsum("hwio->oihw", kernel))
        np.testing.assert_array_equal(layers[1].weight, np.einsum("hwio->oihw", recurrent))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_held_conv_of_a_submodel_used_twice_counts_once(keras, tmp_path, suffix):
    L = keras.layers

    @keras.saving.register_keras_serializable("filterdb_test")
    class Block(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = L.Conv2D(4, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    image = keras.Input((8, 8, 4))
    sub = keras.Model(image, Block(name="blk")(image), name="sub")
    wrap = keras.Sequential([keras.Input((8, 8, 4)), sub,
                             L.Conv2D(4, 3, padding="same", name="sc")], name="wrap")
    image = keras.Input((8, 8, 4))
    model = keras.Model(image, wrap(sub(image)))
    path = tmp_path / f"twice{suffix}"
    model.save(path)
    names = [layer.name for layer in open_model(path).layers]
    assert len(names) == 2 and names[0].startswith("sub/blk/") and names[1] == "wrap/sc"


def test_real_own_kernel_of_a_custom_layer_in_a_keras_archive(keras, tmp_path):
    """A custom layer's own kernel (add_weight) in a .keras archive (it was dropped)."""
    L = keras.layers

    @keras.saving.register_keras_serializable("filterdb_test")
    class OwnKernel(L.Layer):
        def build(self, shape):
            self.kernel = self.add_weight(shape=(3, 3, shape[-1], 5), name="kernel")

        def call(self, x):
            return keras.ops.conv(x, self.kernel, padding="same")

    image = keras.Input((8, 8, 3))
    own = OwnKernel(name="own")
    model = keras.Model(image, L.Conv2D(2, 1, name="post")(own(image)))
    path = tmp_path / "own.keras"
    model.save(path)
    layers = {layer.name: layer for layer in open_model(path).layers}
    assert sorted(layers) == ["own", "post"]
    np.testing.assert_array_equal(layers["own"].weight,
                                  np.einsum("hwio->oihw", np.asarray(own.get_weights()[0])))


# damaged real files --------------------------------------------------------------------

@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_real_files_are_refused_in_one_line(saved, tmp_path, suffix):
    whole = saved("hand")[1][suffix].read_bytes()
    for cut in range(1, 10):
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(whole[: len(whole) * cut // 10])
        with pytest.raises(ModelReadError) as caught:
            open_model(path)
        assert one_line(caught.value).startswith(f"{path}: ")


def test_undecodable_weight_name_is_refused_in_one_line(saved, tmp_path):
    """A damaged byte in a legacy file's weight name: h5py's UnicodeEncodeError."""
    data = bytearray(saved("hand")[1][".h5"].read_bytes())
    data[data.index(b"plain/kernel") + 2] = 0xB7
    path = tmp_path / "damaged.h5"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    assert "damaged HDF5 file (UnicodeEncodeError" in one_line(caught.value)


# a zoo through the CLI ----------------------------------------------------------------

def test_zoo_of_real_keras_files_builds(keras, saved, tmp_path):
    """``filterdb build`` on real Keras files of every form stores every 3x3 filter."""
    # one form per model: the same weights in two files would be skipped as duplicates
    picks = {"hand": ".keras", "nested": ".h5", "precision": ".h5", "trained": ".keras",
             "MobileNetV2": ".weights.h5", "Xception": ".keras"}
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    counts = {}
    for name, suffix in picks.items():
        model, paths = saved(name)
        shutil.copy(paths[suffix], zoo)
        counts[name] = sum(e.weight.shape[0] * e.weight.shape[1]
                           for e in expected_layers(keras, model)
                           if e.weight.shape[2:] == (3, 3))
    db = tmp_path / "db.h5"
    built = subprocess.run([sys.executable, "-m", "filterdb", "build", str(zoo), "-o", str(db),
                            "--no-quality"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    with h5py.File(db) as handle:
        assert handle["filters"].shape[1:] == (3, 3)
        assert handle["filters"].shape[0] == sum(counts.values())
    models = filterdb.open(db).models
    stored = dict(zip(models["model"], models["(3, 3) filters"], strict=True))
    # a Keras 3 weights file x.weights.h5 is the model x
    assert stored == {saved(name)[1][suffix].name.removesuffix(suffix): counts[name]
                      for name, suffix in picks.items()}
    assert set(models["format"]) == {"keras"}
