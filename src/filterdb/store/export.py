"""A metadata-only release file: the tables, /meta, dataset metadata and datasheet.

``export_meta`` writes one small HDF5 file (pandas tables plus JSON string
datasets) without any filter; :class:`MetaOnlyDB` opens it with the table
interface of a database (``models``, ``layers``, ``meta``, ``shapes``,
``filter_count``, ``dataset_info``), so ``filterdb info`` and ``filterdb
datasheet`` work on it. Reading filters from it raises a clear error.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import h5py
import pandas as pd

from ..errors import DatabaseError
from . import dataset, layout

SCHEMA_NAME = "filterdb-meta"
#: JSON string datasets of the export besides the dataset metadata and answers: the
#: full database's files and redundancy counts (they need the filters to compute).
FACTS = "exported_facts"
DATASHEET = "datasheet"


def export_meta(db, out, scan: bool = True) -> Path:
    """Write the metadata-only release file of ``db``.

    Parameters
    ----------
    db : FilterDB-like
        Uses only the table interface (see the module docstring).
    out : str or Path
        The ``.h5`` file to write (replaced atomically).
    scan : bool
        Count duplicate filters for the datasheet (reads every filter once).

    Returns
    -------
    Path

    Examples
    --------
    >>> export_meta(filterdb.open("db.h5"), "meta.h5")         # doctest: +SKIP
    >>> filterdb.open("meta.h5").filter_count((3, 3))            # doctest: +SKIP
    823
    """
    from ..datasheet import compute, render_markdown

    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise DatabaseError(f"{out}: the metadata file is HDF5; name it .h5 (Parquet needs "
                            "pyarrow, which filterdb does not depend on)")
    data = compute(db, scan=scan)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with pd.HDFStore(tmp, mode="w") as store:
            for key, table in ((layout.MODELS, db.models), (layout.LAYERS, db.layers),
                               (layout.META, db.meta)):
                store.put(key, table, format="table", track_times=False)
        with h5py.File(tmp, "a") as handle:
            dataset.write_json(handle, dataset.INFO_DATASET, db.dataset_info)
            dataset.write_json(handle, dataset.ANSWERS_DATASET,
                               getattr(db, "datasheet_answers", {}))
            dataset.write_json(handle, FACTS, {"files": data["facts"]["files"],
                                               "redundancy": data["facts"].get("redundancy")})
            handle.create_dataset(DATASHEET, data=render_markdown(data), track_times=False)
            handle.attrs.update({
                "schema": SCHEMA_NAME, "schema_version": layout.SCHEMA_VERSION,
                "source": db.path.name,
                "shapes": json.dumps([layout.shape_label(s) for s in db.shapes]),
                "filter_counts": json.dumps({layout.shape_label(s): int(db.filter_count(s))
                                             for s in db.shapes}),
                "filterdb_version": str(getattr(db, "attrs", {}).get("filterdb_version", "")),
                "index_columns": str(getattr(db, "attrs", {}).get("index_columns", "[]")),
            })
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


class MetaOnlyDB:
    """A metadata-only release file opened with a database's table interface.

    Examples
    --------
    >>> meta = MetaOnlyDB("meta.h5")                 # doctest: +SKIP
    >>> meta.models["Task"].value_counts()           # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = Path(path)
        with h5py.File(self.path, "r") as handle:
            self.attrs = dict(handle.attrs)
            self.dataset_info = dataset.merged(dataset.read_json(handle, dataset.INFO_DATASET))
            self.datasheet_answers = dataset.read_json(handle, dataset.ANSWERS_DATASET)
            self.exported_facts = dataset.read_json(handle, FACTS)
        if self.attrs.get("schema") != SCHEMA_NAME:
            raise DatabaseError(f"{self.path}: not a filterdb metadata file")
        self.shapes = tuple(layout.parse_shape(s) for s in json.loads(self.attrs["shapes"]))
        self._counts = json.loads(self.attrs["filter_counts"])

    def __repr__(self) -> str:
        return f"MetaOnlyDB({str(self.path)!r}, models={len(self.models)})"

    @cached_property
    def models(self) -> pd.DataFrame:
        return pd.read_hdf(self.path, layout.MODELS)

    @cached_property
    def layers(self) -> pd.DataFrame:
        return pd.read_hdf(self.path, layout.LAYERS)

    @property
    def meta(self) -> pd.DataFrame:
        return pd.read_hdf(self.path, layout.META)

    @property
    def datasheet(self) -> str:
        """The datasheet (Markdown) as exported."""
        with h5py.File(self.path, "r") as handle:
            return handle[DATASHEET][()].decode()

    def filter_count(self, shape=(3, 3)) -> int:
        return int(self._counts.get(layout.shape_label(tuple(shape)), 0))

    def select(self, *args, **kwargs):
        raise DatabaseError(f"{self.path}: a metadata-only file holds no filters; open the "
                            f"full database ({self.attrs.get('source')}) to read them")
