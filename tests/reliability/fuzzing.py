"""Byte-level mutation of real model files, and reading one mutant under a hang guard.

Shared by the hypothesis test (a short, derandomised run) and
``scripts/fuzz_readers.py`` (the long run whose figures RELIABILITY.md quotes).
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

from filterdb.errors import ModelReadError
from filterdb.readers import Limits, open_model

#: Values that stress length and count fields when written over a file's bytes.
INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff",
               b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00" * 8, b"\xff" * 8)
OPERATIONS = ("flip", "set", "interesting", "insert", "delete", "truncate", "duplicate")
#: Seconds one read may take before it counts as a hang (hang protection only).
HANG_SECONDS = 60
#: The limits fuzzed files are read with: small enough that a mutated count field
#: cannot make a reader allocate gigabytes before the limit check stops it.
FUZZ_LIMITS = Limits(max_file_bytes=64 * 2**20, max_tensor_elements=2**26)


@dataclass(frozen=True)
class Mutation:
    """One edit: ``operation`` at ``where`` (a fraction of the length) with ``value``."""

    operation: str
    where: float
    value: int


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply the edits in order; positions are fractions, so any edit fits any file."""
    out = bytearray(data)
    for m in mutations:
        at = min(int(m.where * len(out)), max(len(out) - 1, 0))
        if m.operation == "flip" and out:
            out[at] ^= 1 << (m.value % 8)
        elif m.operation == "set" and out:
            out[at] = m.value % 256
        elif m.operation == "interesting":
            chunk = INTERESTING[m.value % len(INTERESTING)]
            out[at:at + len(chunk)] = chunk
        elif m.operation == "insert":
            out[at:at] = bytes([m.value % 256]) * (1 + m.value % 64)
        elif m.operation == "delete":
            del out[at:at + 1 + m.value % 64]
        elif m.operation == "truncate":
            del out[at:]
        elif m.operation == "duplicate":
            span = 1 + m.value % 256
            out[at:at] = out[at:at + span]
    return bytes(out)


class Hang(Exception):
    """A read that went on past :data:`HANG_SECONDS`."""


def _alarm(signum, frame):
    raise Hang(f"read did not end within {HANG_SECONDS} s")


def read_mutant(data: bytes, path: Path) -> str:
    """Write ``data`` to ``path`` and read it: ``"read"`` or the ModelReadError reason.

    Any other exception propagates: a reader bug. Needs the main thread (SIGALRM).
    """
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_model(path, FUZZ_LIMITS)
        return "read"
    except ModelReadError as error:
        return error.reason
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
