"""Conventions of state dicts that the PyTorch and safetensors readers share: prefixes
left out of layer names, EMA copies kept beside the weights, and parametrized weights
that cannot be computed.

A prefix that every tensor name carries (``module.`` of DataParallel, ``model.`` of
Lightning, ``_orig_mod.`` of ``torch.compile``, ``net.``, ``network.``) is left out of
the layer names, so that they read like module names (``layer1.0.conv1``) in either
format.

Training code often saves an exponential moving average of the weights in the same
state dict, under a prefix (timm's ``model_ema.module.``, latent diffusion's LitEma
``model_ema.`` with the dots of the names removed, mmcv's EMAHook buffers
``ema_<name with _ for .>``). Such a copy is the network again: the readers read the
main weights, as they do for a checkpoint's ``ema`` entry (see :func:`ema_copies` for
when tensors under such a prefix are a copy).

``torch.nn.utils.parametrize`` stores the tensors a weight is computed from, not the
weight. :mod:`.reparam` folds weight norm and spectral norm; any other parametrization
(``orthogonal``, a custom one, or one chained after those) stores neither the function
nor the weight, so the weight cannot be known: :func:`refuse_unfoldable` refuses the
model rather than leave the conv out or read a wrong weight.

A state dict has no graph and no layer types, so which 4-D ``weight`` is a conv's, its
groups and its direction are read from names and neighbours, the same way for either
format (:func:`not_conv_weights`, :func:`infer_conv_attributes`), so that one network
gives the same layer records from either file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ModelReadError
from ..records import CONV, CONV_TRANSPOSE, ConvLayer
from . import reparam

#: Name prefixes removed when every tensor name carries them.
STRIPPED_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "network.")
#: Prefixes of EMA copies, longest first.
EMA_PREFIXES = ("model_ema.module.", "ema.module.", "model_ema.", "ema_model.", "ema.",
                "ema_")
#: Words of a conv module's name that say it is transposed (``deconv1``,
#: ``conv_transpose``, ``deconv_layers.0``) or depthwise (``conv_dw``, ``dwconv``).
_TRANSPOSED_NAME = re.compile(r"transpose|deconv", re.IGNORECASE)
_DEPTHWISE_WORDS = {"dw", "dwconv", "convdw", "depthwise"}
#: Words of an input conv's name (``conv_in``, ``stem``, ``conv_first``).
_INPUT_WORDS = {"in", "stem", "first", "input"}
_PARAMETRIZED = re.compile(r"(?P<module>(?:.*\.)?)parametrizations\.weight\.[^.].*")


def strip_prefixes(names: list[str]) -> list[str]:
    """Remove prefixes every name shares, repeatedly (``module.model.x`` -> ``x``)."""
    while names:
        prefix = next((p for p in STRIPPED_PREFIXES
                       if all(n.startswith(p) and len(n) > len(p) for n in names)), None)
        if prefix is None:
            break
        names = [n[len(prefix):] for n in names]
    return names


def _bare(name: str) -> str:
    return name.replace(".", "").replace("_", "")


def _ema_prefix(name: str) -> str | None:
    return next((p for p in EMA_PREFIXES if name.startswith(p) and len(name) > len(p)), None)


def ema_copies(shapes: Mapping[str, tuple]) -> set[str]:
    """The names of ``shapes`` (tensor name -> shape) that are EMA copies of others.

    The tensors under one EMA prefix are a copy when each of them (but scalars, such as
    LitEma's ``decay``) has a main tensor of its shape and name, and together they
    mirror every main weight: a module that is merely named ``ema`` (an attention
    block) is no copy of the network.

    Examples
    --------
    >>> sorted(ema_copies({"conv1.weight": (8, 3, 3, 3), "ema_conv1_weight": (8, 3, 3, 3),
    ...                    "ema_head": ()}))
    ['ema_conv1_weight', 'ema_head']
    """
    main = {name: tuple(shape) for name, shape in shapes.items() if _ema_prefix(name) is None}
    known: dict[tuple[str, tuple], str] = {}
    for name, shape in main.items():
        parts = name.split(".")  # also without the main weights' own first component
        for key in (name, ".".join(parts[1:])):
            if key:
                known.setdefault((_bare(key), shape), name)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        prefix = _ema_prefix(name)
        if prefix is not None:
            groups.setdefault(prefix, []).append(name)
    weights = {name for name, shape in main.items() if name.endswith("weight") and shape}
    copies: set[str] = set()
    for prefix, names in groups.items():
        arrays = [n for n in names if len(shapes[n]) > 0]
        mirrored = {known.get((_bare(n[len(prefix):]), tuple(shapes[n]))) for n in arrays}
        if arrays and None not in mirrored and weights <= mirrored:
            copies.update(names)
    return copies


def refuse_unfoldable(path, ranks: Mapping[str, int],
                      found: Mapping[str, reparam.Reparametrised]) -> None:
    """Refuse a model with a conv weight that :func:`reparam.fold` cannot compute: a
    weight under ``parametrizations.weight.`` with a stored part of 4 dimensions that no
    fold uses (``ranks``: tensor name -> number of dimensions)."""
    used = reparam.parts_of(found)
    left: dict[str, list[str]] = {}
    for name in ranks:
        match = _PARAMETRIZED.fullmatch(name)
        if match is not None and name not in used:
            left.setdefault(match["module"] + "weight", []).append(name)
    for weight, stored in left.items():
        module = weight.removesuffix("weight") + "parametrizations.weight."
        if any(rank == 4 for name, rank in ranks.items() if name.startswith(module)):
            raise ModelReadError(path, (
                f"the conv weight {weight!r} is computed by a parametrization "
                f"(torch.nn.utils.parametrize) that the file does not store, from "
                f"{', '.join(stored)}; save the model after "
                "torch.nn.utils.parametrize.remove_parametrizations, or as TorchScript"))


def is_module_weight(name: str) -> bool:
    """Whether a tensor is a module's ``weight`` (``layer1.0.conv1.weight``); a buffer of
    another name (``blur_weight``, BlurPool's ``filt``) is no conv layer in a state dict,
    whatever a graph does with it."""
    return name == "weight" or name.endswith(".weight")


def not_conv_weights(shapes: Mapping[str, tuple]) -> set[str]:
    """The 4-D ``weight`` tensors of ``shapes`` (name -> shape) that are not a conv's: a
    conv's bias is a vector, so a module whose ``bias`` has other dimensions is something
    else (ConvNeXt V2's GRN stores ``weight`` and ``bias`` as (1, 1, 1, C))."""
    return {name for name, shape in shapes.items()
            if len(shape) == 4 and is_module_weight(name)
            and len(shapes.get(name.removesuffix("weight") + "bias", (0,))) != 1}


def infer_conv_attributes(layers: list[ConvLayer], shapes: Mapping[str, tuple]) -> None:
    """Direction and groups of conv layers read without a graph, in place.

    ``layers``: plain conv layers named by module (``layer1.0.conv1``) with weights in
    ONNX layout; layers already marked transposed or grouped are kept. ``shapes``: module
    name -> shape of every 2-D (Linear, (out, in)) and 4-D (conv, ONNX layout) weight.

    * **Transposed**: the module's own name (for a numbered module in a container, the
      container's name) says so, e.g. ``deconv1``, ``up.conv_transpose``,
      ``deconv_layers.3``; the stored weight is then (c_in, c_out / groups, kh, kw).
    * **Depthwise** (``groups = c_out``): a (c, 1, kh, kw) weight with a kernel larger than
      1x1, c > 1, whose name or its container's says so (``conv_dw``, ``dwconv``,
      ``dw_mid.conv``, ``depthwise``), or next to a weight made for c channels (a 1x1
      conv with c outputs or c inputs, a Linear with c inputs: MobileNet's expand and
      project convs, ConvNeXt's ``pwconv1``), or one of two or more such weights in the
      network unless named as an input conv (``conv_in``, ``stem``, ``first``): a lone
      one is a 1-channel input conv (``conv_in`` of a grayscale VAE) and stays plain.
    * **Grouped** (``groups = C / c_in_per_group``): a (c_out, c_in_per_group, kh, kw)
      weight, kernel larger than 1x1, after a 1x1 conv with C > c_in_per_group outputs,
      a multiple of them, and before a 1x1 conv or Linear with c_out inputs or a conv of
      its own shape (ResNeXt's and RegNet's bottlenecks: ``conv1``, ``conv2``,
      ``conv3``; NFNet's ``conv2``, ``conv2b``, which takes the groups of the conv
      before it), the 1x1 conv not reading c_in_per_group channels itself (SqueezeNet's
      ``expand1x1`` beside ``expand3x3`` reads what the 3x3 conv reads: they are
      parallel, not in a row). ResNet's ``conv3`` after ``conv2`` widens the block: only
      the conv before counts.

    Neighbours are the weights just before and after the layer in name order (numbers
    compared as numbers; names need not follow the data flow) within its block: the
    names that share all of its module name but the last two parts (one for a module two
    parts deep). A top-level conv has no block.

    Examples
    --------
    >>> import numpy as np
    >>> shapes = {"b.expand": (32, 8, 1, 1), "b.dw": (32, 1, 3, 3), "b.project": (8, 32, 1, 1)}
    >>> layers = [ConvLayer(name=n, op_type=CONV, weight=np.zeros(s, np.float32),
    ...                     c_out=s[0], c_in_per_group=s[1]) for n, s in shapes.items()]
    >>> infer_conv_attributes(layers, shapes)
    >>> [layer.groups for layer in layers]
    [1, 32, 1]
    """
    order = sorted(shapes, key=natural_key)
    position = {name: i for i, name in enumerate(order)}
    by_name = {layer.name: layer for layer in layers}
    single = [layer for layer in layers if _one_per_channel(layer.weight.shape)]
    for layer in sorted(layers, key=lambda item: natural_key(item.name)):
        if layer.op_type != CONV or layer.groups != 1:
            continue
        if _TRANSPOSED_NAME.search(_own_name(layer.name)):
            layer.op_type = CONV_TRANSPOSE
            layer.c_out, layer.c_in_per_group = layer.c_in_per_group, layer.c_out
            continue
        a, b, kh, kw = layer.weight.shape
        if kh * kw == 1 or layer.name not in position:
            continue
        at = position[layer.name]
        before, after = _neighbours(order, at, _block(layer.name), shapes)
        if _one_per_channel(layer.weight.shape):
            words = _words(layer.name)
            if words & _DEPTHWISE_WORDS or any(
                    _pointwise(n, out=a) or _pointwise(n, into=a) or _linear(n, into=a)
                    for n in (before, after)) or (len(single) > 1
                                                  and not words & _INPUT_WORDS):
                layer.groups = a
            continue
        previous = by_name.get(order[at - 1]) if before is not None else None
        if previous is not None and previous.groups > 1 and before == tuple(layer.weight.shape):
            layer.groups = previous.groups  # the second of a pair (NFNet's conv2b)
        elif _pointwise(before) and b < before[0] and before[0] % b == 0 \
                and a % (before[0] // b) == 0 and before[1] != b \
                and (_pointwise(after, into=a) or _linear(after, into=a)
                     or after == tuple(layer.weight.shape)):
            layer.groups = before[0] // b


def _one_per_channel(shape) -> bool:
    """A (c, 1, kh, kw) weight, c > 1, kernel larger than 1x1: depthwise, or a conv of a
    1-channel input."""
    return shape[1] == 1 and shape[0] > 1 and shape[2] * shape[3] > 1


def _words(module: str) -> set[str]:
    """The words of a module's last two name parts (``dwconv2.conv`` -> dwconv, conv)."""
    parts = [part for part in module.split(".") if not part.isdigit()][-2:]
    return {word for part in parts for word in re.split(r"[^a-z]+", part.lower()) if word}


def natural_key(name: str) -> list:
    """Sort key comparing the numbers in a name as numbers (``layer2`` before ``layer10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part]


def _own_name(module: str) -> str:
    """A module's last name part; for a numbered module, its container's name."""
    parts = module.split(".")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return parts[-1]


def _block(module: str) -> str | None:
    parts = module.split(".")
    keep = len(parts) - 2 if len(parts) > 2 else len(parts) - 1
    return ".".join(parts[:keep]) + "." if keep > 0 else None


def _neighbours(order: list[str], at: int, block: str | None, shapes: Mapping[str, tuple]
                ) -> tuple[tuple | None, tuple | None]:
    if block is None:
        return None, None
    before = order[at - 1] if at > 0 else ""
    after = order[at + 1] if at + 1 < len(order) else ""
    return (shapes[before] if before.startswith(block) else None,
            shapes[after] if after.startswith(block) else None)


def _pointwise(shape: tuple | None, out: int | None = None, into: int | None = None) -> bool:
    """A 1x1 conv weight (of ``out`` outputs, of ``into`` inputs)."""
    return (shape is not None and len(shape) == 4 and tuple(shape[2:]) == (1, 1)
            and out in (None, shape[0]) and into in (None, shape[1]))


def _linear(shape: tuple | None, into: int) -> bool:
    return shape is not None and len(shape) == 2 and shape[1] == into
