"""Which layout a file has: a filterdb database or a published CNN Filter DB file."""

from __future__ import annotations

from pathlib import Path

import h5py

from ..errors import DatabaseError
from . import layout


def open_database(path):
    """Open ``path`` as a :class:`FilterDB` or, without filterdb's schema attribute but
    with the published ``/filters`` and ``/meta``, as a :class:`PublishedDB`.

    Raises
    ------
    DatabaseError
        Naming the file and why it is neither.

    Examples
    --------
    >>> open_database("cnn-filter-db-v1.0.0.h5")       # doctest: +SKIP
    PublishedDB('cnn-filter-db-v1.0.0.h5', models=647)
    """
    from .export import SCHEMA_NAME as META_ONLY_SCHEMA
    from .export import MetaOnlyDB
    from .published import PublishedDB, layout_problem
    from .reader import FilterDB

    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"{path}: no such database file")
    try:
        with h5py.File(path, "r") as handle:
            schema = handle.attrs.get("schema")
            problem = None if schema is not None else layout_problem(handle)
    except OSError as error:
        raise DatabaseError(f"{path}: not an HDF5 file ({error})") from None
    if schema == META_ONLY_SCHEMA:
        return MetaOnlyDB(path)
    if schema is not None:
        return FilterDB(path)  # it names the schema it does not know
    if problem is not None:
        raise DatabaseError(f"{path}: neither a filterdb database (no {layout.SCHEMA_NAME} "
                            f"schema attribute) nor a published CNN Filter DB file ({problem})")
    return PublishedDB(path)
