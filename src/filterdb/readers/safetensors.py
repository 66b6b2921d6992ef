"""safetensors reader: the 4-D floating-point conv kernels of a state dict.

PyTorch's ``*.weight`` tensors are (c_out, c_in, kh, kw), as in ONNX. TensorFlow and
Flax name theirs ``kernel`` (``conv1/kernel:0``, ``params.Conv_0.kernel``) and store
them (kh, kw, c_in, c_out); a ``depthwise_kernel`` is (kh, kw, c_in, multiplier). Those
are transposed to the ONNX layout, unless the file's metadata says it was written from
PyTorch (``format: pt``) or the shape only fits (c_out, c_in, kh, kw) (its first two
axes wider than any kernel, its last two not): then a parameter called ``kernel`` is
laid out as any other.

A safetensors file holds named tensors and no graph, so three things are
approximations, and every layer is marked ``depth_is_approximate=True``:

* **Order and depth.** Files written by the safetensors library list their tensors
  sorted by dtype and name, not in the order the model uses them. When the header
  looks library-sorted (names in lexicographic order within each dtype) the reader
  orders the layers by name with numbers compared as numbers (``layer2`` before
  ``layer10``, ``features.9`` before ``features.10``); a header in any other order was
  written deliberately and is kept as it is. A layer's depth is its position in that
  order among the conv layers.
* **Groups and direction** are inferred from names and neighbouring weights as for
  PyTorch state dicts (:func:`.statedict.infer_conv_attributes`); a ``depthwise_kernel``
  is depthwise by its layout.

Weight-normalised, spectrally normalised and pruned convs, stored as parts
(``weight_g``/``weight_v``, ``weight_orig``/``weight_u``/``weight_v`` and their
``parametrizations`` names, ``weight_orig``/``weight_mask``), are read as the weight
the parts stand for (:mod:`.reparam`), rounded to the parts' precision as the PyTorch reader does.

Floating-point tensors (F16, BF16, F32, F64 and, with ``ml_dtypes``, F8) become
float32; ``source_dtype`` keeps the stored type. Integer tensors are skipped: without
their quantization scales they are not filters.
"""

from __future__ import annotations

import json
import os
import re
import struct
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..errors import ModelReadError
from ..records import CONV, ConvLayer, ModelRecord
from . import reparam, require, statedict

NAME = "safetensors"
EXTENSIONS = {".safetensors"}

#: Largest header the sniffer accepts; real headers are kilobytes to a few megabytes.
MAX_HEADER_BYTES = 100 * 2**20

# safetensors dtype -> (numpy dtype of the raw little-endian bytes, source dtype name).
# F16/F32/F64 come through the library's numpy API; BF16 and F8, which numpy lacks,
# are decoded from their bytes (BF16 by hand, F8 through ml_dtypes).
_FLOAT_DTYPES = {
    "F64": ("<f8", "float64"),
    "F32": ("<f4", "float32"),
    "F16": ("<f2", "float16"),
    "BF16": ("<u2", "bfloat16"),
    "F8_E4M3": ("u1", "float8_e4m3fn"),
    "F8_E5M2": ("u1", "float8_e5m2"),
}
_NUMPY_NATIVE = {"F64", "F32", "F16"}
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
             "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
             "I64": 8, "U64": 8, "F64": 8, "C64": 8}
#: PyTorch's weight names, and TensorFlow's and Flax's kernel names (a TF variable name
#: may end in ``:0``).
_TORCH_NAME = re.compile(r"(^|\.)weight$")
_KERNEL_NAME = re.compile(r"(^|[./])(?P<depthwise>depthwise_)?kernel(:\d+)?$")


def sniff(head: bytes, path: Path) -> bool:
    """A little-endian u64 header length N, then a JSON object of N bytes."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return 2 <= length < MAX_HEADER_BYTES and 8 + length <= size


def read(path: Path, limits) -> ModelRecord:
    return read_shards(path, [path], limits)


def read_shards(path: Path, shards: list[Path], limits) -> ModelRecord:
    """One model from the tensors of ``shards``: the file ``path`` itself, or the shards
    of a sharded checkpoint read through its index file ``path``."""
    safetensors = require("safetensors", path, "safetensors")
    entries, metadata, owner, data_starts, sorted_headers = [], {}, {}, [], True
    for number, shard in enumerate(shards):
        shard_entries, shard_metadata, data_start = _header(shard, limits)
        for name, _ in shard_entries:
            if name in owner:
                raise ModelReadError(shard, f"tensor {name!r} is in another shard too")
            owner[name] = number
        entries += shard_entries
        metadata = metadata or shard_metadata
        data_starts.append(data_start)
        sorted_headers &= _library_sorted(shard_entries)
    torch_layout = isinstance(metadata, dict) and metadata.get("format") == "pt"
    copies = statedict.ema_copies({name: tuple(info["shape"]) for name, info in entries})
    entries = [(name, info) for name, info in entries if name not in copies]
    infos = dict(entries)
    found = reparam.find(infos)
    statedict.refuse_unfoldable(path, {name: len(info["shape"]) for name, info in entries},
                                found)
    folded = {name: item for name, item in found.items()
              if len(infos[name]["shape"]) == 4
              and all(infos[part]["dtype"] in _FLOAT_DTYPES for part in item.parts)}
    parts = reparam.parts_of(folded)
    others = statedict.not_conv_weights({name: tuple(info["shape"]) for name, info in entries})
    candidates = [(name, info) for name, info in entries if name in folded or (
        name not in parts and name not in others and _is_conv_weight(name, info))]
    # layer names as the PyTorch reader gives them, without a prefix all names share
    first = next(iter(infos), "")
    shared = len(first) - len(statedict.strip_prefixes([*infos])[0]) if infos else 0
    for name in [n for n, _ in candidates] + sorted(parts):
        elements = int(np.prod(infos[name]["shape"], dtype=object))
        if elements > limits.max_tensor_elements:
            raise ModelReadError(path, f"tensor {name!r} declares shape "
                                       f"{infos[name]['shape']}, beyond the element limit")
    layers: list[ConvLayer] = []
    with ExitStack() as stack:
        opened = [stack.enter_context(_safe_open(safetensors, shard)) for shard in shards]
        handles = [stack.enter_context(open(shard, "rb")) for shard in shards]

        def tensor(name: str) -> np.ndarray:
            number = owner[name]
            if infos[name]["dtype"] not in _NUMPY_NATIVE:
                return _decode(handles[number], shards[number], name, infos[name],
                               data_starts[number])
            try:
                return np.asarray(opened[number].get_tensor(name), dtype=np.float32)
            except Exception as error:
                raise ModelReadError(shards[number], f"tensor {name!r} cannot be read "
                                                     f"({_first_line(error)})") from None

        ordered = sorted(candidates, key=lambda item: statedict.natural_key(item[0])) \
            if sorted_headers else candidates
        for name, info in ordered:
            item = folded.get(name)
            if item is None:
                weight = tensor(name)
            else:
                try:
                    weight = reparam.fold(item, [tensor(part) for part in item.parts])
                except ValueError as error:
                    raise ModelReadError(path, str(error)) from None
                weight = _stored_precision(weight, info["dtype"])
            layers.append(_layer((item.name if item else name)[shared:], weight,
                                 _FLOAT_DTYPES[info["dtype"]][1], torch_layout))
    linear = {_TORCH_NAME.sub("", name)[shared:]: tuple(info["shape"]) for name, info in entries
              if len(info["shape"]) == 2 and statedict.is_module_weight(name)}
    statedict.infer_conv_attributes(
        layers, linear | {layer.name: layer.weight.shape for layer in layers})
    for index, layer in enumerate(layers):
        layer.depth = layer.order = index
        layer.depth_is_approximate = True
    producer = str(metadata.get("format", "")) if isinstance(metadata, dict) else ""
    return ModelRecord(
        name=path.stem,
        path=os.fspath(path),
        framework="safetensors",
        producer=f"safetensors ({producer})" if producer else "safetensors",
        total_depth=len(layers),
        layers=layers,
    )


def _header(path: Path, limits) -> tuple[list[tuple[str, dict]], dict, int]:
    """The header's tensor entries in file order, its metadata and the data offset,
    checked against the file size before anything is read."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelReadError(path, "not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length >= MAX_HEADER_BYTES or 8 + length > size:
            raise ModelReadError(path, f"safetensors header of {length} bytes does not fit "
                                       f"a file of {size} bytes")
        raw = handle.read(length)
    try:
        pairs = json.loads(raw, object_pairs_hook=_Object)
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelReadError(path, f"safetensors header is not JSON ({_first_line(error)})"
                             ) from None
    if not isinstance(pairs, _Object):
        raise ModelReadError(path, "safetensors header is not a JSON object")
    data_size = size - 8 - length
    entries, metadata, seen = [], {}, set()
    for name, info in pairs:
        if name == "__metadata__":
            metadata = dict(info) if isinstance(info, _Object) else {}
            continue
        info = dict(info) if isinstance(info, _Object) else None
        if name in seen or not _valid_entry(info):
            raise ModelReadError(path, f"safetensors header entry {name!r} is malformed")
        seen.add(name)
        start, stop = info["data_offsets"]
        if stop > data_size:
            raise ModelReadError(path, f"tensor {name!r} ends at byte {stop} of a data "
                                       f"section of {data_size} bytes (truncated file?)")
        itemsize = _ITEMSIZE.get(info["dtype"])
        if itemsize is not None:
            nbytes = int(np.prod(info["shape"], dtype=object)) * itemsize
            if nbytes != stop - start:
                raise ModelReadError(path, f"tensor {name!r} declares shape {info['shape']} "
                                           f"of {info['dtype']} but holds {stop - start} bytes")
        entries.append((name, info))
    return entries, metadata, 8 + length


class _Object(list):
    """A JSON object as its (key, value) pairs, in file order."""


def _valid_entry(info) -> bool:
    if info is None or not isinstance(info.get("dtype"), str):
        return False
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return False
    return (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets) and offsets[0] <= offsets[1])


def _is_conv_weight(name: str, info: dict) -> bool:
    return (len(info["shape"]) == 4 and info["dtype"] in _FLOAT_DTYPES
            and (statedict.is_module_weight(name) or bool(_KERNEL_NAME.search(name))))


def _library_sorted(entries: list[tuple[str, dict]]) -> bool:
    """Whether a header lists its tensors as the safetensors library writes them, sorted
    by dtype and name, which says nothing about the model (the reader then orders them
    by name, numbers compared as numbers); a header in any other order was written
    deliberately and is kept as it is."""
    by_dtype: dict[str, list[str]] = {}
    for name, info in entries:
        by_dtype.setdefault(info["dtype"], []).append(name)
    return all(names == sorted(names) for names in by_dtype.values())


def _safe_open(safetensors, path: Path):
    try:  # the library validates the header again (offsets, overlaps, sizes)
        return safetensors.safe_open(os.fspath(path), framework="np")
    except Exception as error:  # SafetensorError has no importable common base
        raise ModelReadError(path, f"not a valid safetensors file "
                                   f"({_first_line(error)})") from None


def _decode(handle, path: Path, name: str, info: dict, data_start: int) -> np.ndarray:
    """BF16 and F8 tensors from their raw bytes: numpy has no such types."""
    start, stop = info["data_offsets"]
    handle.seek(data_start + start)
    raw = handle.read(stop - start)
    if len(raw) != stop - start:
        raise ModelReadError(path, f"tensor {name!r} is truncated")
    dtype = info["dtype"]
    values = np.frombuffer(raw, dtype=_FLOAT_DTYPES[dtype][0])
    if dtype == "BF16":  # the upper 16 bits of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    elif dtype.startswith("F8"):
        ml_dtypes = require("ml_dtypes", path, "safetensors")
        values = values.view(getattr(ml_dtypes, _FLOAT_DTYPES[dtype][1]))
    return values.astype(np.float32).reshape(info["shape"])


def _stored_precision(weight: np.ndarray, dtype: str) -> np.ndarray:
    """A folded float32 weight rounded to its parts' 16-bit type (to nearest even), as
    PyTorch's reader keeps it, so a network gives the same weights from either file."""
    if dtype == "F16":
        return weight.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        bits = weight.view(np.uint32)
        bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(
            0xFFFF0000)
        return bits.view(np.float32)
    return weight


def _layer(name: str, weight: np.ndarray, source_dtype: str, torch_layout: bool = False
           ) -> ConvLayer:
    kernel = _KERNEL_NAME.search(name)
    layer_name = name[:kernel.start()] if kernel else _TORCH_NAME.sub("", name)
    layer_name = layer_name or name
    if kernel and not torch_layout and not _spatial_last(weight.shape):
        if kernel.group("depthwise"):  # (kh, kw, c_in, multiplier) -> (c_in * m, 1, kh, kw)
            kh, kw, channels, multiplier = weight.shape
            weight = np.ascontiguousarray(weight.reshape(kh, kw, 1, channels * multiplier)
                                          .transpose(3, 2, 0, 1))
            return ConvLayer(name=layer_name, op_type=CONV, weight=weight,
                             c_out=channels * multiplier, c_in_per_group=1, groups=channels,
                             source_dtype=source_dtype)
        # (kh, kw, c_in, c_out) -> (c_out, c_in, kh, kw); a transposed conv's
        # (kh, kw, c_out, c_in) -> (c_in, c_out, kh, kw), its ONNX layout
        weight = np.ascontiguousarray(weight.transpose(3, 2, 0, 1))
    return ConvLayer(name=layer_name, op_type=CONV, weight=weight, c_out=int(weight.shape[0]),
                     c_in_per_group=int(weight.shape[1]), source_dtype=source_dtype)


def _spatial_last(shape) -> bool:
    """Whether only the last two axes can be a kernel's (at most 11 wide, as every conv
    kernel in practice): a ``kernel`` that is laid out as PyTorch's in a file without
    metadata saying so."""
    return max(shape[2:]) <= _MAX_KERNEL < max(shape[:2])


_MAX_KERNEL = 11


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def cannot_run(path: Path) -> str:
    """Why this file cannot be run (see ``readers.running``): always a reason."""
    return "a safetensors file holds weights only, no graph to run"
