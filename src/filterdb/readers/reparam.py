"""Reparametrised conv weights in state dicts: weight norm, spectral norm, pruning.

A module under ``torch.nn.utils.weight_norm`` or ``spectral_norm`` (or their
``torch.nn.utils.parametrizations`` versions), or pruned by ``torch.nn.utils.prune``,
stores the parts its weight is computed from, not the weight:

* weight norm: a magnitude ``g`` and a direction ``v``; the weight is ``g * v / |v|``,
  the norm taken over every axis but the one ``g`` keeps (``weight_g``/``weight_v``,
  ``parametrizations.weight.original0``/``original1``);
* spectral norm: the weight ``W`` before normalisation and the power iteration's
  vectors ``u`` and ``v``; the weight is ``W / (u . W_mat v)``, ``W_mat`` being ``W``
  with the axis of ``u`` first, flattened to a matrix (``weight_orig``/``weight_u``/
  ``weight_v``, ``parametrizations.weight.original``/``parametrizations.weight.0._u``/
  ``_v``). That is the weight the module uses in evaluation, from the stored vectors;
* pruning: the weight before pruning and a mask of zeros and ones; the weight is their
  product (``weight_orig``/``weight_mask``).

:func:`find` pairs the parts by name, :func:`fold` computes the weight (in float64,
returned as float32). The readers of formats that hold state dicts (PyTorch,
safetensors) use both, so a network gives the same weights from either file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

WEIGHT_NORM, SPECTRAL_NORM, PRUNED = "weight norm", "spectral norm", "pruning"

#: Part names after a module's prefix, per kind; the first part's place in the state
#: dict is where the folded weight goes.
PARTS = (
    (SPECTRAL_NORM, ("weight_orig", "weight_u", "weight_v")),
    (SPECTRAL_NORM, ("parametrizations.weight.original", "parametrizations.weight.0._u",
                     "parametrizations.weight.0._v")),
    (WEIGHT_NORM, ("weight_v", "weight_g")),
    (WEIGHT_NORM, ("parametrizations.weight.original1", "parametrizations.weight.original0")),
    (PRUNED, ("weight_orig", "weight_mask")),
)


#: Cosine above which u lies along W_mat v: the stored vectors come from a power
#: iteration (random vectors of a few dozen dimensions stay far below).
SPECTRAL_ALIGNED = 0.9


@dataclass(frozen=True)
class Reparametrised:
    """One module's weight, stored as parts.

    ``name`` is the weight it stands for (``<module>.weight``); ``parts`` the full
    names of the stored parts, in the order of :data:`PARTS` (the direction or the
    weight before normalisation first).
    """

    kind: str
    name: str
    parts: tuple[str, ...]


def find(names: Iterable[str]) -> dict[str, Reparametrised]:
    """The reparametrised weights among ``names``, keyed by their first part's name.

    Only complete sets count; a name can belong to one set only (spectral norm's
    ``weight_v`` is not taken for weight norm's).

    Examples
    --------
    >>> found = find(["conv.weight_g", "conv.weight_v", "conv.bias"])
    >>> found["conv.weight_v"].name, found["conv.weight_v"].kind
    ('conv.weight', 'weight norm')
    """
    names = list(names)
    present, taken = set(names), set()
    found: dict[str, Reparametrised] = {}
    for kind, suffixes in PARTS:
        for name in names:
            module = name.removesuffix(suffixes[0])
            if module == name or not (module == "" or module.endswith(".")):
                continue
            parts = tuple(module + suffix for suffix in suffixes)
            if all(part in present and part not in taken for part in parts):
                found[parts[0]] = Reparametrised(kind, module + "weight", parts)
                taken.update(parts)
    return found


def parts_of(found: dict[str, Reparametrised]) -> set[str]:
    """Every part name of ``found``: tensors that are not weights of their own."""
    return {part for item in found.values() for part in item.parts}


def fold(item: Reparametrised, arrays: list[np.ndarray]) -> np.ndarray:
    """The weight ``item`` stands for, from its parts' arrays (in ``item.parts``'s
    order), computed in float64 and returned as float32.

    Raises
    ------
    ValueError
        When the parts' shapes do not fit together; the message names the weight.
    """
    values = [np.asarray(array, dtype=np.float64) for array in arrays]
    if item.kind == WEIGHT_NORM:
        direction, magnitude = values
        if magnitude.size == 1:  # dim=None: one norm over the whole tensor
            magnitude = magnitude.reshape((1,) * direction.ndim)
        if magnitude.ndim != direction.ndim or any(
                m not in (1, d) for m, d in zip(magnitude.shape, direction.shape, strict=True)):
            raise ValueError(f"{item.name}: weight norm magnitude of shape "
                             f"{magnitude.shape} does not fit direction {direction.shape}")
        kept = [axis for axis, size in enumerate(magnitude.shape) if size != 1]
        axes = tuple(axis for axis in range(direction.ndim) if axis not in kept)
        norm = np.sqrt((direction * direction).sum(axis=axes, keepdims=True))
        return (direction * (magnitude / norm)).astype(np.float32)
    if item.kind == PRUNED:
        weight, mask = values
        if weight.shape != mask.shape:
            raise ValueError(f"{item.name}: pruning mask of shape {mask.shape} does not fit "
                             f"the weight {weight.shape}")
        return (weight * mask).astype(np.float32)
    weight, u, v = values
    axes = [a for a in range(min(weight.ndim, 2)) if weight.shape[a] == u.size]
    if not axes or u.ndim != 1 or v.ndim != 1 or v.size * u.size != weight.size:
        raise ValueError(f"{item.name}: spectral norm vectors of shapes {u.shape} and "
                         f"{v.shape} do not fit the weight {weight.shape}")
    # u's axis is the output channels: 0 for a conv, 1 for a transposed conv. Where both
    # have its length, it is the one whose W_mat v lies along u (a power iteration step
    # left u = W_mat v / |W_mat v|; training since then moves W a little). Before any
    # step u and v are random, neither lies along it, and the conv, by far the more
    # common, is taken.
    products = [np.moveaxis(weight, axis, 0).reshape(u.size, -1) @ v for axis in axes]
    alignment = [abs(u @ p) / (np.linalg.norm(p) or 1.0) for p in products]
    best = int(np.argmax(alignment))
    sigma = float(u @ products[best if alignment[best] > SPECTRAL_ALIGNED else 0])
    return (weight / sigma).astype(np.float32)
