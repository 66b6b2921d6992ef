"""filterdb: build, store, check and analyse databases of trained convolution filters.

Heavy modules (pandas, the store) load on first use, so that ``import filterdb``
and the build's worker processes start fast.
"""

from ._version import __version__
from .errors import DatabaseError, FilterDBError, IndexFileError, ModelReadError

_LAZY = {"FilterDB": "store.reader", "Selection": "store.reader",
         "PublishedDB": "store.published", "quality": "api",
         "extract": "api", "run_model": "readers"}


def open(path):  # noqa: A001 - mirrors h5py.File / xarray.open_dataset naming
    """Open a filter database for reading.

    Parameters
    ----------
    path : str or Path
        The master HDF5 file written by ``filterdb build``, a metadata-only file
        written by ``filterdb export-meta`` (same tables, no filters), or a published
        CNN Filter DB file (``/filters`` and the pandas ``/meta`` table, v0.1.0 or
        v1.0.0), recognised by its layout and read in place.

    Returns
    -------
    FilterDB, MetaOnlyDB or PublishedDB
        Same interface: ``models``, ``layers``, ``select(...)``.

    Examples
    --------
    >>> import filterdb
    >>> db = filterdb.open("demo/filters.h5")              # doctest: +SKIP
    >>> db.models[["model", "Task", "total_filters"]]     # doctest: +SKIP
    >>> db.select(Task="Classification").read().shape      # doctest: +SKIP
    """
    from .store.detect import open_database

    return open_database(path)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'filterdb' has no attribute {name!r}")


__all__ = ["DatabaseError", "FilterDB", "FilterDBError", "IndexFileError", "ModelReadError",
           "PublishedDB", "Selection", "__version__", "extract", "open", "quality",
           "run_model"]
