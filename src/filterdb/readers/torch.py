"""PyTorch reader: state dicts, checkpoints that nest them, and TorchScript archives.

Files are ``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.tar``, ``.pkl`` (``model_best.pth.tar``,
fastai's ``export.pkl``), ``.jit`` or ``.torchscript``. They are recognised by content: a
``torch.save`` zip archive (a member ``<name>/data.pkl``), a TorchScript archive
(``<name>/constants.pkl`` and ``<name>/code/``) or a legacy ``torch.save`` pickle (the
pickle protocol byte, then torch's magic number). Raw tensor bytes, such as ONNX
external data in a ``.bin``, are not claimed.

Safety
------
Pickles are loaded with ``torch.load(..., weights_only=True)``, which rebuilds tensors
and plain containers and nothing else. A file that names any other class or function
(a checkpoint's ``argparse.Namespace`` or numpy metadata, a pickled ``nn.Module``) is
read again with :mod:`.torch_pickle`, which gives it inert stand-ins for those and runs
none of them: a pickled module's parameters are then read like a state dict, with the
groups, strides, dilations and direction its conv modules stored. A file that cannot be
read even so (a tensor subclass, whose class rebuilds the tensor) is refused with a
message naming the global it asked for. ``Limits(allow_unsafe_pickle=True)``
(``--allow-unsafe-pickle`` on the command line) loads it with full unpickling, which
RUNS CODE FROM THE FILE: only for files you trust. TorchScript archives are loaded with
``torch.jit.load``, whose restricted unpickler builds no Python objects.

State dicts and checkpoints
---------------------------
The tensors are taken from the object itself or, for a checkpoint, from a mapping of
tensors nested one or two levels under one of :data:`NESTED_KEYS` (``state_dict``,
``model_state_dict``, ``model``, ``module``, ``net``, ``network``, ``params`` (BasicSR,
Real-ESRGAN), ``state_dict_ema``, ``ema``, ``model_ema``, ``params_ema``), tried in that
order: when a checkpoint holds both the main weights and an EMA copy, the main weights
are read. Otherwise every network under a key of its own is read (a GAN's ``netG`` and
``netD``), again without the EMA copy of one of them (``g_ema`` beside ``g``).
Optimizer states are never read.
A prefix shared by every tensor name (``module.`` of DataParallel, ``model.`` of
Lightning, ``_orig_mod.`` of ``torch.compile``, ``net.``, ``network.``) is removed,
so layer names read like module names (``layer1.0.conv1``).

Without a graph, these approximations hold (and are marked on every layer with
``ConvLayer.depth_is_approximate = True``):

* conv weights are the 4-D floating-point (or quantized, then dequantized) tensors
  whose name ends in ``weight`` (and whose module's bias, if any, is a vector);
* layer order is the state dict's order, and depth is that order among the conv
  layers (layer *i* has depth *i*);
* direction and groups are inferred from names and neighbouring weights, as for
  safetensors (:func:`.statedict.infer_conv_attributes`): a ConvTranspose whose name
  does not say so reads as a Conv, its ``c_out`` / ``c_in_per_group`` the weight's
  first two dimensions swapped (its filters are the same); strides and dilations are
  reported as 1.

TorchScript archives
--------------------
The forward graph (inlined) gives the real depth of every ``aten::conv2d``,
``aten::conv_transpose2d``, ``aten::_convolution`` and ``aten::convolution`` node,
and the node's constant arguments give groups, strides, dilations and whether it is
transposed; ``quantized::conv2d`` (``_relu``, ``conv_transpose2d``) nodes give them
from their packed parameters, whose weights are dequantized. Each node's weight is
found by following its ``prim::GetAttr`` chain to the parameter's qualified name, or
is a constant of the graph in a frozen module (``torch.jit.freeze``, which may have
folded a BatchNorm into it), named ``conv0``, ``conv1``, ... in graph order. When
that fails for any conv node, or the graph has no conv node of these kinds, the
archive's parameters are read like a state dict (parameter order, approximate depth).

Framework names: ``pytorch`` (state dicts, checkpoints) and ``torchscript``.
Precision: ``ConvLayer.source_dtype`` is the tensor's dtype name (``float32``,
``float16``, ``bfloat16``, ``qint8``, ...); filters are always float32.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import FilterDBError, ModelReadError
from ..graph import GraphCycleError, Node, node_depths, total_depth
from ..records import CONV, CONV_TRANSPOSE, QUANTIZED_CONV, ConvLayer, ModelRecord
from . import read_head, reparam, require, statedict, torch_pickle
from .running import require_runtime

NAME = "torch"
#: ``.tar`` and ``.pkl`` as in ``model_best.pth.tar`` (PyTorch's ImageNet example) and
#: fastai's ``export.pkl``: recognised by content only (``AMBIGUOUS_EXTENSIONS``).
EXTENSIONS = {".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl", ".jit", ".torchscript"}

#: Checkpoint keys that may hold the model's tensors, in order of preference.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network",
               "params", "state_dict_ema", "ema", "model_ema", "params_ema")

_ZIP_MAGIC = b"PK\x03\x04"
#: Largest compressed archive member read (TorchScript code files are kilobytes).
MAX_INFLATED_BYTES = 64 * 2**20
# torch.save's legacy format pickles this number first (LONG1 opcode, 10 bytes).
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_TORCHSCRIPT, _PICKLE_ZIP = "torchscript", "pickle"

# conv node kind -> (index of the transposed flag or a fixed value, groups, dilation)
_CONV_NODES = {
    "aten::conv2d": (False, 6, 5),
    "aten::conv_transpose2d": (True, 6, 7),
    "aten::_convolution": (6, 8, 5),
    "aten::convolution": (6, 8, 5),
}
_QUANTIZED_CONV_NODES = {"quantized::conv2d", "quantized::conv2d_relu",
                         "quantized::conv_transpose2d"}
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def sniff(head: bytes, path: Path) -> bool:
    """A torch.save or TorchScript zip archive, or a legacy torch.save pickle."""
    if head.startswith(_ZIP_MAGIC):
        try:
            return _archive_kind(path) is not None
        except Exception:  # zipfile raises BadZipFile, OSError, EOFError, ...: not ours
            return False
    return _is_legacy(head)


def damaged(head: bytes, path: Path) -> bool:
    """A zip archive that cannot be opened: for a suffix that other files share
    (``.tar``, ``.pkl``, ``.bin``), a damaged torch.save archive rather than no model."""
    if not head.startswith(_ZIP_MAGIC):
        return False
    try:
        with zipfile.ZipFile(path):
            return False
    except Exception:  # zipfile raises BadZipFile, OSError, EOFError, ...
        return True


def _is_legacy(head: bytes) -> bool:
    # PROTO opcode, then (protocol 4+: a FRAME opcode and) the magic number.
    return head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]


def _archive_kind(path: Path) -> str | None:
    """``"torchscript"``, ``"pickle"`` (torch.save) or None for another zip file."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    tops: dict[str, set[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) >= 2:
            tops.setdefault(parts[0], set()).add(parts[1] if len(parts) == 2 else parts[1] + "/")
    if any("constants.pkl" in members and "code/" in members for members in tops.values()):
        return _TORCHSCRIPT
    if "data.pkl" in names or any("data.pkl" in members for members in tops.values()):
        return _PICKLE_ZIP
    return None


def _inflating_member(path: Path) -> zipfile.ZipInfo | None:
    """The first compressed member that would inflate past MAX_INFLATED_BYTES, or None.

    torch.save stores members uncompressed (tensors are memory mapped); TorchScript
    deflates only its small code files. torch inflates a compressed member whole
    into memory, so a large one (a zip bomb) is refused from its declared size.
    """
    with zipfile.ZipFile(path) as archive:
        return next((info for info in archive.infolist()
                     if info.compress_type != zipfile.ZIP_STORED
                     and info.file_size > MAX_INFLATED_BYTES), None)


def read(path: Path, limits) -> ModelRecord:
    torch = require("torch", path, "torch")
    path = Path(path)
    loaded = _load_file(torch, path, limits)
    if isinstance(loaded, ModelRecord):
        return loaded
    return _record_from_object(torch, loaded, path, limits)


def read_shards(path: Path, shards: list[Path], limits) -> ModelRecord:
    """One model from the state dict split over ``shards`` (a sharded checkpoint, read
    through its index file ``path``); each shard is a mapping of tensors."""
    torch = require("torch", path, "torch")
    merged: dict = {}
    for shard in shards:
        loaded = _load_file(torch, shard, limits)
        if isinstance(loaded, ModelRecord) or not isinstance(loaded, Mapping):
            raise ModelReadError(shard, "a shard of a sharded checkpoint must be a state dict")
        for name, value in loaded.items():
            if name in merged:
                raise ModelReadError(shard, f"tensor {name!r} is in another shard too")
            merged[name] = value
    return _record_from_object(torch, merged, path, limits)


def _load_file(torch, path: Path, limits):
    """The object a torch file holds, or the record of a TorchScript archive."""
    head = read_head(path)
    if head.startswith(_ZIP_MAGIC):
        try:
            kind = _archive_kind(path)
        except Exception as error:  # BadZipFile, OSError, EOFError, ...
            raise ModelReadError(path, f"damaged or truncated zip archive "
                                       f"({_first_line(error)})") from None
        if kind is None:
            raise ModelReadError(path, "a zip archive without data.pkl: not a PyTorch file")
        inflating = _inflating_member(path)
        if inflating is not None:
            raise ModelReadError(path, f"archive member {inflating.filename!r} would inflate "
                                       f"to {inflating.file_size} bytes, beyond the limit of "
                                       f"{MAX_INFLATED_BYTES} for compressed members "
                                       "(a zip bomb?)")
        if kind == _TORCHSCRIPT:
            return _read_torchscript(torch, path, limits)
    elif not _is_legacy(head):
        raise ModelReadError(path, "not a PyTorch file (neither a torch.save archive nor "
                                   "a legacy torch.save pickle)")
    return _load(torch, path, limits, mmap=head.startswith(_ZIP_MAGIC))


def _load(torch, path: Path, limits, mmap: bool):
    if limits.allow_unsafe_pickle:
        return _torch_load(torch, path, mmap, weights_only=False)
    try:
        return _torch_load(torch, path, mmap, weights_only=True)
    except pickle.UnpicklingError as refused:
        # It names a class outside torch's allow-list (a checkpoint's training arguments,
        # numpy metadata, a pickled module): read it again with inert stand-ins for those.
        try:
            return _torch_load(torch, path, mmap, weights_only=False,
                               pickle_module=torch_pickle)
        except (pickle.UnpicklingError, ModelReadError):
            raise ModelReadError(path, _refusal(str(refused))) from None


def _torch_load(torch, path: Path, mmap: bool, **options):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(os.fspath(path), map_location="cpu", mmap=mmap, **options)
    except pickle.UnpicklingError as error:
        if options.get("weights_only"):
            raise
        raise ModelReadError(path, f"cannot unpickle ({_first_line(error)})") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ...; code may raise any
        raise ModelReadError(path, f"not a readable PyTorch file "
                                   f"({type(error).__name__}: {_first_line(error)})") from None


def _refusal(message: str) -> str:
    """One line from torch's weights-only error, naming the global the file wanted."""
    match = _GLOBAL.search(message)
    if match:
        name = match.group(1)
        name = name if "." in name else f"builtins.{name}"  # torch drops "builtins."
        if not _may_exist(name):  # cut inside a GLOBAL opcode: no question of trust
            return f"damaged or truncated pickle (it names {name}, which does not exist)"
        return (f"refuses to unpickle {name} (the file needs arbitrary code to load, even "
                "with stand-ins for its classes); pass --allow-unsafe-pickle only if you "
                "trust it")
    detail = message.split("WeightsUnpickler error:", 1)[-1]
    reason = next((line.strip() for line in detail.splitlines() if line.strip()), "")
    return (f"the weights-only unpickler cannot read it ({reason}); "
            "pass --allow-unsafe-pickle only if you trust it")


def _may_exist(name: str) -> bool:
    """False for a global that cannot exist: not a dotted name, or an attribute missing
    from a module already imported (no module is imported to find out)."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", name):
        return False
    module, _, attribute = name.rpartition(".")
    if module in ("__main__", "__mp_main__"):  # the script that saved it, not this one
        return True
    loaded = sys.modules.get(module)
    return loaded is None or hasattr(loaded, attribute)


# state dicts and checkpoints ---------------------------------------------------------


def _record_from_object(torch, obj, path: Path, limits) -> ModelRecord:
    found = _find_tensors(torch, obj)
    if found is None:
        what = (f"stand-in for {obj.global_name}, which was not run"
                if isinstance(obj, torch_pickle.Opaque)
                else type(obj).__name__)
        raise ModelReadError(path, f"holds no tensors (a {what}, with no mapping of tensors "
                                   f"at the top or under {', '.join(NESTED_KEYS)})")
    producer = ""
    if isinstance(obj, Mapping) and "pytorch-lightning_version" in obj:
        producer = f"pytorch-lightning {obj['pytorch-lightning_version']}"
    if isinstance(found, torch.nn.Module):  # only with allow_unsafe_pickle
        from .arrays import from_module

        try:
            record = from_module(found, name=path.stem)
        except FilterDBError as error:  # a lazy conv that was never run
            raise ModelReadError(path, str(error)) from None
        record.path, record.framework, record.producer = os.fspath(path), "pytorch", producer
        return record
    tensors, attributes = found if isinstance(found, tuple) else (found, {})
    layers = state_dict_layers(torch, tensors, path, limits, attributes)
    return ModelRecord(name=path.stem, path=os.fspath(path), framework="pytorch",
                       producer=producer, total_depth=len(layers), layers=layers)


def _find_tensors(torch, obj, level: int = 0):
    """The module or mapping of tensors that holds the model's weights, or None; for a
    pickled module read with stand-ins, its tensors and conv attributes (a pair)."""
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, torch_pickle.Opaque):
        module = torch_pickle.module_tensors(obj, lambda value: isinstance(value, torch.Tensor))
        if module is not None:
            return module if module[0] else None
    if not isinstance(obj, Mapping):
        return None
    if level < 2:
        for key in NESTED_KEYS:
            if key in obj:
                found = _find_tensors(torch, obj[key], level + 1)
                if found is not None:
                    return found
    if any(isinstance(value, torch.Tensor) for value in obj.values()):
        return obj
    if level == 0:
        return _several_networks(torch, obj)
    return None


#: Checkpoint entries that are training state, not networks (their tensors are moments
#: and buffers of the same shapes as the weights).
_TRAINING_STATE = re.compile(r"optim|sched|scaler|^amp$", re.IGNORECASE)


def _several_networks(torch, obj: Mapping) -> dict | None:
    """A checkpoint of several networks under names of its own (a GAN's
    ``{"generator": ..., "discriminator": ...}``): their tensors as one mapping, each
    name under its network's key; optimizer and scheduler states left out."""
    if not isinstance(obj, dict) or isinstance(obj, torch_pickle.Opaque):
        return None  # a stand-in's attributes are no networks
    combined, attributes = {}, {}
    for key, value in obj.items():
        if (not isinstance(value, dict) or "param_groups" in value
                or _TRAINING_STATE.search(str(key)) or _ema_copy(str(key), obj)):
            continue
        found = _find_tensors(torch, value, 1)
        if isinstance(found, tuple):  # a pickled module's tensors and conv attributes
            found, conv_attributes = found
            attributes.update({f"{key}.{name}": a for name, a in conv_attributes.items()})
        if isinstance(found, Mapping):
            combined.update({f"{key}.{name}": tensor for name, tensor in found.items()})
    if not combined:
        return None
    return (combined, attributes) if attributes else combined


def _ema_copy(key: str, obj: Mapping) -> bool:
    """Whether ``key`` names the EMA copy of another entry of ``obj`` (``g_ema`` of ``g``,
    ``ema_netG`` of ``netG``): the same network again, averaged."""
    match = re.fullmatch(r"(?i)(.+?)[_.]?ema|ema[_.]?(.+)", key)
    return match is not None and (match.group(1) or match.group(2)) in obj


def state_dict_layers(torch, state: Mapping, path, limits,
                      attributes: Mapping | None = None) -> list[ConvLayer]:
    """Conv layers of a mapping of tensors, in its order, with approximate depths.

    ``attributes``: groups, stride, dilation and transposed of the conv modules of a
    pickled module, by weight name (:func:`torch_pickle.module_tensors`).
    """
    items = [(str(k), v) for k, v in state.items() if isinstance(v, torch.Tensor)]
    copies = statedict.ema_copies({k: tuple(v.shape) for k, v in items})
    items = _fold_reparametrised(torch, [(k, v) for k, v in items if k not in copies], path)
    names = statedict.strip_prefixes([k for k, _ in items])
    shapes = {name: tuple(tensor.shape) for name, (_, tensor) in zip(names, items, strict=True)}
    others = statedict.not_conv_weights(shapes)
    layers, inferred = [], []
    seen = set()  # one conv under two names (``m.a = m.b = conv``): its first name counts
    for name, (key, tensor) in zip(names, items, strict=True):
        if tensor.dim() != 4 or not statedict.is_module_weight(name) or name in others:
            continue
        same = _tensor_key(tensor)
        if same is not None and same in seen:
            continue
        seen.add(same)
        converted = _weight_array(torch, tensor, name, path, limits)
        if converted is None:
            continue
        weight, source_dtype, quantized = converted
        layer = ConvLayer(
            name=_layer_name(name), op_type=QUANTIZED_CONV if quantized else CONV,
            weight=weight, c_out=int(weight.shape[0]), c_in_per_group=int(weight.shape[1]),
            source_dtype=source_dtype, depth=len(layers), order=len(layers),
            depth_is_approximate=True)
        known = (attributes or {}).get(key)
        _apply_conv_attributes(layer, known)
        layers.append(layer)
        if known is None:
            inferred.append(layer)
    statedict.infer_conv_attributes(inferred, {
        _layer_name(name): shape for name, shape in shapes.items()
        if len(shape) in (2, 4) and statedict.is_module_weight(name) and name not in others})
    return layers


def _tensor_key(tensor) -> tuple | None:
    """What the names of one tensor share (its storage, offset, shape, strides and
    dtype), or None where it has no storage to tell (meta, some quantized tensors)."""
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    if tensor.is_meta or pointer == 0:
        return None
    return (pointer, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()),
            tensor.dtype)


def _fold_reparametrised(torch, items: list[tuple[str, object]], path
                         ) -> list[tuple[str, object]]:
    """``(name, tensor)`` with the parts of each weight-normalised, spectrally
    normalised or pruned weight (:mod:`.reparam`) replaced, at the first part's place, by the
    ``<module>.weight`` they stand for, in the first part's dtype."""
    found = reparam.find(name for name, _ in items)
    statedict.refuse_unfoldable(path, {name: t.dim() for name, t in items}, found)
    if not found:
        return items
    tensors, parts = dict(items), reparam.parts_of(found)
    folded = []
    for name, tensor in items:
        item = found.get(name)
        sources = [tensors[part] for part in item.parts] if item else []
        if item and all(t.is_floating_point() and t.layout == torch.strided
                        and not t.is_meta for t in sources):
            try:
                weight = reparam.fold(item, [t.detach().cpu().double().numpy()
                                             for t in sources])
            except ValueError as error:
                raise ModelReadError(path, str(error)) from None
            folded.append((item.name, torch.from_numpy(weight).to(tensor.dtype)))
        elif name not in parts:
            folded.append((name, tensor))
    return folded


def _apply_conv_attributes(layer: ConvLayer, attributes: Mapping | None) -> None:
    """Groups, strides, dilations and direction of a pickled conv module, where they are
    what ``nn.Conv2d`` stores (ints, pairs of ints, a bool) and fit the weight."""
    if attributes is None:
        return
    groups, transposed = attributes["groups"], attributes["transposed"]
    strides, dilations = (tuple(attributes[key]) if isinstance(attributes[key], tuple | list)
                          else () for key in ("stride", "dilation"))
    if not (type(groups) is int and groups > 0 and type(transposed) is bool
            and len(strides) == len(dilations) == 2
            and all(type(v) is int for v in strides + dilations)):
        return
    rows, columns = layer.weight.shape[:2]
    if transposed:
        if rows % groups:
            return
        layer.c_out, layer.c_in_per_group = columns * groups, rows // groups
        if layer.op_type == CONV:
            layer.op_type = CONV_TRANSPOSE
    elif groups > 1 and rows % groups:
        return
    layer.groups, layer.strides, layer.dilations = groups, strides, dilations


def _weight_array(torch, tensor, name: str, path, limits):
    """(float32 array, source dtype name, quantized) or None for a non-float tensor."""
    if tensor.numel() > limits.max_tensor_elements:
        raise ModelReadError(path, f"tensor {name!r} of shape {tuple(tensor.shape)} is "
                                   "beyond the element limit")
    quantized = bool(tensor.is_quantized)
    if not quantized and (not tensor.is_floating_point() or tensor.layout != torch.strided
                          or tensor.is_meta):
        return None
    source_dtype = str(tensor.dtype).removeprefix("torch.")
    try:
        values = tensor.detach()
        values = values.dequantize() if quantized else values
        values = values.to(device="cpu", dtype=torch.float32).contiguous()
        weight = np.array(values.numpy(), dtype=np.float32, copy=True)
    except (RuntimeError, TypeError) as error:
        raise ModelReadError(path, f"tensor {name!r}: {_first_line(error)}") from None
    return weight, source_dtype, quantized


def _layer_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight") if weight_name != "weight" else weight_name


def cannot_run(path: Path) -> str:
    """Why this file cannot be run: a state dict or checkpoint has no graph to run.

    Raises
    ------
    MissingDependencyError
        For a TorchScript archive when torch is not installed.
    """
    try:
        kind = _archive_kind(path) if read_head(path).startswith(_ZIP_MAGIC) else None
    except Exception:  # BadZipFile, OSError, ...: the read has said why
        kind = None
    if kind != _TORCHSCRIPT:
        return "a PyTorch state dict or checkpoint holds weights only, no graph to run"
    require_runtime("torch", path, "torch")
    return ""


def run(path: Path, input_shapes, seed: int):
    """Run a TorchScript archive once (in a verification run's child process)."""
    from .torch_run import run as run_torchscript

    return run_torchscript(path, input_shapes, seed)


# TorchScript -------------------------------------------------------------------------


class _Unmapped(Exception):
    """The graph's conv nodes cannot all be tied to parameters."""


def _read_torchscript(torch, path: Path, limits) -> ModelRecord:
    try:
        module = load_script(torch, path)
    except Exception as error:  # torch raises RuntimeError, ValueError, ...
        raise ModelReadError(path, f"not a readable TorchScript archive "
                                   f"({_first_line(error)})") from None
    record = from_script_module(module, path.stem, path, limits)
    record.path = os.fspath(path)
    return record


#: Namespaces of TorchScript operators that an installed package registers when imported.
OPERATOR_PACKAGES = {"torchvision": "torchvision", "torchaudio": "torchaudio"}
_UNKNOWN_OPERATOR = re.compile(r"Unknown builtin op: (\w+)::(\w+)")


def load_script(torch, path: Path):
    """``torch.jit.load`` of an archive; an archive that calls operators of a package
    that registers them (``torchvision::nms`` in a scripted detection model) loads after
    that package is imported, or fails saying which package it needs."""
    try:
        return _jit_load(torch, path)
    except RuntimeError as error:
        unknown = _UNKNOWN_OPERATOR.search(str(error))
        package = OPERATOR_PACKAGES.get(unknown.group(1)) if unknown else None
        if package is None or package in sys.modules:
            raise
    try:
        importlib.import_module(package)
    except ImportError:
        raise RuntimeError(f"it calls the operator {unknown.group(1)}::{unknown.group(2)}, "
                           f"which the package {package!r} registers; pip install "
                           f"{package}") from None
    return _jit_load(torch, path)


def _jit_load(torch, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(os.fspath(path), map_location="cpu")


def from_script_module(module, name: str, path=None, limits=None) -> ModelRecord:
    """Conv layers of a loaded TorchScript module, with depths from its inlined graph.

    Falls back to parameter order (approximate depths) when a conv node's weight cannot
    be traced to a parameter, or when the graph has no conv node the reader knows.
    """
    import torch

    from . import Limits

    limits = limits or Limits()
    where = path if path is not None else name
    try:
        graph = module.inlined_graph
        layers, operator_counts, depth = _graph_layers(torch, module, graph, where, limits)
    except (_Unmapped, GraphCycleError, RuntimeError, AttributeError):
        layers, operator_counts, depth = [], {}, 0
    if not layers:  # no conv node found (e.g. quantized ops): the parameters, in order
        layers = state_dict_layers(torch, module.state_dict(), where, limits)
        depth = len(layers) if layers else depth
    return ModelRecord(name=name, path="", framework="torchscript",
                       operator_counts=operator_counts, total_depth=depth, layers=layers)


def _value_id(value) -> str:
    return f"%{value.unique()}"


def _flatten(block, entries: list, versions: dict | None = None,
             dicts: _DictValues | None = None, attribute=None, nested: bool = False) -> None:
    """Append (Node, jit node or None) for every node of ``block``, blocks included.

    A node with blocks becomes two nodes: one that produces the blocks' parameters
    and a token, and one (``#end``) that reads the blocks' results and the token and
    produces the node's outputs.

    A node that writes to an input (``aten::append`` on a list, an in-place op: an
    argument marked ``(a!)`` in its schema) also produces a new version of that value,
    which the nodes after it read: in DenseNet's ``features.append(conv(...))`` then
    ``torch.cat(features)``, the concatenation then comes after the conv. A dict read
    by a constant key reads the values stored under that key (:class:`_DictValues`),
    not every later write (torchvision's ``IntermediateLayerGetter`` stores each
    stage's features in one dict, under names from a dict attribute, which its FPN
    reads by name; ``attribute``: value -> the module attribute its ``prim::GetAttr``
    steps reach). A conv node's edges are its data, weight and bias, as an ONNX Conv's.
    """
    versions = {} if versions is None else versions
    dicts = _DictValues() if dicts is None else dicts
    for jit_node in block.nodes():
        kind = jit_node.kind()
        name = f"{kind}#{len(entries)}"
        values = [_value_id(v) for v in jit_node.inputs()]
        inputs = [versions.get(v, v) for v in values]
        key = _dict_key(jit_node, attribute)
        written = _written_inputs(jit_node)
        if key is not None and kind == "aten::__getitem__" \
                and (found := dicts.read(values[0], key)):
            inputs = [versions.get(v, v) for v in found]  # what is stored under the key
        elif key is not None and kind == "aten::_set_item":
            dicts.write(values[0], key, values[2], nested)
        elif kind == "prim::DictConstruct":
            items = list(jit_node.inputs())
            for at in range(0, len(items) - 1, 2):
                constant = _constant(items[at], None)
                if isinstance(constant, str | int):
                    dicts.write(_value_id(jit_node.output()), constant, values[at + 1], False)
        else:  # any other write to a dict (update, pop, a key computed at run time)
            for position in written:
                if position < len(values):
                    dicts.forget(values[position])
        if kind in _CONV_NODES or kind in _QUANTIZED_CONV_NODES:
            # the data, weight (bias): not the hyperparameters, which a scripted
            # ConvTranspose computes from the input's shape (output_padding)
            inputs = inputs[:3 if kind in _CONV_NODES else 2]
        outputs = [_value_id(v) for v in jit_node.outputs()]
        for position in written:
            if position < len(values):
                versions[values[position]] = f"{values[position]}@{len(entries)}"
                outputs.append(versions[values[position]])
        blocks = list(jit_node.blocks())
        if not blocks:
            entries.append((Node(name, inputs, outputs), jit_node))
            continue
        token = f"{name}#token"
        params = [_value_id(v) for b in blocks for v in b.inputs()]
        entries.append((Node(name, inputs, [*params, token]), jit_node))
        for sub in blocks:
            _flatten(sub, entries, versions, dicts, attribute, nested=True)
        results = [versions.get(_value_id(v), _value_id(v)) for b in blocks
                   for v in b.outputs()]
        entries.append((Node(f"{name}#end", [*results, token], outputs), None))


class _DictValues:
    """The values stored in dicts under constant keys, as :func:`_flatten` meets them.

    A read by such a key reads the values stored there (each at its latest version, so
    an in-place change after storing counts). A write inside a block (an ``if``
    branch, a loop body) may not run, so it adds to the values stored before; any other
    write to a dict (``update``, ``pop``, a key computed at run time) forgets what it
    knew of that dict, whose reads then come after every write, as before.
    """

    def __init__(self):
        self.stored: dict[str, dict] = {}  # dict value -> key -> values

    def read(self, dict_value: str, key) -> list[str]:
        return self.stored.get(dict_value, {}).get(key, [])

    def write(self, dict_value: str, key, value: str, nested: bool) -> None:
        keys = self.stored.setdefault(dict_value, {})
        keys[key] = [*keys.get(key, []), value] if nested else [value]

    def forget(self, dict_value: str) -> None:
        self.stored.pop(dict_value, None)


def _dict_key(jit_node, attribute=None):
    """The constant key of a dict read or write (``aten::__getitem__``,
    ``aten::_set_item`` on a Dict), else None; a key looked up by a constant in a dict
    attribute of the module (``self.return_layers[name]``) is constant too."""
    if jit_node.kind() not in ("aten::__getitem__", "aten::_set_item"):
        return None
    inputs = list(jit_node.inputs())
    if len(inputs) < 2 or inputs[0].type().kind() != "DictType":
        return None
    key = _constant(inputs[1], None)
    producer = inputs[1].node()
    if key is None and attribute is not None and producer.kind() == "aten::__getitem__":
        container, index = list(producer.inputs())[:2]
        try:
            mapping = attribute(container) if container.node().kind() == "prim::GetAttr" \
                else None
        except _Unmapped:
            mapping = None
        index = _constant(index, None)
        if isinstance(mapping, dict) and isinstance(index, str | int):
            key = mapping.get(index)
    return key if isinstance(key, str | int) else None


@cache
def _written_positions(schema: str) -> tuple[int, ...]:
    """Positions of the arguments a schema marks as written (``(a!)``)."""
    import torch

    try:
        arguments = torch._C.parse_schema(schema).arguments
    except RuntimeError:  # "(no schema)" of prim ops
        return ()
    return tuple(i for i, argument in enumerate(arguments)
                 if argument.alias_info is not None and argument.alias_info.is_write)


def _written_inputs(jit_node) -> tuple[int, ...]:
    try:
        schema = jit_node.schema()
    except RuntimeError:
        return ()
    return _written_positions(schema) if "!" in schema else ()


def _graph_layers(torch, module, graph, where, limits):
    graph_inputs = list(graph.inputs())
    self_value = graph_inputs[0] if graph_inputs and \
        graph_inputs[0].type().kind() == "ClassType" else None
    real_inputs = [_value_id(v) for v in graph_inputs if v is not self_value]
    # value -> the module attribute its prim::GetAttr steps reach (``self.channels``)
    attribute = None if self_value is None else \
        (lambda value: _attribute(module, _attribute_path(value, self_value)))
    entries: list = []
    _flatten(graph, entries, attribute=attribute)
    kinds = Counter(jit_node.kind() for _, jit_node in entries if jit_node is not None)
    if kinds.get("prim::CallMethod") or kinds.get("prim::CallFunction"):
        raise _Unmapped("calls that inlining left in place may hide conv layers")
    depths = node_depths([node for node, _ in entries], real_inputs)

    layers: dict[str, ConvLayer] = {}
    names: dict[tuple, str] = {}  # a submodule under two attributes: one tensor, 2 paths
    for index, (_, jit_node) in enumerate(entries):
        if jit_node is None:
            continue
        if jit_node.kind() in _CONV_NODES:
            conv = _aten_conv(torch, module, jit_node, self_value, attribute)
        elif jit_node.kind() in _QUANTIZED_CONV_NODES:
            conv = _quantized_conv(torch, module, jit_node, self_value)
        else:
            continue
        qualified, tensor, transposed, groups, strides, dilations = conv
        depth = depths[index] if depths[index] is not None else 0
        # a parameter's storage identifies it; an unpacked quantized weight is a
        # temporary whose memory a later one may reuse
        same = _tensor_key(tensor) if jit_node.kind() in _CONV_NODES else None
        qualified = names.setdefault(same, qualified) if same is not None else qualified
        if qualified in layers:  # one weight, several calls: the first (shallowest) counts
            layers[qualified].depth = min(layers[qualified].depth, depth)
            continue
        if tensor.dim() != 4:
            continue
        converted = _weight_array(torch, tensor, qualified, where, limits)
        if converted is None:
            continue
        weight, source_dtype, quantized = converted
        if transposed:
            kind = CONV_TRANSPOSE
            c_out, c_in_per_group = weight.shape[1] * groups, weight.shape[0] // groups
        else:
            kind = QUANTIZED_CONV if quantized else CONV
            c_out, c_in_per_group = weight.shape[0], weight.shape[1]
        name = (f"conv{len(layers)}" if qualified.startswith(_FROZEN)
                else _layer_name(qualified))
        layers[qualified] = ConvLayer(
            name=name, op_type=kind, weight=weight, c_out=int(c_out),
            c_in_per_group=int(c_in_per_group), groups=groups, strides=_pair(strides),
            dilations=_pair(dilations), source_dtype=source_dtype, depth=depth, order=index)
    return list(layers.values()), dict(kinds), total_depth(depths)


def _aten_conv(torch, module, jit_node, self_value, attribute=None):
    """(weight name, weight, transposed, groups, strides, dilations) of an aten conv node;
    ``attribute`` (see :func:`_constant`) reads arguments given by module attributes
    (``groups=self.channels``)."""
    qualified, tensor = _weight_source(module, jit_node.inputsAt(1), self_value)
    if not isinstance(tensor, torch.Tensor):
        raise _Unmapped(f"{qualified} is not a tensor")
    transposed_at, groups_at, dilation_at = _CONV_NODES[jit_node.kind()]
    transposed = (transposed_at if isinstance(transposed_at, bool)
                  else bool(_constant(jit_node.inputsAt(transposed_at), False, attribute)))
    groups = int(_constant(jit_node.inputsAt(groups_at), 1, attribute) or 1)
    return (qualified, tensor, transposed, groups,
            _constant(jit_node.inputsAt(3), None, attribute),
            _constant(jit_node.inputsAt(dilation_at), None, attribute))


def _quantized_conv(torch, module, jit_node, self_value):
    """The same for a ``quantized::conv*2d`` node, from its packed parameters."""
    qualified, packed = _weight_source(module, jit_node.inputsAt(1), self_value)
    try:
        tensor = packed.unpack()[0]
        transposed, groups = bool(packed.transpose()), int(packed.groups())
        strides, dilations = list(packed.stride()), list(packed.dilation())
    except (AttributeError, RuntimeError, TypeError, IndexError):
        raise _Unmapped(f"{qualified} holds no packed conv parameters") from None
    if not isinstance(tensor, torch.Tensor):
        raise _Unmapped(f"{qualified} holds no weight tensor")
    qualified = qualified.removesuffix("._packed_params") + ".weight"
    return qualified, tensor, transposed, groups, strides, dilations


#: Key prefix of a conv weight that is a constant of the graph (a frozen module).
_FROZEN = "%frozen:"


def _weight_source(module, value, self_value) -> tuple[str, object]:
    """``(key, object)`` of a conv node's weight argument: a parameter that
    ``prim::GetAttr`` steps reach from ``self`` (key: its qualified name), or a constant
    of the graph, as ``torch.jit.freeze`` leaves them (key: :data:`_FROZEN` and the
    value's name; the layer is named by its place among the convs)."""
    if value.node().kind() == "prim::Constant":
        return f"{_FROZEN}{value.debugName()}", value.toIValue()
    qualified = _attribute_path(value, self_value)
    return qualified, _attribute(module, qualified)


def _attribute_path(value, self_value) -> str:
    """``a.b.weight`` for a value reached by prim::GetAttr steps from ``self``."""
    parts = []
    while value is not self_value:
        node = value.node()
        if node.kind() != "prim::GetAttr" or len(parts) > 256:
            raise _Unmapped(f"a conv weight comes from {node.kind()}")
        parts.append(node.s("name"))
        value = node.inputsAt(0)
    if not parts:
        raise _Unmapped("a conv weight is the module itself")
    return ".".join(reversed(parts))


def _attribute(module, qualified: str):
    obj = module
    try:
        for part in qualified.split("."):
            obj = getattr(obj, part)
    except (AttributeError, RuntimeError):
        raise _Unmapped(f"no attribute {qualified}") from None
    return obj


def _constant(value, default, attribute=None):
    """The value of a constant or a list of constants, else ``default``; with
    ``attribute`` (value -> the module attribute its ``prim::GetAttr`` steps reach),
    int, bool and int-list or int-tuple attributes of the module (and the elements of
    such a tuple) count as constants."""
    node = value.node()
    if node.kind() == "prim::Constant":
        result = value.toIValue()
        return default if result is None else result
    if node.kind() == "prim::ListConstruct":
        items = [_constant(v, None, attribute) for v in node.inputs()]
        return default if any(i is None for i in items) else items
    if node.kind() == "prim::GetAttr" and attribute is not None:
        try:
            result = attribute(value)
        except _Unmapped:
            return default
        if isinstance(result, int) or (isinstance(result, list | tuple)
                                       and all(type(v) is int for v in result)):
            return list(result) if isinstance(result, tuple) else result
    if node.kind() == "prim::TupleUnpack" and attribute is not None:
        # an element of a tuple attribute (``stride=self.stride``, a pair)
        whole = _constant(node.input(), None, attribute)
        at = [output.unique() for output in node.outputs()].index(value.unique())
        if isinstance(whole, list) and at < len(whole):
            return whole[at]
    return default


def _pair(values) -> tuple[int, ...]:
    if values is None:
        return (1, 1)
    values = [int(v) for v in values]
    return tuple(values * 2) if len(values) == 1 else tuple(values)


def _first_line(error: BaseException) -> str:
    text = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return text[0] if text else type(error).__name__
