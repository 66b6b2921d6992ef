"""Keras reader: ``.keras`` archives (Keras 3, and tf.keras 2.13+) and legacy HDF5 files,
read with ``zipfile``, ``json`` and ``h5py`` only. Nothing from the file is executed
(a Lambda layer's code stays an unread string) and TensorFlow is not needed.

Files
    ``.keras``: a zip of ``config.json`` (the model's serialized config),
    ``metadata.json`` and ``model.weights.h5``, in which every layer's variables sit
    in ``<container>/<class>[_n]/vars/<i>``: the container is ``layers`` (Keras 3) or
    ``_layer_checkpoint_dependencies`` (tf.keras 2.13-2.15), the group is named after the
    layer's class in snake case, numbered in the order of the model's layers, and the
    variables are numbered in creation order (kernel first). A nested model's layers
    sit in its own container, e.g. ``layers/functional/layers/conv2d/vars/0``.

    Legacy ``.h5`` (``model.save("x.h5")``): the root attribute ``model_config`` holds
    the config as JSON and ``model_weights/<layer>`` holds each layer's datasets, listed
    in order by its ``weight_names`` attribute (``<layer>/kernel:0``). A nested model's
    group holds the weights of all its layers. A weights-only file
    (``save_weights("x.h5")``) has the ``layer_names`` attribute at its root and no config.

Layouts (Keras kernels become ONNX layout)
    Conv2D (kh, kw, c_in/groups, c_out) -> (c_out, c_in/groups, kh, kw);
    DepthwiseConv2D (kh, kw, c_in, m) -> (c_in*m, 1, kh, kw), groups = c_in, output
    channel c*m + k as in Keras; SeparableConv2D gives two layers, ``<name>/depthwise``
    and ``<name>/pointwise`` (a 1x1 conv), one graph step apart; Conv2DTranspose
    (kh, kw, c_out, c_in) -> ConvTranspose (c_in, c_out, kh, kw). 1-D and 3-D
    convolutions hold no 2-D filters and are skipped. Without a config (weights-only
    files, subclassed models, convs held inside a custom layer) a layer's class comes
    from its variable names, from a name Keras derived from the class, or from the
    shapes of kernel and bias; the groups of a grouped Conv2D are then unknown (1).
    bfloat16 kernels are 2-byte opaque HDF5 values, marked by a ``dtype`` attribute in
    Keras 3 weights files and unmarked in legacy files.

Depth
    From the config's layer graph: every layer call (``inbound_nodes``, in the Keras 3
    form with ``keras_history`` as well as the Keras 2 nested lists) becomes a graph node
    and InputLayers are the inputs; a Sequential model is a chain; nested models are
    flattened into the outer graph. A layer object used at two places of the hierarchy
    (a submodel at the top and inside another submodel) is one layer at its smallest
    depth. Convs held inside a custom layer take that layer's depth, marked
    ``depth_is_approximate``. When the graph cannot be resolved, or the file has no
    config (weights-only files, subclassed models), the depth is the layer's position
    in the file's layer order and ``depth_is_approximate`` is set.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelReadError
from ..graph import GraphCycleError, Node, node_depths, total_depth
from ..records import CONV, CONV_TRANSPOSE, ConvLayer, ModelRecord
from . import read_head

NAME = "keras"
EXTENSIONS = {".keras", ".h5", ".hdf5"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
#: Largest config.json/metadata.json read: real configs are kilobytes to a few MB, and
#: a deflated member can expand a thousandfold (a zip bomb) into memory.
MAX_JSON_BYTES = 64 * 2**20
_CONFIG, _METADATA = "config.json", "metadata.json"
_WEIGHTS, _WEIGHTS_NPZ = "model.weights.h5", "model.weights.npz"
_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
_NOT_LAYERS = {"optimizer", "metrics", "loss", "compile_metrics"}  # top-level state groups

# Keras class names (with their Keras 1/2 aliases) -> kind of 2-D convolution.
_KINDS = {
    "Conv2D": "conv", "Convolution2D": "conv",
    "DepthwiseConv2D": "depthwise",
    "SeparableConv2D": "separable", "SeparableConvolution2D": "separable",
    "Conv2DTranspose": "transpose", "Convolution2DTranspose": "transpose",
    "Deconvolution2D": "transpose", "Deconv2D": "transpose",
    "ConvLSTM2D": "recurrent",
}
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}
_TRANSPOSED_NAME = re.compile(r"transpose|deconv", re.IGNORECASE)


class _Unresolved(Exception):
    """The config's graph cannot be followed; depths fall back to layer order."""


# sniffing ------------------------------------------------------------------

def sniff(head: bytes, path: Path) -> bool:
    """A zip holding config.json and model weights, or an HDF5 file with Keras marks
    (``model_config``, ``model_weights``, ``keras_version``, ``layer_names`` or a Keras 3
    weights layout); never a filterdb database."""
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
            return False  # NotImplementedError: a zip version or method zipfile lacks
        return _CONFIG in names and (_WEIGHTS in names or _WEIGHTS_NPZ in names)
    if head.startswith(HDF5_MAGIC):
        try:
            import h5py

            with h5py.File(path, "r") as handle:
                return _hdf5_kind(handle, Path(path)) is not None
        except Exception:  # any unreadable HDF5 file is simply not claimed
            return False
    return False


def damaged(head: bytes, path: Path) -> bool:
    """An HDF5 file that cannot be opened: for a suffix that other files share (``.h5``,
    ``.hdf5``), a damaged Keras file rather than no model at all. (``.keras`` archives
    need no such test: that suffix is Keras's alone.)"""
    if not head.startswith(HDF5_MAGIC):
        return False
    import h5py

    try:
        with h5py.File(path, "r"):
            return False
    except Exception:  # h5py raises OSError and others for a damaged file
        return True


def _hdf5_kind(handle, path: Path) -> str | None:
    """"legacy" (Keras 2 style), "v3" (Keras 3 weights file) or None."""
    import h5py

    attrs = handle.attrs
    if _text(attrs.get("schema")) == "filterdb":
        return None
    if ("model_config" in attrs or "keras_version" in attrs or "model_weights" in handle
            or _attr_list(attrs, "layer_names") is not None):
        return "legacy"
    if isinstance(handle.get("vars"), h5py.Group) and (
            any(c in handle for c in _CONTAINERS) or path.name.endswith(".weights.h5")):
        return "v3"
    return None


# reading -------------------------------------------------------------------

def read(path: Path, limits) -> ModelRecord:
    head = read_head(path, 8)
    if head.startswith(ZIP_MAGIC):
        return _read_archive(path, limits)
    if head.startswith(HDF5_MAGIC):
        with _hdf5_errors(path), _open_hdf5(path, path) as handle:
            kind = _hdf5_kind(handle, path)
            if kind == "legacy":
                return _read_legacy(path, handle, limits)
            if kind == "v3":
                return _read_v3(path, handle, None, "keras", limits)
        raise ModelReadError(path, "HDF5 file holds no Keras model (no model_config, "
                                   "model_weights or layer_names)")
    raise ModelReadError(path, "not a Keras file (neither a .keras zip nor HDF5)")


@contextmanager
def _hdf5_errors(path: Path):
    """Report a damaged HDF5 structure as a ModelReadError: h5py raises OSError,
    KeyError (an object that cannot be opened), RuntimeError (a group that cannot
    be iterated), UnicodeError (a damaged name, undecodable) or TypeError (a string
    attribute of a damaged encoding) for damaged files."""
    try:
        yield
    except (OSError, KeyError, RuntimeError, UnicodeError, TypeError) as error:
        raise ModelReadError(path, f"damaged HDF5 file ({type(error).__name__}: "
                                   f"{_first_line(error)})") from None


def _read_archive(path: Path, limits) -> ModelRecord:
    try:
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
            names = set(archive.namelist())
            if _CONFIG not in names:
                raise ModelReadError(path, "zip archive is not a .keras model (no config.json)")
            if _WEIGHTS not in names:
                if _WEIGHTS_NPZ in names:
                    raise ModelReadError(path, "weights stored as model.weights.npz are not "
                                               "supported (reading them needs pickle)")
                raise ModelReadError(path, ".keras archive has no model.weights.h5")
            config = _json_member(archive, _CONFIG, path, limits)
            metadata = (_json_member(archive, _METADATA, path, limits)
                        if _METADATA in names else {})
            weights = _stored_member(path, archive.getinfo(_WEIGHTS))
            if weights is None:  # compressed: decompress into a temporary file
                weights = Path(tmp) / "model.weights.h5"
                _extract(archive, _WEIGHTS, weights, path, limits)
            version = metadata.get("keras_version") if isinstance(metadata, dict) else None
            producer = f"keras {version}" if version else "keras"
            with _hdf5_errors(path), _open_hdf5(weights, path) as handle:
                return _read_v3(path, handle, config, producer, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise ModelReadError(path, f"damaged .keras archive ({_first_line(error)})") from None
    except OSError as error:
        raise ModelReadError(path, f"cannot read .keras archive ({_first_line(error)})"
                             ) from None


def _json_member(archive: zipfile.ZipFile, name: str, path: Path, limits):
    info = archive.getinfo(name)
    cap = min(limits.max_file_bytes, MAX_JSON_BYTES)
    if info.file_size > cap:
        raise ModelReadError(path, f"{name} of {info.file_size} bytes exceeds the limit "
                                   f"of {cap} bytes")
    with archive.open(info) as member:  # reads at most file_size bytes, however deflated
        raw = member.read(cap + 1)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelReadError(path, f"{name} is not valid JSON ({_first_line(error)})") from None


def _stored_member(path: Path, info: zipfile.ZipInfo) -> _Window | None:
    """A stored (uncompressed, as Keras writes it) member read in place, or None."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        size = os.fstat(handle.fileno()).st_size
    if len(header) < 30 or header[:4] != ZIP_MAGIC:
        raise zipfile.BadZipFile(f"bad local header of {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.compress_size > size:
        raise zipfile.BadZipFile(f"{info.filename} is truncated")
    return _Window(path, start, info.compress_size)


class _Window(io.RawIOBase):
    """Read-only file object over bytes [start, start + size) of a file."""

    def __init__(self, path: Path, start: int, size: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the window
        self._start, self._size, self._position = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._position))
        if count == 0:
            return 0
        self._file.seek(self._start + self._position)
        got = self._file.readinto(memoryview(buffer).cast("B")[:count])
        self._position += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def _extract(archive: zipfile.ZipFile, name: str, target: Path, path: Path, limits) -> None:
    info = archive.getinfo(name)
    if info.file_size > limits.max_file_bytes:
        raise ModelReadError(path, f"{name} of {info.file_size} bytes exceeds the limit")
    copied = 0
    with archive.open(info) as member, open(target, "wb") as out:
        while chunk := member.read(2**20):
            copied += len(chunk)
            if copied > limits.max_file_bytes:
                raise ModelReadError(path, f"{name} exceeds the file size limit")
            out.write(chunk)


class _open_hdf5:
    """``h5py.File`` read-only (of a path or a file object), its open errors as one-line
    ModelReadErrors."""

    def __init__(self, file, path: Path):
        self.file, self.path = file, path

    def __enter__(self):
        import h5py

        try:
            self.handle = h5py.File(self.file, "r")
        except OSError as error:
            if isinstance(self.file, io.IOBase):
                self.file.close()
            raise ModelReadError(self.path, f"not a readable HDF5 file "
                                            f"({_first_line(error)})") from None
        return self.handle

    def __exit__(self, *exc):
        self.handle.close()
        if isinstance(self.file, io.IOBase):
            self.file.close()


# the config's layer graph --------------------------------------------------

@dataclass
class _KLayer:
    """One Keras layer of the (flattened) config."""

    name: str
    class_name: str
    config: dict
    # per nesting level: (class snake name, ordinal among its class, name, class total)
    lineage: tuple[tuple[str, int, str, int], ...]
    legacy_group: str  # the top-level layer whose legacy HDF5 group holds the weights
    nested: bool
    parts: int = 1  # graph steps: 2 for SeparableConv2D
    slot: int = 0  # position of its first part in layer order
    nodes: list[tuple[int, int]] = field(default_factory=list)  # (graph node, part)


class _Graph:
    """Flattens a model config into graph nodes and layers, nested models inlined."""

    def __init__(self):
        self.layers: dict[tuple, _KLayer] = {}
        self.nodes: list[Node] = []
        self.owners: list[tuple[_KLayer, int]] = []
        self.alias: dict[str, str] = {}
        self.inputs: list[str] = []
        self.slots = 0

    def model(self, entry: dict, scope: str, lineage: tuple, legacy_group: str | None,
              inputs: list[str] | None) -> list[str]:
        conf = entry.get("config")
        if isinstance(conf, list):  # Keras <= 2.2 Sequential
            layers, sequential = conf, True
        elif isinstance(conf, dict) and isinstance(conf.get("layers"), list):
            layers = conf["layers"]
            sequential = entry.get("class_name") == "Sequential" or (
                "input_layers" not in conf
                and not any(isinstance(e, dict) and "inbound_nodes" in e for e in layers))
        else:
            raise _Unresolved("the model config lists no layers")
        if not all(isinstance(e, dict) and isinstance(e.get("class_name"), str)
                   for e in layers):
            raise _Unresolved("a layer entry of the config is malformed")
        totals = Counter(_snake(e["class_name"]) for e in layers)
        ordinals: Counter[str] = Counter()
        info = {}
        for e in layers:
            snake = _snake(e["class_name"])
            name = _layer_name(e)
            info[name] = (e, lineage + ((snake, ordinals[snake], name, totals[snake]),))
            ordinals[snake] += 1
        if sequential:
            return self._sequential(layers, info, scope, legacy_group, inputs)
        return self._functional(conf, layers, info, scope, legacy_group, inputs)

    def _sequential(self, layers, info, scope, legacy_group, inputs) -> list[str]:
        if inputs:
            current = inputs[0]
        else:
            current = f"{scope}<input>"
            self.inputs.append(current)
        for e in layers:
            name = _layer_name(e)
            if e["class_name"] == "InputLayer":
                continue
            if _is_model(e):
                outputs = self.model(e, f"{scope}{name}/", info[name][1],
                                     legacy_group or name, [current])
                current = outputs[0] if outputs else current
            else:
                layer = self._layer(e, info[name][1], legacy_group)
                self._call(layer, f"{scope}{name}", [current])
                current = f"{scope}{name}"
        return [current]

    def _functional(self, conf, layers, info, scope, legacy_group, inputs) -> list[str]:
        calls = {name: len(e.get("inbound_nodes") or []) for name, (e, _) in info.items()}
        nodes_of = {name: e.get("inbound_nodes") or [] for name, (e, _) in info.items()}
        input_order = [ref[0] for ref in _refs(conf.get("input_layers"))]

        def tensor(ref) -> str | None:
            name, node, index = ref
            if name not in info:
                return None  # a constant or a layer outside this model
            entry = info[name][0]
            if entry["class_name"] == "InputLayer":
                return f"{scope}{name}@0"
            count = calls[name]
            if count == 0:
                return None
            if _is_model(entry) and (node >= count
                                     or _skips_first_node(entry, nodes_of[name])):
                node -= 1  # Keras 2 numbers a nested Functional's calls from 1
            node = max(0, min(node, count - 1))
            return f"{scope}{name}@{node}:{index}" if _is_model(entry) else f"{scope}{name}@{node}"

        seen_inputs = 0
        for e in layers:
            name = _layer_name(e)
            lineage = info[name][1]
            if e["class_name"] == "InputLayer":
                out = f"{scope}{name}@0"
                position = input_order.index(name) if name in input_order else seen_inputs
                seen_inputs += 1
                if inputs is not None and position < len(inputs):
                    self.alias[out] = inputs[position]
                else:
                    self.inputs.append(out)
                continue
            nodes = e.get("inbound_nodes") or []
            if _is_model(e):
                for k, node_data in enumerate(nodes or [None]):
                    ins = [t for t in map(tensor, _refs(node_data)) if t is not None]
                    outputs = self.model(e, f"{scope}{name}@{k}/", lineage,
                                         legacy_group or name, ins)
                    for index, out in enumerate(outputs):
                        self.alias[f"{scope}{name}@{k}:{index}"] = out
                continue
            layer = self._layer(e, lineage, legacy_group)
            for k, node_data in enumerate(nodes):
                ins = [t for t in map(tensor, _refs(node_data)) if t is not None]
                self._call(layer, f"{scope}{name}@{k}", ins)
        return [t for t in map(tensor, _refs(conf.get("output_layers"))) if t is not None]

    def _layer(self, entry: dict, lineage: tuple, legacy_group: str | None) -> _KLayer:
        key = lineage
        if key not in self.layers:
            name = _layer_name(entry)
            config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            kind = _kind(entry["class_name"], config) or ""
            parts = 2 if kind.removesuffix("-like") == "separable" else 1
            self.layers[key] = _KLayer(name, entry["class_name"], config, lineage,
                                       legacy_group or name, legacy_group is not None,
                                       parts, self.slots)
            self.slots += parts
        return self.layers[key]

    def _call(self, layer: _KLayer, name: str, inputs: list[str]) -> None:
        if layer.parts == 2:
            first = f"{name}/depthwise"
            self._node(layer, 0, Node(first, inputs, [first]))
            self._node(layer, 1, Node(name, [first], [name]))
        else:
            self._node(layer, 0, Node(name, inputs, [name]))

    def _node(self, layer: _KLayer, part: int, node: Node) -> None:
        layer.nodes.append((len(self.nodes), part))
        self.nodes.append(node)
        self.owners.append((layer, part))

    def depths(self) -> tuple[dict[tuple[int, int], int], int]:
        """Depth per (layer slot, part) and the total depth; raises _Unresolved."""
        if not self.inputs:
            raise _Unresolved("no model input")

        def resolve(name: str) -> str:
            for _ in range(len(self.alias) + 1):
                if name not in self.alias:
                    return name
                name = self.alias[name]
            raise _Unresolved("tensor aliases form a loop")

        nodes = [Node(n.name, [resolve(i) for i in n.inputs], n.outputs) for n in self.nodes]
        try:
            depths = node_depths(nodes, self.inputs)
        except GraphCycleError as error:
            raise _Unresolved(str(error)) from None
        result: dict[tuple[int, int], int] = {}
        for (layer, part), depth in zip(self.owners, depths, strict=True):
            if depth is not None:
                key = (layer.slot, part)
                result[key] = min(result.get(key, depth), depth)
        return result, total_depth(depths)


def _parse(config) -> _Graph:
    if not isinstance(config, dict):
        raise _Unresolved("the config is not a JSON object")
    graph = _Graph()
    try:
        graph.model(config, "", (), None, None)
    except RecursionError:
        raise _Unresolved("models nested too deeply") from None
    if not graph.layers:
        raise _Unresolved("the config holds no layers")
    return graph


def _refs(data) -> Iterator[tuple[str, int, int]]:
    """Every (layer, node, tensor) reference in inbound-node data of either format."""
    if isinstance(data, dict):
        history = data.get("keras_history")
        if isinstance(history, list) and len(history) >= 3:
            yield str(history[0]), _int(history[1]), _int(history[2])
            return
        for value in data.values():
            yield from _refs(value)
    elif isinstance(data, list):
        if (len(data) in (3, 4) and isinstance(data[0], str)
                and type(data[1]) is int and type(data[2]) is int):
            yield data[0], data[1], data[2]
            if len(data) == 4:
                yield from _refs(data[3])  # tensors passed as keyword arguments
            return
        for value in data:
            yield from _refs(value)


def _skips_first_node(entry: dict, nodes) -> bool:
    """Keras 2 (nested-list inbound nodes) saves a nested Functional model that starts
    with an InputLayer with its calls numbered from 1: node 0 is its own construction
    (keras.engine.functional._should_skip_first_node)."""
    if not nodes or not all(isinstance(n, list) for n in nodes):
        return False  # Keras 3 (dict nodes) numbers calls from 0
    conf = entry.get("config")
    layers = conf.get("layers") if isinstance(conf, dict) else None
    return bool(layers) and isinstance(layers[0], dict) and \
        layers[0].get("class_name") == "InputLayer"


def _int(value) -> int:
    return value if type(value) is int else 0


def _is_model(entry: dict) -> bool:
    conf = entry.get("config")
    return (isinstance(conf, dict) and isinstance(conf.get("layers"), list)) or (
        isinstance(conf, list) and entry.get("class_name") in _MODEL_CLASSES)


def _layer_name(entry: dict) -> str:
    conf = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    return str(entry.get("name") or conf.get("name") or entry["class_name"])


def _snake(name: str) -> str:
    """Keras's ``naming.to_snake_case``: the weights group name of a class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# weights -------------------------------------------------------------------

def _read_v3(path: Path, handle, config, producer: str, limits) -> ModelRecord:
    """A Keras 3 weights file, with the archive's config when there is one."""
    graph = None
    if config is not None:
        try:
            graph = _parse(config)
        except _Unresolved:
            graph = None
    if graph is None:  # no usable config: every kernel the file holds, by path
        found = [(p, _guess_class((p.rsplit("/", 1)[-1],), arrays), {}, arrays)
                 for p, arrays in _scan_vars(handle)]
        return _record_without_graph(path, found, producer, limits)

    memo: dict = {}

    def lookup(layer: _KLayer) -> Iterator[list]:
        group = _v3_group(handle, layer.lineage, memo)
        if group is not None:
            yield _vars(group)
        # or the one sublayer that holds them (ConvLSTM2D's cell)
        whole = _v3_group(handle, layer.lineage, memo, own_vars=False)
        held = _scan_vars(whole) if whole is not None else []
        if len(held) == 1 and held[0][0]:
            yield held[0][1]

    def inner(layer: _KLayer) -> list[tuple[str, list]]:
        group = _v3_group(handle, layer.lineage, memo, own_vars=False)
        if group is None:
            return []
        if set(group) <= {"vars"}:  # most layers hold no others: their own kernels only
            own = _vars(group["vars"]) if "vars" in group else []
            return [("", own)] if any(ds.ndim == 4 for _, ds in own) else []
        return _scan_vars(group)  # the layer's own variables under "", then its sublayers'

    return _record_with_graph(path, graph, lookup, producer, limits, inner)


def _v3_group(handle, lineage: tuple, memo: dict, own_vars: bool = True):
    """The layer's ``vars`` group (or with ``own_vars`` false its own group, which also
    holds the groups of layers inside it); follow the lineage down the containers.
    The k-th layer of a class is the k-th group named ``<snake>`` or ``<snake>_<n>``
    (by n) when the file holds one group per layer of the class (Keras 3 numbers them
    0, 1, 2, ...; tf.keras skipped every second number); otherwise the group of exactly
    its number, or of its layer name. ``memo`` keeps each container's matches, which
    would otherwise be listed again for every layer."""
    import h5py

    group = handle
    for snake, ordinal, name, total in lineage:
        found = None
        for container in _CONTAINERS:
            parent = group.get(container)
            if not isinstance(parent, h5py.Group):
                continue
            if (parent.name, snake) not in memo:
                pattern = re.compile(rf"{re.escape(snake)}(?:_(\d+))?")
                memo[parent.name, snake] = sorted((int(m.group(1) or 0), key) for key in parent
                                                  if (m := pattern.fullmatch(key)))
            matches = memo[parent.name, snake]
            exact = snake if ordinal == 0 else f"{snake}_{ordinal}"
            if len(matches) == total:
                found = parent[matches[ordinal][1]]
            elif isinstance(parent.get(exact), h5py.Group):
                found = parent[exact]
            elif isinstance(parent.get(name), h5py.Group):
                found = parent[name]
            if found is not None:
                break
        if found is None:
            return None
        group = found
    if not own_vars:
        return group
    return group.get("vars") if isinstance(group.get("vars"), h5py.Group) else None


def _vars(group) -> list[tuple[str, object]]:
    """(hint, dataset) in variable order: numbered keys by number, named keys as named."""
    import h5py

    keys = [k for k in group if isinstance(group[k], h5py.Dataset)]
    keys.sort(key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
    return [("" if k.isdigit() else k, group[k]) for k in keys]


def _scan_vars(handle) -> list[tuple[str, list]]:
    """(layer path, variables) of every ``.../vars`` group holding a 4-D dataset, by
    numeric-aware path order; the optimizer's state (momenta shaped like kernels) is not
    a layer. In a subclassed model the path may name the attribute that held the layer.
    (Keras 3 also writes the layer's name as an attribute of ``vars``; it is not read: on
    a damaged file reading it can hang inside HDF5.)"""
    import h5py

    found = []

    def visit(name, obj):
        if name.split("/", 1)[0] in _NOT_LAYERS:
            return
        if isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars":
            arrays = _vars(obj)
            if any(ds.ndim == 4 for _, ds in arrays):
                found.append((name.rsplit("/", 1)[0] if "/" in name else "", arrays))

    handle.visititems(visit)
    return sorted(found, key=lambda item: _natural_key(item[0]))


def _guess_class(names: tuple[str, ...], arrays: list) -> str:
    """The conv class of a layer known only by its weights (no config): by its variable
    names (legacy files), by a group or layer name that Keras derived from the class
    (``depthwise_conv2d_3``), by the shapes where they decide it, else a Conv2D (or a
    Conv2DTranspose by a name saying so)."""
    hints = {re.sub(r"_\d+$", "", hint) for hint, _ in arrays}  # depthwise_kernel_1 too
    if "pointwise_kernel" in hints:
        return "SeparableConv2D"
    if "depthwise_kernel" in hints:
        return "DepthwiseConv2D"
    for name in names:
        segment = re.sub(r"_\d+$", "", name)
        for class_name in _KINDS:
            if _snake(class_name) == segment:
                return class_name
    by_shape = _class_from_shapes(arrays)
    if by_shape is not None:
        return by_shape
    return "Conv2DTranspose" if any(_TRANSPOSED_NAME.search(n) for n in names) else "Conv2D"


def _class_from_shapes(arrays: list) -> str | None:
    """The class the variables' shapes leave no doubt about, or None. A subclassed model's
    groups are named after its attributes and Keras 3 numbers the variables, so a
    DepthwiseConv2D or Conv2DTranspose would otherwise read as a Conv2D with its channels
    misplaced, and a SeparableConv2D as a Conv2D missing its pointwise half. With a bias
    of n values, a kernel (kh, kw, a, b) is a Conv2D when n = b, a DepthwiseConv2D (a
    channels, multiplier b) when n = a * b and a Conv2DTranspose (b -> a channels) when
    n = a; two kernels, the second 1x1 over the first's a * b channels, are separable.
    n = a = a * b (b = 1) is taken for the common depthwise conv of multiplier 1 rather
    than a transposed conv of one input channel: the filters are the same either way."""
    kernels = [ds.shape for _, ds in arrays if ds.ndim == 4]
    biases = [ds.shape[0] for _, ds in arrays if ds.ndim == 1]
    if len(kernels) == 2 and kernels[1][:2] == (1, 1) and \
            kernels[1][2] == kernels[0][2] * kernels[0][3]:
        return "SeparableConv2D"
    if len(kernels) != 1 or len(biases) != 1:
        return None
    n, (a, b) = biases[0], kernels[0][2:]
    if n == b:
        return None  # a Conv2D, or undecided (a == b; a == 1: the same filters either way)
    if n == a * b:
        return "DepthwiseConv2D"
    return "Conv2DTranspose" if n == a else None


def _read_legacy(path: Path, handle, limits) -> ModelRecord:
    import h5py

    version = _text(handle.attrs.get("keras_version"))
    backend = _text(handle.attrs.get("backend"))
    producer = " ".join(p for p in ("keras", version, f"({backend})" if backend else "") if p)
    root = handle["model_weights"] if isinstance(handle.get("model_weights"), h5py.Group) \
        else handle
    graph = None
    raw = handle.attrs.get("model_config")
    if raw is not None:
        try:
            graph = _parse(json.loads(_text(raw)))
        except (ValueError, _Unresolved):
            graph = None
    if graph is None:
        return _record_without_graph(path, _legacy_layers(root), producer, limits)

    def lookup(layer: _KLayer) -> Iterator[list]:
        group = root.get(layer.legacy_group)
        if isinstance(group, h5py.Group):
            arrays = _legacy_weights(group)
            own = [(n, ds) for n, ds in arrays if _owner(n) == layer.name]
            if own or layer.nested:  # Keras 1 names ('conv1_W') name no owner
                arrays = own
            yield [(_hint(n), ds) for n, ds in arrays]

    def inner(layer: _KLayer) -> list[tuple[str, list]]:
        group = root.get(layer.legacy_group)
        if not isinstance(group, h5py.Group):
            return []
        owners: dict[str, list] = {}
        wrapped = _inner_configs(layer.config)  # a wrapped model's weights bear its name
        for weight_name, ds in _legacy_weights(group):
            parts = weight_name.split("/")  # '<layer>/<sublayer>/kernel': a sublayer's;
            if layer.name in parts[:-1]:    # '<layer>/kernel': the layer's own ("")
                sub = "/".join(parts[parts.index(layer.name) + 1:-1])
            elif len(parts) > 1 and parts[0] in wrapped:
                sub = "/".join(parts[:-1])
            else:
                continue
            owners.setdefault(sub, []).append((_hint(weight_name), ds))
        return [(sub, arrays) for sub, arrays in owners.items()
                if any(ds.ndim == 4 for _, ds in arrays)]

    return _record_with_graph(path, graph, lookup, producer, limits, inner)


def _legacy_weights(group) -> list[tuple[str, object]]:
    """(weight name, dataset) of a legacy layer group, in ``weight_names`` order."""
    import h5py

    names = _attr_list(group.attrs, "weight_names")
    if names is None:
        names = []
        group.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset)
                         else None)
    return [(n, group[n]) for n in names if isinstance(group.get(n), h5py.Dataset)]


def _legacy_layers(root) -> list[tuple[str, str, dict, list]]:
    """Weights-only legacy file: (name, guessed class, {}, arrays) per layer holding a
    4-D kernel, in ``layer_names`` order (a nested model's layers by weight name)."""
    import h5py

    names = _attr_list(root.attrs, "layer_names")
    if names is None:
        names = [k for k in root if isinstance(root[k], h5py.Group)
                 and k not in ("optimizer_weights", "top_level_model_weights")]
    found = []
    for group_name in names:
        group = root.get(group_name)
        if not isinstance(group, h5py.Group):
            continue
        owners: dict[str, list] = {}
        for weight_name, ds in _legacy_weights(group):
            owners.setdefault(_owner_path(weight_name, group_name), []).append(
                (_hint(weight_name), ds))
        for owner, arrays in owners.items():
            if not any(ds.ndim == 4 for _, ds in arrays):
                continue
            if any(owner == name and _same_arrays(arrays, other)
                   for name, _, _, other in found):
                continue  # one layer saved again in another top-level layer's group
            found.append((owner, _guess_class((owner.rsplit("/", 1)[-1],), arrays), {},
                          arrays))
    return found


def _same_arrays(a: list, b: list) -> bool:
    """Whether two layers' (hint, dataset) lists hold equal arrays, compared a few MB at
    a time; a dataset beyond the default element limit counts as different (its read
    refuses it later)."""
    if len(a) != len(b):
        return False
    for (_, x), (_, y) in zip(a, b, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype or x.size > _MAX_COMPARED:
            return False
        if x.ndim == 0:
            if not np.array_equal(x[()], y[()]):
                return False
            continue
        step = max(1, (1 << 22) // max(1, x.size // max(1, x.shape[0])))
        for start in range(0, x.shape[0], step):
            if not np.array_equal(x[start:start + step], y[start:start + step]):
                return False
    return True


#: Elements beyond which :func:`_same_arrays` does not compare (``Limits``' default).
_MAX_COMPARED = 2**31


def _owner_path(weight_name: str, group_name: str) -> str:
    """The layer a weight of a weights-only file belongs to: its name's path without
    the variable and the group's own name (``model/block1/conv/kernel:0`` in group
    ``model`` -> ``block1/conv``). The whole path, because nested models (transformers'
    TF checkpoints) have many layers called ``convolution``; the group for a bare name."""
    parts = weight_name.split("/")[:-1]
    if parts and parts[0] == group_name:
        parts = parts[1:]
    return "/".join(parts) or group_name


def _owner(weight_name: str) -> str:
    parts = weight_name.split("/")
    return parts[-2] if len(parts) >= 2 else ""


def _hint(weight_name: str) -> str:
    return re.sub(r":\d+$", "", weight_name.rsplit("/", 1)[-1])


# layers and records --------------------------------------------------------

def _record_with_graph(path: Path, graph: _Graph, lookup, producer: str, limits,
                       inner) -> ModelRecord:
    """The conv layers of the config's layers, with the weights ``lookup(layer)`` yields;
    ``inner(layer)`` gives (sub-path, variables) of the layers held inside a layer
    that is not a conv itself."""
    try:
        depths, total = graph.depths()
    except _Unresolved:
        depths, total = {}, 0
    layers: list[ConvLayer] = []
    keys: list[tuple[int, int]] = []
    held: list[bool] = []  # inside another layer: its depth is that layer's
    firsts: dict[tuple, tuple[_KLayer, list[ConvLayer]]] = {}
    repeats: list[_KLayer] = []
    for layer in graph.layers.values():
        kind = _kind(layer.class_name, layer.config)
        label = "/".join(step[2] for step in layer.lineage)  # nested: model/layer
        converted, problem = None, ""
        if kind is not None:
            converted, problem = _converted(path, label, kind, layer, lookup, limits)
        if converted is None and (kind is None or kind.endswith("-like")):
            held_convs = _held_convs(path, label, layer, inner, limits)
            first = firsts.get(_identity(layer))
            if held_convs and first is not None and _same_weights(held_convs, first[1]):
                _merge_depths(depths, layer, first[0])  # a block reached at two places
                repeats.append(layer)
                continue
            if held_convs:
                firsts.setdefault(_identity(layer), (layer, held_convs))
            for conv in held_convs:
                conv.order = layer.slot
                keys.append((layer.slot, 0))
                held.append(True)
                layers.append(conv)
            continue
        first = firsts.get(_identity(layer))
        if first is not None and _same_weights(converted, first[1]):
            _merge_depths(depths, layer, first[0])
            repeats.append(layer)
            continue
        if converted is None:
            raise ModelReadError(path, problem)
        firsts.setdefault(_identity(layer), (layer, converted))
        for part, conv in enumerate(converted):
            conv.order = layer.slot + part
            keys.append((layer.slot, min(part, layer.parts - 1)))  # ConvLSTM2D: 2 at 1 step
            held.append(False)
            layers.append(conv)
    # Any conv layer the graph does not reach: fall back to layer order for all.
    approximate = any(key not in depths for key in keys)
    for conv, key, inside in zip(layers, keys, held, strict=True):
        conv.depth = conv.order if approximate else depths[key]
        conv.depth_is_approximate = approximate or inside
    if approximate:
        total = graph.slots
    counts = Counter(layer.class_name for layer in graph.layers.values())
    counts.subtract(layer.class_name for layer in repeats)
    return ModelRecord(name=path.stem, path=os.fspath(path), framework="keras",
                       producer=producer, operator_counts=dict(+counts),
                       total_depth=total, layers=layers)


def _held_convs(path: Path, label: str, layer: _KLayer, inner, limits) -> list[ConvLayer]:
    """Conv layers held inside a layer of another class (a custom block, a wrapper such
    as TimeDistributed, a model it wraps), and the kernels such a layer owns itself
    (e.g. MLTK's MultiScaleTemporalConvolution, one depthwise kernel per scale): Keras
    saves their variables below the block's. A held layer whose config the block's
    config holds (a wrapper's ``layer``, a wrapped model's layers) is read with it and
    named after it; the classes of the others are guessed from the weights, as
    without a config."""
    known = _inner_configs(layer.config)
    convs: list[ConvLayer] = []
    for sub, arrays in inner(layer):
        name = sub.rsplit("/", 1)[-1] if sub else layer.name
        if not sub and name not in known and "layer" in known:
            name = "layer"  # a legacy wrapper saves its layer's variables as its own
        if name in known:
            inner_name, class_name, config = known[name]
            kind = _kind(class_name, config)
            if kind is not None:
                where = f"{label}/{sub.rsplit('/', 1)[0]}/" if "/" in sub else f"{label}/"
                try:
                    convs += _convert(path, where + inner_name, kind, config, arrays, limits)
                except _Mismatch as error:
                    raise ModelReadError(path, str(error)) from None
                continue
        parts = ([(f"{label}/{sub}", arrays)] if sub
                 else _split_kernels(label, name, arrays))
        for part_label, part in parts:
            class_name = _guess_class((name,), part)
            try:
                convs += _convert(path, part_label, _KINDS[class_name], {}, part, limits)
            except _Mismatch as error:
                raise ModelReadError(path, str(error)) from None
    return convs


def _split_kernels(label: str, name: str, arrays: list) -> list[tuple[str, list]]:
    """The variables of a layer known only by its weights, as conv layers: all of them
    as one, or, for several kernels that are not a separable pair (a custom layer's),
    each kernel as one named ``<label>/<variable>``."""
    kernels = [(hint, ds) for hint, ds in arrays if ds.ndim == 4]
    if len(kernels) < 2 or _guess_class((name,), arrays) == "SeparableConv2D":
        return [(label, arrays)]
    return [(f"{label}/{hint or k}", [(hint, ds)]) for k, (hint, ds) in enumerate(kernels)]


def _inner_configs(config) -> dict[str, tuple[str, str, dict]]:
    """The layer a wrapper's config holds (TimeDistributed's ``layer``), and the layers
    of a model it wraps (at any depth of nesting), by the names their weights are saved
    under: the layer's name, and ``layer`` for the wrapped one (Keras 3 saves it under
    that attribute). Values are (layer name, class name, config). Other layer entries a
    custom layer's config may hold (templates, say) are not its sublayers'."""
    found: dict[str, tuple[str, str, dict]] = {}
    wrapped = config.get("layer") if isinstance(config, dict) else None
    if not (isinstance(wrapped, dict) and isinstance(wrapped.get("class_name"), str)
            and isinstance(wrapped.get("config"), dict)):
        return found
    found["layer"] = (str(wrapped["config"].get("name", "")), wrapped["class_name"],
                      wrapped["config"])
    pending = [wrapped]  # a wrapped model's layers, and theirs (no recursion)
    while pending:
        entry = pending.pop()
        inner = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(inner, dict) or not isinstance(entry.get("class_name"), str):
            continue
        name = str(inner.get("name", ""))
        if name:
            found.setdefault(name, (name, entry["class_name"], inner))
        if entry["class_name"] in _MODEL_CLASSES and isinstance(inner.get("layers"), list):
            pending.extend(reversed(inner["layers"]))
    return found


def _converted(path: Path, label: str, kind: str, layer: _KLayer, lookup,
               limits) -> tuple[list[ConvLayer] | None, str]:
    """The layer's conv layers from the first weights that fit its config, or None and
    why not."""
    problem = f"no weights found for conv layer {label!r}"
    for arrays in lookup(layer):
        try:
            return _convert(path, label, kind, layer.config, arrays, limits), problem
        except _Mismatch as error:
            problem = str(error)
    return None, problem


def _identity(layer: _KLayer) -> tuple[str, str, str]:
    """What two config entries of one layer object share: a layer (or a nested model
    holding it) used in two places of the model hierarchy, e.g. at the top and inside a
    Sequential submodel, is serialized in full at each place, under each lineage."""
    return layer.name, layer.class_name, json.dumps(_without_ids(layer.config),
                                                    sort_keys=True, default=str)


def _without_ids(value):
    """A config without the ``shared_object_id`` marks that Keras 3 adds to objects
    (initializers, dtype policies) serialized more than once in one file: they differ
    between the two places of one layer."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _same_weights(converted: list[ConvLayer] | None, first: list[ConvLayer]) -> bool:
    """Whether a layer whose config entry repeats an earlier one's is that layer again:
    Keras 3 saves an object once, at its first place in the ``.keras`` weights, so the
    later places have no weights; a legacy HDF5 file stores them again in the group of
    each top-level layer that holds them, the same values."""
    if converted is None:
        return True
    return len(converted) == len(first) and all(
        a.weight.shape == b.weight.shape and np.array_equal(a.weight, b.weight)
        for a, b in zip(converted, first, strict=True))


def _merge_depths(depths: dict, layer: _KLayer, first: _KLayer) -> None:
    """A layer reached at two places takes its smallest depth, as a shared layer does."""
    for part in range(layer.parts):
        here, there = (layer.slot, part), (first.slot, part)
        if here in depths:
            depths[there] = min(depths.get(there, depths[here]), depths[here])


def _record_without_graph(path: Path, found: list, producer: str, limits) -> ModelRecord:
    """Layers in file order; depth is the position, marked approximate."""
    layers: list[ConvLayer] = []
    counts: Counter[str] = Counter()
    for name, class_name, config, arrays in found:
        parts = [(name, arrays)]
        if class_name == "Conv2D" and not config:  # guessed: maybe a custom layer's kernels
            parts = _split_kernels(name, name.rsplit("/", 1)[-1], arrays)
        converted = []
        for part_name, part in parts:
            kind = _kind(class_name if len(parts) == 1 else
                         _guess_class((part_name.rsplit("/", 1)[-1],), part), config)
            try:
                converted += _convert(path, part_name, kind, config, part, limits)
            except _Mismatch as error:
                raise ModelReadError(path, str(error)) from None
        counts[class_name] += 1
        for conv in converted:
            conv.order = conv.depth = len(layers)
            conv.depth_is_approximate = True
            layers.append(conv)
    return ModelRecord(name=path.stem, path=os.fspath(path), framework="keras",
                       producer=producer, operator_counts=dict(counts),
                       total_depth=len(layers), layers=layers)


def _kind(class_name: str, config: dict) -> str | None:
    """The conv kind of a layer class. An unknown class configured like one of the conv
    classes (a subclass, e.g. quantization-aware or renamed) counts as one when its
    weights fit (``<kind>-like``): a 2-D ``kernel_size`` with ``depth_multiplier``
    (DepthwiseConv2D; with ``filters`` too, SeparableConv2D), with ``output_padding``
    or a class name saying Transpose (Conv2DTranspose), else with ``filters`` (Conv2D)."""
    if class_name in _KINDS:
        return _KINDS[class_name]
    size = config.get("kernel_size") if isinstance(config, dict) else None
    if not (isinstance(size, list | tuple) and len(size) == 2):
        return None
    if "depth_multiplier" in config:
        return "separable-like" if "filters" in config else "depthwise-like"
    if "filters" not in config:
        return None
    if "recurrent_activation" in config:
        return "recurrent-like"
    if "output_padding" in config or _TRANSPOSED_NAME.search(class_name):
        return "transpose-like"
    return "conv-like"


class _Mismatch(Exception):
    """These arrays are not the layer's weights (shape or count disagree with config)."""


def _convert(path: Path, name: str, kind: str, config: dict, arrays: list,
             limits) -> list[ConvLayer]:
    kind = kind.removesuffix("-like")
    if config.get("dim_ordering") == "th":
        raise ModelReadError(path, f"conv layer {name!r}: Keras 1 Theano-ordered kernels are "
                                   "not supported")
    kernels = [(hint, ds) for hint, ds in arrays if ds.ndim == 4]
    named = {hint: ds for hint, ds in kernels if hint}
    strides = _pair(config.get("strides"), 1)
    dilations = _pair(config.get("dilation_rate"), 1)
    size = _pair(config.get("kernel_size"), None)
    if kind == "separable":
        if len(kernels) < 2:
            raise _Mismatch(f"conv layer {name!r} has {len(kernels)} kernels, expected 2")
        depthwise = named.get("depthwise_kernel", kernels[0][1])
        pointwise = named.get("pointwise_kernel", kernels[1][1])
        first = _depthwise(path, f"{name}/depthwise", depthwise, config, size, strides,
                           dilations, limits)
        second = _plain(path, f"{name}/pointwise", pointwise, {"filters": config.get("filters")},
                        (1, 1), (1, 1), (1, 1), limits)
        if second.c_in_per_group != first.c_out:
            raise _Mismatch(f"separable layer {name!r}: pointwise kernel does not fit "
                            f"the depthwise one")
        return [first, second]
    if not kernels:
        raise _Mismatch(f"no weights found for conv layer {name!r}")
    if kind == "recurrent":  # ConvLSTM2D: input and recurrent kernels, 4 gates each
        if len(kernels) < 2:
            raise _Mismatch(f"recurrent conv layer {name!r} has {len(kernels)} kernels, "
                            "expected 2")
        gates = {"filters": 4 * config["filters"]} if type(config.get("filters")) is int \
            else {}
        kernel = named.get("kernel", kernels[0][1])
        recurrent = named.get("recurrent_kernel", kernels[1][1])
        return [_plain(path, f"{name}/kernel", kernel, gates, size, strides, dilations, limits),
                _plain(path, f"{name}/recurrent_kernel", recurrent, gates, size, (1, 1),
                       (1, 1), limits)]
    if kind == "depthwise":
        kernel = named.get("depthwise_kernel", named.get("kernel", kernels[0][1]))
        return [_depthwise(path, name, kernel, config, size, strides, dilations, limits)]
    kernel = named.get("kernel", kernels[0][1])
    if kind == "transpose":
        return [_transposed(path, name, kernel, config, size, strides, dilations, limits)]
    conv = _plain(path, name, kernel, config, size, strides, dilations, limits)
    _add_lora(path, name, conv, arrays, config, limits)
    return [conv]


def _add_lora(path: Path, name: str, conv: ConvLayer, arrays: list, config: dict,
              limits) -> None:
    """Add a LoRA adapter's update to the kernel, as the layer's forward pass does:
    ``kernel + alpha / rank * lora_kernel_a @ lora_kernel_b``. A Keras 3 weights file
    holds the merged kernel, but the legacy HDF5 writer saves the variables as they
    are: the frozen base kernel and the two factors."""
    named = {hint: ds for hint, ds in arrays if hint}
    if "lora_kernel_a" not in named or "lora_kernel_b" not in named:
        return
    a, _ = _array(path, f"{name}/lora_kernel_a", named["lora_kernel_a"], limits)
    b, _ = _array(path, f"{name}/lora_kernel_b", named["lora_kernel_b"], limits)
    c_out, c_in, kh, kw = conv.weight.shape
    if a.ndim != 4 or a.shape[:3] != (kh, kw, c_in) or b.shape != (a.shape[3], c_out):
        raise _Mismatch(f"conv layer {name!r}: LoRA factors of shapes {a.shape} and "
                        f"{b.shape} do not fit its kernel")
    rank = a.shape[3]
    alpha = config.get("lora_alpha") or config.get("lora_rank") or rank
    update = (alpha / rank) * np.matmul(a, b, dtype=np.float32)  # (kh, kw, c_in, c_out)
    conv.weight = np.ascontiguousarray(conv.weight + update.transpose(3, 2, 0, 1),
                                       dtype=np.float32)


def _check(name: str, shape: tuple, size, channels: int, expected) -> None:
    if size is not None and tuple(shape[:2]) != size:
        raise _Mismatch(f"conv layer {name!r}: kernel of shape {shape} does not match "
                        f"kernel_size {list(size)} of its config")
    if expected is not None and type(expected) is int and channels != expected:
        raise _Mismatch(f"conv layer {name!r}: kernel of shape {shape} does not match "
                        f"{expected} channels of its config")


def _plain(path, name, dataset, config, size, strides, dilations, limits) -> ConvLayer:
    _check(name, dataset.shape, size, dataset.shape[3], config.get("filters"))
    kernel, dtype = _array(path, name, dataset, limits)
    c_in_per_group, c_out = kernel.shape[2], kernel.shape[3]
    groups = config.get("groups", 1)
    groups = groups if type(groups) is int and groups > 0 and c_out % groups == 0 else 1
    weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    return ConvLayer(name=name, op_type=CONV, weight=weight,
                     c_out=int(c_out), c_in_per_group=int(c_in_per_group), groups=groups,
                     strides=strides, dilations=dilations, source_dtype=dtype)


def _depthwise(path, name, dataset, config, size, strides, dilations, limits) -> ConvLayer:
    multiplier = config.get("depth_multiplier", 1) if config else None
    _check(name, dataset.shape, size, dataset.shape[3], multiplier)
    kernel, dtype = _array(path, name, dataset, limits)
    kh, kw, c_in, multiplier = kernel.shape
    weight = kernel.transpose(2, 3, 0, 1).reshape(c_in * multiplier, 1, kh, kw)
    return ConvLayer(name=name, op_type=CONV, weight=weight, c_out=int(c_in * multiplier),
                     c_in_per_group=1, groups=int(c_in), strides=strides,
                     dilations=dilations, source_dtype=dtype)


def _transposed(path, name, dataset, config, size, strides, dilations, limits) -> ConvLayer:
    _check(name, dataset.shape, size, dataset.shape[2], config.get("filters"))
    kernel, dtype = _array(path, name, dataset, limits)
    c_out, c_in = kernel.shape[2], kernel.shape[3]
    weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    return ConvLayer(name=name, op_type=CONV_TRANSPOSE, weight=weight,
                     c_out=int(c_out), c_in_per_group=int(c_in), groups=1,
                     strides=strides, dilations=dilations, source_dtype=dtype)


def _array(path: Path, name: str, dataset, limits) -> tuple[np.ndarray, str]:
    """A kernel as contiguous float32 and the name of its stored dtype; the declared size
    is checked before anything is read."""
    if dataset.size > limits.max_tensor_elements:
        raise ModelReadError(path, f"kernel of layer {name!r} declares shape "
                                   f"{list(dataset.shape)}, beyond the element limit")
    bfloat16 = _is_bfloat16(dataset)
    if not bfloat16 and dataset.dtype.kind != "f":
        raise ModelReadError(path, f"kernel of layer {name!r} holds {dataset.dtype} values; "
                                   "quantized Keras kernels are not supported")
    try:
        raw = dataset[()]
    except (OSError, ValueError) as error:
        raise ModelReadError(path, f"kernel of layer {name!r} cannot be read "
                                   f"({_first_line(error)})") from None
    if bfloat16:  # stored as opaque 2-byte values: the upper half of a float32
        bits = np.ascontiguousarray(raw).view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dataset.shape), "bfloat16"
    return np.asarray(raw, dtype=np.float32), dataset.dtype.name


def _is_bfloat16(dataset) -> bool:
    """HDF5 has no bfloat16, so Keras stores it as 2-byte opaque values: the Keras 3
    weights file marks them with a ``dtype`` attribute, the legacy HDF5 writer
    (``model.save("x.h5")`` in Keras 3) leaves them unmarked. No other dtype Keras
    saves is 2-byte opaque (float16 is an HDF5 float, quantized kernels are integers)."""
    if _text(dataset.attrs.get("dtype")) == "bfloat16":
        return True
    return dataset.dtype.kind == "V" and dataset.dtype.itemsize == 2 and \
        dataset.dtype.names is None


def _pair(value, default) -> tuple[int, int] | None:
    if type(value) is int:
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2 and all(type(v) is int
                                                                   for v in value):
        return int(value[0]), int(value[1])
    return None if default is None else (default, default)


# small helpers -------------------------------------------------------------

def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _attr_list(attrs, name: str) -> list[str] | None:
    """A list attribute, also when Keras split it into ``name0``, ``name1``, ..."""
    if name in attrs:
        chunks = [attrs[name]]
    elif f"{name}0" in attrs:
        chunks, index = [], 0
        while f"{name}{index}" in attrs:
            chunks.append(attrs[f"{name}{index}"])
            index += 1
    else:
        return None
    return [_text(v) for chunk in chunks for v in np.atleast_1d(chunk)]


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def cannot_run(path: Path) -> str:
    """Why this file cannot be run (see ``readers.running``): always a reason."""
    return "running a Keras model needs TensorFlow, which filterdb does not use"
