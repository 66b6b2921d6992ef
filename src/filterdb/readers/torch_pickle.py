"""Unpickle a ``torch.save`` file without running any of its code.

torch's weights-only unpickler refuses a whole file as soon as it names one class
outside its allow-list, and training checkpoints name many: the ``argparse.Namespace``
of a training script, a Lightning ``AttributeDict``, numpy scalars and arrays in the
metadata, or a whole pickled ``nn.Module``. This unpickler gives the file the real
objects only for the globals on torch's allow-list (tensors, storages, dtypes, plain
containers); every other class or function it names is replaced by a stand-in
(:class:`Opaque`) that stores what the pickle hands it (arguments, state, items) and
has no behaviour of its own. Tensors load as ``torch.load`` makes them; nothing from
the file is executed.

Passed to ``torch.load(..., weights_only=False, pickle_module=<this module>)``, which
needs :class:`Unpickler` and :func:`load`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from functools import lru_cache


class Opaque(dict):
    """Stand-in for an object of a class (or the result of a function) the file names.

    ``global_name`` is that name; ``args`` the arguments the pickle called it with,
    ``state`` what it set as the object's state, ``items`` what it appended; dict items
    it set are the object's own. A subclass of dict, so that pickle's item opcodes work
    and a stand-in for a dict subclass still reads as a mapping.
    """

    global_name = ""

    def __new__(cls, *args, **kwargs):
        self = dict.__new__(cls)
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args, **kwargs):  # dict's own would take the arguments as items
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)


@lru_cache(maxsize=1)
def _allowed() -> dict:
    """torch's weights-only allow-list: qualified name -> object."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return _get_allowed_globals()


class Unpickler(pickle.Unpickler):
    """A pickle unpickler whose globals are torch's allowed ones or stand-ins."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        allowed = _allowed().get(qualified)
        if allowed is not None:
            return allowed
        if qualified not in self._stand_ins:
            self._stand_ins[qualified] = type(name, (Opaque,), {"global_name": qualified})
        return self._stand_ins[qualified]


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


#: Attributes of a pickled conv module (``nn.Conv2d`` and its subclasses).
_CONV_ATTRIBUTES = ("groups", "stride", "dilation", "transposed")


def module_tensors(stand_in: Opaque, is_tensor) -> tuple[dict, dict] | None:
    """The tensors of a pickled ``nn.Module`` stand-in, named as its ``state_dict`` names
    them (parameters, buffers, then submodules in registration order), and the conv
    attributes of each module that has them (by weight name); None if it is no module.
    """
    state = stand_in.state
    if not isinstance(state, Mapping) or "_modules" not in state:
        return None
    tensors, attributes = {}, {}
    _collect(stand_in, "", tensors, attributes, is_tensor, set())
    return tensors, attributes


def _collect(stand_in, prefix: str, tensors: dict, attributes: dict, is_tensor,
             seen: set) -> None:
    state = stand_in.state if isinstance(stand_in, Opaque) else None
    if not isinstance(state, Mapping) or id(stand_in) in seen:  # a pickle can hold cycles
        return
    seen.add(id(stand_in))
    for key in ("_parameters", "_buffers"):
        values = state.get(key)
        for name, value in (values.items() if isinstance(values, Mapping) else ()):
            if is_tensor(value):
                tensors[f"{prefix}{name}"] = value
    if all(key in state for key in _CONV_ATTRIBUTES):
        attributes[f"{prefix}weight"] = {key: state[key] for key in _CONV_ATTRIBUTES}
    modules = state.get("_modules")
    for name, child in (modules.items() if isinstance(modules, Mapping) else ()):
        _collect(child, f"{prefix}{name}.", tensors, attributes, is_tensor, seen)
