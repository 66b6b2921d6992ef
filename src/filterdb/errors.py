"""The error types filterdb raises; the CLI turns each into one line."""

from __future__ import annotations

import os


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so that a
    message naming an oddly named file stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class FilterDBError(Exception):
    """Base class of every error filterdb reports to its user."""


class ModelReadError(FilterDBError):
    """A model file cannot be read; names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # pickled by its parts: raised in a worker, re-raised here
        return type(self), (self.path, self.reason)


class MissingDependencyError(ModelReadError):
    """A reader needs an optional package that is not installed."""


class IndexFileError(FilterDBError):
    """The meta index is unreadable or inconsistent with the zoo (under --strict)."""


class DatabaseError(FilterDBError):
    """The database is missing, locked, of another schema or damaged."""


class BuildInterrupted(FilterDBError):
    """A writing command stopped by Ctrl-C, leaving a committed state (a build: what
    was ready; ``release``/``remove``: before or after their one commit); the CLI
    exits 130."""


class WorkerStartError(FilterDBError):
    """Worker processes that die before they start (no model is to blame)."""
