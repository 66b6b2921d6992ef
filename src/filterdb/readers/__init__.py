"""Model readers: one module per format, each turning a file into a ModelRecord.

A reader module defines ``NAME``, ``EXTENSIONS``, ``sniff(head, path) -> bool``,
``read(path, limits) -> ModelRecord`` and ``cannot_run(path) -> str`` (the reason the
file cannot be run, empty when it can; then the module also defines ``run``, see
:mod:`filterdb.readers.running`). :func:`open_model` picks the reader by content first
and by extension second; :func:`run_model` runs a model once in a bounded child
process. Nothing outside this package knows a model format.

Examples
--------
>>> from filterdb.readers import open_model            # doctest: +SKIP
>>> record = open_model("zoo/resnet18.onnx")           # doctest: +SKIP
>>> [layer.kernel_shape for layer in record.layers][:2]  # doctest: +SKIP
[(7, 7), (3, 3)]
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import MissingDependencyError, ModelReadError
from ..records import NOT_RUN, ModelRecord, RunResult
from .running import RunLimits, run_in_child
from .running import parse_input_shapes as parse_input_shapes  # re-exported
from .running import shape_text as shape_text  # re-exported

#: Registered readers, in the order their ``sniff`` is tried: name -> module.
#: Formats with a strong magic number come first; ONNX (a bare protobuf) last.
READERS: dict[str, str] = {
    "sharded": "filterdb.readers.sharded",
    "safetensors": "filterdb.readers.safetensors",
    "tflite": "filterdb.readers.tflite",
    "keras": "filterdb.readers.keras",
    "torch": "filterdb.readers.torch",
    "onnx": "filterdb.readers.onnx",
}

HEAD_BYTES = 64


@dataclass(frozen=True)
class Limits:
    """Bounds a reader enforces before it spends memory on a file, and what it may run.

    ``allow_unsafe_pickle`` lets the PyTorch reader unpickle arbitrary objects, which
    runs code from the file: only for files the user trusts.
    """

    max_file_bytes: int = 8 * 2**30
    max_tensor_elements: int = 2**31
    allow_unsafe_pickle: bool = False


def require(module: str, path, extra: str):
    """Import an optional dependency, or fail naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            path, f"reading this file needs the package {module.split('.')[0]!r}, which is "
                  f"not installed (pip install 'filterdb[{extra}]')") from None


def reader_modules() -> dict[str, ModuleType]:
    """The reader modules; they import their optional dependencies only when reading."""
    return {name: importlib.import_module(module) for name, module in READERS.items()}


#: Suffixes that other files share (ONNX external data, HDF5 data files): such a file
#: is a model only when a reader recognises its content.
AMBIGUOUS_EXTENSIONS = {".bin", ".h5", ".hdf5", ".tar", ".pkl", ".json"}


def model_extensions() -> set[str]:
    """Lower-case file suffixes some reader claims, e.g. ``{".onnx"}``."""
    return {ext for module in reader_modules().values() for ext in module.EXTENSIONS}


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether a file in a zoo is a model: a claimed suffix, and for ambiguous suffixes
    content that a reader recognises, or its container damaged (a truncated Keras
    ``.h5``, a truncated ``.pth.tar``: failed models, not files to ignore)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in model_extensions():
        return False
    if suffix not in AMBIGUOUS_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return True  # let the read report why it cannot be opened
    modules = reader_modules().values()
    return (any(module.sniff(head, path) for module in modules)
            or any(suffix in module.EXTENSIONS and module.damaged(head, path)
                   for module in modules if hasattr(module, "damaged")))


def member_files(path: str | os.PathLike) -> list[Path]:
    """The other files that belong to the model file ``path``: the shards a sharded
    checkpoint's index names; [] for a model in one file."""
    path = Path(path)
    try:
        head = read_head(path)
    except ModelReadError:
        return []
    for module in reader_modules().values():
        if hasattr(module, "members") and module.sniff(head, path):
            return module.members(path)
    return []


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a file, or a ModelReadError saying why not."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as error:
        raise ModelReadError(path, f"cannot open ({error.strerror})") from None


def find_reader(path: str | os.PathLike) -> ModuleType:
    """The reader module for ``path``: by content first, by extension second."""
    path = Path(path)
    head = read_head(path)
    modules = reader_modules()
    for module in modules.values():
        if module.sniff(head, path):
            return module
    for module in modules.values():
        if path.suffix.lower() in module.EXTENSIONS:
            return module
    known = ", ".join(sorted(model_extensions()))
    raise ModelReadError(path, f"no reader for this file (known formats: {known})")


def open_model(path: str | os.PathLike, limits: Limits | None = None) -> ModelRecord:
    """Read one model file into a :class:`~filterdb.records.ModelRecord`.

    Raises
    ------
    ModelReadError
        For anything wrong with the file (an empty conv weight included), naming the
        file and the reason.
    """
    path = Path(path)
    limits = limits or Limits()
    size = path.stat().st_size if path.exists() else 0
    if size == 0 and path.is_file():
        raise ModelReadError(path, "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise ModelReadError(path, f"file of {size} bytes exceeds the limit of "
                                   f"{limits.max_file_bytes} bytes")
    record = find_reader(path).read(path, limits)
    for layer in record.layers:
        # A zero-sized kernel holds no filters and breaks every per-layer statistic.
        if layer.weight.size == 0:
            raise ModelReadError(path, f"conv layer {layer.name!r} has an empty weight of "
                                       f"shape {tuple(layer.weight.shape)}")
    return record


def run_model(path: str | os.PathLike, input_shapes: list[tuple[int, ...]] | None = None,
              limits: RunLimits | None = None) -> RunResult:
    """Run a model once on a seeded random input, in a child process bounded in time and
    memory; formats that cannot be run are ``"not run"`` with the reason.

    Parameters
    ----------
    path : str or PathLike
        A model file in any format :func:`open_model` reads.
    input_shapes : list of tuple of int, optional
        One shape per graph input, in order; default: the declared shapes, unknown
        dimensions filled as :mod:`filterdb.readers.running` documents.
    limits : RunLimits, optional
        Time and address-space limits of the child, and the input's seed.

    Returns
    -------
    RunResult
        A run that fails is a result (``runs == "no"`` and the reason), not an error.

    Raises
    ------
    ModelReadError
        When no reader recognises the file; MissingDependencyError when the package
        that runs its format (onnxruntime, torch) is not installed.

    Examples
    --------
    >>> result = run_model("zoo/resnet18.onnx")        # doctest: +SKIP
    >>> result.runs, result.output_shapes, result.finite   # doctest: +SKIP
    ('yes', [(1, 1000)], True)
    """
    path = Path(path)
    module = find_reader(path)
    reason = module.cannot_run(path)
    if reason:
        return RunResult(NOT_RUN, reason)
    return run_in_child(module.__name__, path, input_shapes, limits or RunLimits())
