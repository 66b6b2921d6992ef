"""Checks of a command's output path before any work: never write over a database."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FilterDBError
from ..store import layout


def _database_paths(path: Path) -> list[Path]:
    """A database's master, its shards folder, its lock file and its build report,
    resolved."""
    return [p.resolve() for p in (path, layout.shards_dir(path), layout.lock_path(path),
                                  layout.report_path(path))]


def _holds_filters(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file with a ``/filters`` dataset: a published CNN
    Filter DB file, or a master whose shards folder is elsewhere."""
    import h5py

    try:
        if not (path.is_file() and h5py.is_hdf5(path)):
            return False
        with h5py.File(path, "r") as handle:
            return "filters" in handle
    except OSError:
        return False


def _is_master(path: Path) -> bool:
    """Whether ``path`` is a database's master file (one with a shards folder)."""
    return path.is_file() and layout.shards_dir(path).is_dir()


def _guard(output: Path, database: Path) -> None:
    """One line, before any work, when ``output`` would overwrite or write into
    ``database`` (its master, shards, lock or build report), another filterdb database
    (a master beside its shards folder) or a file holding filters (a published one)."""
    target = output.resolve()
    if any(target == p or p in target.parents for p in _database_paths(database)):
        raise FilterDBError(f"{output}: is part of the database {database}; choose "
                            "another output")
    if any(_is_master(p) or _is_master(p.with_name(p.name.removesuffix(".shards")))
           for p in (target, *target.parents) if p.name):
        raise FilterDBError(f"{output}: is part of a filterdb database; not overwritten")
    if _holds_filters(target):
        raise FilterDBError(f"{output}: is a filter database file (it holds /filters); "
                            "not overwritten")


def _writable_place(output: Path) -> None:
    """One line, before any work, when ``output`` cannot be made: a file where one of its
    folders should be, or a folder this process may not write to."""
    ancestor = next(p for p in output.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise FilterDBError(f"{output}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FilterDBError(f"{output}: cannot write in {ancestor} (read-only or not permitted)")


def output_file(output: Path, database: Path) -> Path:
    """``output`` checked as a file to write a command's result into."""
    _guard(output, database)
    _writable_place(output)
    if output.is_dir():
        raise FilterDBError(f"{output}: is a folder, not a file")
    return output


def output_folder(output: Path, database: Path) -> Path:
    """``output`` checked as a folder to write a command's files into."""
    _guard(output, database)
    _writable_place(output)
    if output.exists() and not output.is_dir():
        raise FilterDBError(f"{output}: is a file, not a folder")
    return output
