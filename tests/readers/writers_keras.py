"""Write Keras models without Keras: ``.keras`` archives and legacy HDF5 files.

The layouts follow what Keras itself writes:

* ``.keras`` (Keras 3 ``saving_lib``): a zip of ``metadata.json``, ``config.json``
  (``serialize_keras_object(model)``: module, class_name, config with layers whose
  ``inbound_nodes`` hold ``__keras_tensor__`` entries with ``keras_history``) and
  ``model.weights.h5``, where each layer of ``model.layers`` (InputLayer excluded for
  Sequential) gets ``layers/<snake class name>[_n]/vars/<i>``, numbered per class in
  layer order, variables in creation order (kernel, bias); a nested model gets its own
  ``vars`` and ``layers``. tf.keras 2.13-2.15 wrote the container as
  ``_layer_checkpoint_dependencies`` and, listing each weighted layer twice, skipped
  every second number (``conv2d``, ``conv2d_2``, ...): ``tf_keras=True``.
* legacy ``.h5`` (Keras 2 ``model.save``): root attributes ``keras_version``,
  ``backend`` and ``model_config`` (JSON with Keras 2 nested-list ``inbound_nodes``),
  and ``model_weights`` with ``layer_names``; per layer a group whose ``weight_names``
  attribute lists ``<layer>/<var>:0`` datasets. A nested model's group holds all its
  layers' weights. ``weights_only=True`` writes what ``save_weights("x.h5")`` writes.

Weights come in ONNX layout (tests/readers/network.py) and are converted to Keras
kernels: Conv2D (kh, kw, c_in/groups, c_out), DepthwiseConv2D (kh, kw, c_in, m),
Conv2DTranspose (kh, kw, c_out, c_in).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ml_dtypes
import numpy as np

from .network import INPUT_CHANNELS, INPUT_SIZE, ConvSpec

KERAS3_VERSION = "3.6.0"
KERAS2_VERSION = "2.15.0"


@dataclass
class KLayer:
    """One Keras layer: class, config, variables (creation order) and inbound layers."""

    class_name: str
    name: str
    config: dict = field(default_factory=dict)
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)
    inbound: list[str] = field(default_factory=list)
    sub: list[KLayer] | None = None  # a nested Functional model's layers


def snake(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ONNX layout -> Keras kernels -------------------------------------------------

def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """(c_out, c_in/g, kh, kw) -> (kh, kw, c_in/g, c_out)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def depthwise_kernel(weight: np.ndarray, multiplier: int = 1) -> np.ndarray:
    """(c_in*m, 1, kh, kw), output channel c*m + k -> (kh, kw, c_in, m)."""
    c_out, _, kh, kw = weight.shape
    return np.ascontiguousarray(
        weight.reshape(c_out // multiplier, multiplier, kh, kw).transpose(2, 3, 0, 1))


def transposed_kernel(weight: np.ndarray) -> np.ndarray:
    """ConvTranspose (c_in, c_out, kh, kw) -> (kh, kw, c_out, c_in)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


# layer configs -------------------------------------------------------------------

def _dtype_policy() -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _initializer(name: str) -> dict:
    return {"module": "keras.initializers", "class_name": name, "config": {"seed": None},
            "registered_name": None}


def _base(name: str, activation: str = "linear") -> dict:
    return {"name": name, "trainable": True, "dtype": _dtype_policy(), "activation": activation}


def conv_layer(spec: ConvSpec, inbound: str, activation: str = "linear") -> KLayer:
    """The Keras layer of one network spec: Conv2D (grouped too), DepthwiseConv2D for a
    groups == c_in layer, Conv2DTranspose."""
    kh, kw = spec.kernel
    common = {**_base(spec.name, activation), "kernel_size": [kh, kw],
              "strides": [spec.stride, spec.stride], "padding": "same",
              "data_format": "channels_last", "dilation_rate": [1, 1], "use_bias": True,
              "bias_initializer": _initializer("Zeros"), "kernel_regularizer": None,
              "bias_regularizer": None, "activity_regularizer": None,
              "kernel_constraint": None, "bias_constraint": None}
    bias = np.zeros(spec.c_out, np.float32)
    if spec.kind == "conv_transpose":
        config = {**common, "filters": spec.c_out, "output_padding": None,
                  "kernel_initializer": _initializer("GlorotUniform")}
        return KLayer("Conv2DTranspose", spec.name, config,
                      [("kernel", transposed_kernel(spec.weight)), ("bias", bias)], [inbound])
    if spec.groups > 1 and spec.groups == spec.c_in:
        multiplier = spec.c_out // spec.c_in
        config = {**common, "depth_multiplier": multiplier,
                  "depthwise_initializer": _initializer("GlorotUniform"),
                  "depthwise_regularizer": None, "depthwise_constraint": None}
        return KLayer("DepthwiseConv2D", spec.name, config,
                      [("depthwise_kernel", depthwise_kernel(spec.weight, multiplier)),
                       ("bias", bias)], [inbound])
    config = {**common, "filters": spec.c_out, "groups": spec.groups,
              "kernel_initializer": _initializer("GlorotUniform")}
    return KLayer("Conv2D", spec.name, config,
                  [("kernel", conv_kernel(spec.weight)), ("bias", bias)], [inbound])


def input_layer(name: str = "input_layer", channels: int = INPUT_CHANNELS) -> KLayer:
    return KLayer("InputLayer", name, {"batch_shape": [None, INPUT_SIZE, INPUT_SIZE, channels],
                                       "dtype": "float32", "sparse": False, "name": name})


def relu(name: str, inbound: str) -> KLayer:
    return KLayer("ReLU", name, {**_base(name), "max_value": None, "negative_slope": 0.0,
                                 "threshold": 0.0}, [], [inbound])


def network_layers(network: list[ConvSpec], relu_layers: bool = True,
                   input_name: str = "input_layer") -> list[KLayer]:
    """InputLayer, then per spec its conv layer and (``relu_layers``) a ReLU layer, or the
    conv with ``activation="relu"``."""
    layers = [input_layer(input_name)]
    previous = input_name
    for spec in network:
        layers.append(conv_layer(spec, previous, "linear" if relu_layers else "relu"))
        previous = spec.name
        if relu_layers:
            layers.append(relu(f"{spec.name}_relu", previous))
            previous = f"{spec.name}_relu"
    return layers


def nest(layers: list[KLayer], count: int, name: str = "backbone") -> list[KLayer]:
    """Move the first ``count`` layers after the input into a nested Functional model."""
    inner_input = input_layer(f"{name}_input")
    inner = [inner_input] + [KLayer(**{**layer.__dict__}) for layer in layers[1:1 + count]]
    inner[1].inbound = [inner_input.name]
    outer_input, rest = layers[0], layers[1 + count:]
    model = KLayer("Functional", name, {"name": name, "trainable": True}, [],
                   [outer_input.name], inner)
    if rest:
        rest[0] = KLayer(**{**rest[0].__dict__, "inbound": [name]})
    return [outer_input, model, *rest]


# configs -----------------------------------------------------------------------------

def _keras3_node(inbound: list[str], node_index: dict[str, int]) -> list[dict]:
    args = [{"class_name": "__keras_tensor__",
             "config": {"shape": [None, None, None, None], "dtype": "float32",
                        "keras_history": [name, node_index.get(name, 0), 0]}}
            for name in inbound]
    if not inbound:
        return []
    return [{"args": args if len(args) == 1 else [args], "kwargs": {}}]


def _keras2_node(inbound: list[str], node_index: dict[str, int]) -> list:
    return [[[name, node_index.get(name, 0), 0, {}] for name in inbound]] if inbound else []


def model_config(layers: list[KLayer], *, sequential: bool = False, keras3: bool = True,
                 name: str = "model") -> dict:
    """The serialized model: Keras 3 (module, registered_name, ``__keras_tensor__``
    nodes) or Keras 2 (nested-list nodes; nested Functional models' calls are node 1)."""
    entries = []
    nested = {layer.name for layer in layers if layer.sub is not None}
    # Keras 2 counts a nested Functional's own construction node first.
    node_index = {} if keras3 else dict.fromkeys(nested, 1)
    for layer in layers:
        if layer.sub is not None:
            entry = model_config(layer.sub, keras3=keras3, name=layer.name)
        else:
            entry = {"class_name": layer.class_name, "config": layer.config}
            if keras3:
                entry = {"module": "keras.layers", **entry, "registered_name": None}
                if layer.class_name != "InputLayer":
                    entry["build_config"] = {"input_shape": [None, None, None, None]}
            elif layer.class_name == "InputLayer":
                config = dict(layer.config)
                config["batch_input_shape"] = config.pop("batch_shape")
                config["ragged"] = False
                entry["config"] = config
        if not sequential:
            entry["name"] = layer.name
            node = _keras3_node if keras3 else _keras2_node
            entry["inbound_nodes"] = node(layer.inbound, node_index)
        entries.append(entry)
    config: dict = {"name": name, "trainable": True, "layers": entries}
    if not sequential:
        last = layers[-1].name
        config["input_layers"] = [[layers[0].name, 0, 0]]
        config["output_layers"] = [[last, node_index.get(last, 0), 0]]
    class_name = "Sequential" if sequential else "Functional"
    if keras3:
        module = "keras" if sequential else "keras.src.models.functional"
        return {"module": module, "class_name": class_name, "config": config,
                "registered_name": class_name, "build_config": {"input_shape": None}}
    return {"class_name": class_name, "config": config}


# .keras archives ----------------------------------------------------------------------

def _store(group, key: str, value: np.ndarray) -> None:
    if value.dtype == ml_dtypes.bfloat16:  # as Keras's H5IOStore stores bfloat16
        dataset = group.create_dataset(key, data=value)
        dataset.attrs["dtype"] = "bfloat16"
    else:
        group[key] = value


def _v3_weights(group, layers: list[KLayer], *, sequential: bool, tf_keras: bool,
                dtype: str, by_name: bool = False) -> None:
    group.create_group("vars")
    container = group.create_group("_layer_checkpoint_dependencies" if tf_keras else "layers")
    used: dict[str, int] = {}
    for layer in layers:
        if sequential and layer.class_name == "InputLayer":
            continue
        # tf.keras listed every layer with weights twice; the second visit wrote nothing
        weighted = bool(layer.weights) or layer.sub is not None
        for visit in range(2 if tf_keras and weighted else 1):
            key = layer.name if by_name else snake(layer.class_name)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            if visit:
                continue
            child = container.create_group(key)
            if layer.sub is not None:
                _v3_weights(child, layer.sub, sequential=False, tf_keras=tf_keras,
                            dtype=dtype, by_name=by_name)
                continue
            variables = child.create_group("vars")
            for index, (_, value) in enumerate(layer.weights):
                _store(variables, str(index), _cast(value, dtype))


def _cast(value: np.ndarray, dtype: str) -> np.ndarray:
    return value.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))


def write_keras(path: Path, layers: list[KLayer], *, sequential: bool = False,
                tf_keras: bool = False, dtype: str = "float32", by_name: bool = False,
                config: dict | None = None, tamper=None,
                compression: int = zipfile.ZIP_STORED) -> Path:
    """A ``.keras`` archive of ``layers``. ``config`` overrides the serialized model,
    ``by_name`` names weight groups after layers instead of classes (not what Keras
    writes), ``tamper(h5_file)`` edits the weights file before it is stored; Keras
    stores the members uncompressed (``compression``)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        _v3_weights(handle, layers, sequential=sequential, tf_keras=tf_keras, dtype=dtype,
                    by_name=by_name)
        if tamper is not None:
            tamper(handle)
    if config is None:
        config = model_config(layers, sequential=sequential)
    metadata = {"keras_version": KERAS3_VERSION, "date_saved": "2025-01-01@00:00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def write_keras_weights(path: Path, layers: list[KLayer], *, sequential: bool = False) -> Path:
    """What Keras 3 ``model.save_weights("x.weights.h5")`` writes: the weights file alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        _v3_weights(handle, layers, sequential=sequential, tf_keras=False, dtype="float32")
    return path


def write_network_keras(path: Path, network: list[ConvSpec], *, sequential: bool = False,
                        **kwargs) -> Path:
    """The equivalence network as ``.keras``: Functional with ReLU layers, or Sequential
    with ``activation="relu"`` convs."""
    return write_keras(path, network_layers(network, relu_layers=not sequential),
                       sequential=sequential, **kwargs)


# legacy HDF5 ---------------------------------------------------------------------------

def _weight_name(owner: str, variable: str, style: str) -> str:
    return {"keras2": f"{owner}/{variable}:0", "keras3": f"{owner}/{variable}",
            "short": variable}[style]


def _layer_weights(layer: KLayer, style: str) -> list[tuple[str, np.ndarray]]:
    if layer.sub is None:
        return [(_weight_name(layer.name, v, style), value) for v, value in layer.weights]
    return [item for inner in layer.sub for item in _layer_weights(inner, style)]


def write_keras_h5(path: Path, layers: list[KLayer], *, sequential: bool = False,
                   style: str = "keras2", weights_only: bool = False,
                   dtype: str = "float32") -> Path:
    """A legacy HDF5 model (or weights-only file); ``style`` spells the weight names
    like Keras 2 (``conv/kernel:0``), Keras 3 (``conv/kernel``) or short (``kernel``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = [layer for layer in layers if not (sequential and layer.class_name == "InputLayer")]
    with h5py.File(path, "w") as handle:
        if weights_only:
            root = handle
        else:
            handle.attrs["keras_version"] = KERAS2_VERSION.encode()
            handle.attrs["backend"] = b"tensorflow"
            config = model_config(layers, sequential=sequential, keras3=False)
            handle.attrs["model_config"] = json.dumps(config).encode()
            root = handle.create_group("model_weights")
        root.attrs["layer_names"] = np.array([layer.name.encode() for layer in saved])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = KERAS2_VERSION.encode()
        for layer in saved:
            group = root.create_group(layer.name)
            weights = _layer_weights(layer, style)
            group.attrs["weight_names"] = np.array([name.encode() for name, _ in weights]) \
                if weights else np.array([], dtype="S1")
            for name, value in weights:
                group.create_dataset(name, data=_cast(value, dtype))
    return path


def write_network_h5(path: Path, network: list[ConvSpec], *, sequential: bool = False,
                     **kwargs) -> Path:
    return write_keras_h5(path, network_layers(network, relu_layers=not sequential,
                                               input_name="input_1"),
                          sequential=sequential, **kwargs)
