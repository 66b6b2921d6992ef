"""filterdb: build, store, check and analyse databases of trained convolution filters."""

from ._version import __version__
from .api import quality
from .errors import DatabaseError, FilterDBError, IndexFileError, ModelReadError
from .store.reader import FilterDB, Selection


def open(path) -> FilterDB:  # noqa: A001 - mirrors h5py.File / xarray.open_dataset naming
    """Open a filter database for reading.

    Parameters
    ----------
    path : str or Path
        The master HDF5 file written by ``filterdb build``.

    Returns
    -------
    FilterDB

    Examples
    --------
    >>> import filterdb
    >>> db = filterdb.open("demo/filters.h5")              # doctest: +SKIP
    >>> db.models[["model", "Task", "total_filters"]]     # doctest: +SKIP
    >>> db.select(Task="Classification").read().shape      # doctest: +SKIP
    """
    return FilterDB(path)


__all__ = ["DatabaseError", "FilterDB", "FilterDBError", "IndexFileError", "ModelReadError",
           "Selection", "__version__", "open", "quality"]
