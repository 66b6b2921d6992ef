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
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ModelReadError
from . import reparam

#: Name prefixes removed when every tensor name carries them.
STRIPPED_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "network.")
#: Prefixes of EMA copies, longest first.
EMA_PREFIXES = ("model_ema.module.", "ema.module.", "model_ema.", "ema_model.", "ema.",
                "ema_")
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
