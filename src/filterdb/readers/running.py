"""Running a model once, in a child process bounded in time and memory.

A reader module that can run its format defines ``cannot_run(path) -> str`` (empty when
the file can be run here, else the reason) and ``run(path, input_shapes, seed) ->
RunResult``. :func:`run_in_child` calls ``run`` in a fresh Python process whose address
space is capped with ``RLIMIT_AS`` and which is killed after a timeout, so a model that
crashes, allocates without bound or never finishes costs one failed run, not the build.

Input shapes
------------
A graph input's declared dimensions are used as they are; unknown (symbolic)
dimensions get defaults (:func:`fill_dims`): the first one (batch) is 1; in a 4-D
input, the spatial ones are :data:`SPATIAL` (224) and the channel one is the
in-channels of the first convolution reading the input, else 3; the input is taken as
NHWC when its second and third dimensions are unknown and its last is known, else as
NCHW; any other unknown dimension is 1. A dimension name that several inputs share
(``S`` in ``[1, S, 512]`` and ``[1, 64, S, 8]``) gets one value, the largest its
places get by these rules (:func:`fill_named_dims`). ``input_shapes`` (the index's
``Input Shape`` column, parsed by :func:`parse_input_shapes`) overrides all of them, one
shape per graph input in order. Float inputs are standard normal, integer inputs are 0
or 1, boolean inputs are False, all from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import importlib.util
import json
import numbers
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError
from ..records import NOT_RUN, RUNS_NO, RUNS_YES, RunResult

#: Default size of an unknown spatial dimension.
SPATIAL = 224
#: Default channels of an image input whose channels are unknown and not implied.
CHANNELS = 3
#: The child prints its result on a line starting with this, after whatever the
#: runtime libraries print.
MARKER = "filterdb-run-result: "
#: Reasons longer than this are cut: runtimes dump whole graphs into their messages.
MAX_REASON = 300


@dataclass(frozen=True)
class RunLimits:
    """Bounds of one verification run, and the seed of its random input.

    ``seconds`` covers the whole child (start, loading the model, one forward pass);
    ``memory_bytes`` caps its address space (``RLIMIT_AS``), which counts reserved as
    well as used memory.

    Examples
    --------
    >>> RunLimits(seconds=10).memory_bytes == 4 * 2**30
    True
    """

    seconds: float = 120.0
    memory_bytes: int = 4 * 2**30
    seed: int = 0


def require_runtime(module: str, path: str | os.PathLike, extra: str) -> None:
    """Fail naming the extra to install when the package that runs a format is missing.

    Raises
    ------
    MissingDependencyError
        One line: the file, the package and ``pip install 'filterdb[EXTRA]'``.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            path, f"running this model needs the package {module!r}, which is not "
                  f"installed (pip install 'filterdb[{extra}]')")


def memory_text(size: int) -> str:
    """A memory limit in words: ``memory_text(2**30) == "1 GiB"``, ``"512 MiB"``."""
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


def parse_input_shapes(text: str) -> list[tuple[int, ...]]:
    """Parse ``"1x3x224x224;1x10"`` into one shape per graph input, in input order.

    Raises
    ------
    ValueError
        When a shape is not positive integers joined by ``x``.

    Examples
    --------
    >>> parse_input_shapes("1x3x32x32; 1x10")
    [(1, 3, 32, 32), (1, 10)]
    """
    shapes = []
    for part in text.split(";"):
        try:
            shape = tuple(int(d) for d in part.strip().lower().split("x"))
        except ValueError:
            raise ValueError(f"input shape {part.strip()!r} is not like 1x3x224x224") from None
        if not shape or min(shape) < 1:
            raise ValueError(f"input shape {part.strip()!r} has a dimension below 1")
        shapes.append(shape)
    return shapes


def shape_text(shapes: Sequence[Sequence[int]]) -> str:
    """The inverse of :func:`parse_input_shapes`: ``[(1, 10), (1,)]`` -> ``"1x10;1"``."""
    return ";".join("x".join(str(d) for d in shape) for shape in shapes)


def chosen_shapes(given, count: int, defaults) -> list[tuple[int, ...]] | RunResult:
    """The shapes a run feeds: ``given`` (one per graph input) or ``defaults()``; a count
    that does not match the graph's inputs is a "not run" result."""
    if given is None:
        return defaults()
    if len(given) != count:
        return RunResult(NOT_RUN, f"{len(given)} input shape(s) given for {count} graph "
                                  "input(s)")
    return [tuple(shape) for shape in given]


def fill_dims(dims: Sequence[int | None], channels: int | None = None) -> tuple[int, ...]:
    """Replace the unknown dimensions (None or below 1) of a declared input shape.

    Examples
    --------
    >>> fill_dims([None, 3, None, None])
    (1, 3, 224, 224)
    >>> fill_dims(["batch", None, None, 3])       # NHWC: only the channels known
    (1, 224, 224, 3)
    >>> fill_dims([None, None, 32, 32], channels=1)
    (1, 1, 32, 32)
    """
    known = [int(d) if isinstance(d, numbers.Integral) and d > 0 else None for d in dims]
    filled = [1 if d is None else d for d in known]
    if len(known) == 4:
        nhwc = known[1] is None and known[2] is None and known[3] is not None
        spatial, channel = ((1, 2), None) if nhwc else ((2, 3), 1)
        for axis in spatial:
            if known[axis] is None:
                filled[axis] = SPATIAL
        if channel is not None and known[channel] is None:
            filled[channel] = channels or CHANNELS
    return tuple(filled)


def fill_named_dims(shapes: Sequence[Sequence], channels: Sequence[int | None]
                    ) -> list[tuple[int, ...]]:
    """:func:`fill_dims` for every input of a graph, with one value per dimension name.

    ``shapes``: the declared shapes, a named dimension as its name (a string);
    ``channels``: per input, the in-channels of a convolution reading it, or None.

    Examples
    --------
    >>> fill_named_dims([[1, "S", 512], [1, 64, "S", 8]], [None, None])
    [(1, 224, 512), (1, 64, 224, 8)]
    """
    filled = [list(fill_dims(shape, channel))
              for shape, channel in zip(shapes, channels, strict=True)]
    value: dict[str, int] = {}
    for shape, dims in zip(shapes, filled, strict=True):
        for name, dim in zip(shape, dims, strict=True):
            if isinstance(name, str) and name:
                value[name] = max(value.get(name, 0), dim)
    return [tuple(value.get(name, dim) if isinstance(name, str) and name else dim
                  for name, dim in zip(shape, dims, strict=True))
            for shape, dims in zip(shapes, filled, strict=True)]


def random_input(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A seeded input of ``shape``: standard normal floats, 0/1 integers, False booleans."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 2, shape).astype(dtype)
    return np.zeros(shape, dtype)


def outputs_result(inputs: list[tuple[int, ...]], outputs: list[np.ndarray],
                   seconds: float) -> RunResult:
    """The RunResult of a forward pass that finished with ``outputs``."""
    finite = all(np.isfinite(out).all() for out in outputs if out.dtype.kind in "fc")
    return RunResult(RUNS_YES, input_shapes=inputs,
                     output_shapes=[tuple(int(d) for d in out.shape) for out in outputs],
                     finite=bool(finite), seconds=seconds)


def failure(stage: str, error: BaseException, inputs: Sequence[tuple[int, ...]] = ()
            ) -> RunResult:
    """A failed run: the stage that failed and the error's message on one line, shortened,
    and the input shapes it was given (``inputs``), if it got that far.

    An error that carries a traceback (TorchScript's interpreter puts the scripted
    code's traceback first and the error last) is given by its last line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines[:-1]):
        last = lines[-1]
        named = re.match(r"[A-Za-z_][\w.]*(Error|Exception): ", last)
        message = last if named else f"{type(error).__name__}: {last}"
    else:
        text = " ".join(lines)  # one line: runtimes spread details over several
        message = f"{type(error).__name__}: {text}".rstrip(": ")
    if len(message) > MAX_REASON:
        message = message[:MAX_REASON - 3] + "..."
    return RunResult(RUNS_NO, f"{stage} failed ({message})",
                     input_shapes=[tuple(shape) for shape in inputs])


def run_in_child(module: str, path: str | os.PathLike,
                 input_shapes: list[tuple[int, ...]] | None, limits: RunLimits) -> RunResult:
    """Run ``module.run(path, input_shapes, seed)`` in a bounded child process.

    Examples
    --------
    >>> run_in_child("filterdb.readers.onnx", "net.onnx", None, RunLimits())  # doctest: +SKIP
    RunResult(runs='yes', reason='', input_shapes=[(1, 3, 32, 32)], ...)
    """
    request = json.dumps({"module": module, "path": os.fspath(path),
                          "input_shapes": input_shapes, "seed": limits.seed,
                          "memory_bytes": limits.memory_bytes})
    # The child must import this very filterdb, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, "-m", "filterdb.readers.run_child"],
                              input=request, env=env, capture_output=True, text=True,
                              timeout=limits.seconds)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return RunResult(RUNS_NO, f"did not finish within {limits.seconds:g} s (killed)")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            for key in ("input_shapes", "output_shapes"):
                data[key] = [tuple(shape) for shape in data[key]]
            return RunResult(**data)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        # Runtimes that hit RLIMIT_AS often abort or segfault instead of raising.
        return RunResult(RUNS_NO, f"crashed ({name}; the memory limit was "
                                  f"{memory_text(limits.memory_bytes)})")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1][:MAX_REASON]
    return RunResult(RUNS_NO, f"the run ended without a result (exit {done.returncode}: "
                              f"{last})")
