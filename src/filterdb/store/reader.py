"""Reading a database: tables, selections and streamed filter reads.

Reads go straight to the shard that holds each layer's rows (row ranges merged,
read in id order), so reading k filters costs O(k) whatever the database size.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import DatabaseError
from . import dataset, direct, layout
from .layout import Shape


class FilterDB:
    """A filter database opened for reading; picklable (it keeps only its path).

    Parameters
    ----------
    path : str or Path
        The master HDF5 file.

    Examples
    --------
    >>> db = FilterDB("db.h5")                                       # doctest: +SKIP
    >>> sel = db.select(Task="Classification", conv_depth_norm=(0, 0.1))  # doctest: +SKIP
    >>> sel.read().shape                                             # doctest: +SKIP
    (12096, 3, 3)
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatabaseError(f"{self.path}: no such database file")
        try:
            with h5py.File(self.path, "r") as handle:
                self.attrs = dict(handle.attrs)
        except OSError as error:
            raise DatabaseError(f"{self.path}: not an HDF5 file ({error})") from None
        if self.attrs.get("schema") != layout.SCHEMA_NAME:
            raise DatabaseError(f"{self.path}: not a filterdb database")
        version = int(self.attrs.get("schema_version", -1))
        if version != layout.SCHEMA_VERSION:  # its tables may mean something else
            raise DatabaseError(f"{self.path}: schema version {version} is not "
                                f"{layout.SCHEMA_VERSION} (written by another filterdb "
                                "version)")
        self.shapes: tuple[Shape, ...] = tuple(
            layout.parse_shape(s) for s in json.loads(self.attrs["shapes"]))

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"FilterDB({str(self.path)!r}, models={len(self.models)})"

    @cached_property
    def _tables(self) -> dict[str, pd.DataFrame]:
        """The models, layers and meta tables, read in one opening of the file.

        A writer replaces the master while readers run; reading the tables through
        one handle gives them all from the same committed state.
        """
        with pd.HDFStore(self.path, mode="r") as store:
            return {key: store[key] for key in (layout.MODELS, layout.LAYERS, layout.META)}

    @property
    def models(self) -> pd.DataFrame:
        """One row per model: index fields, provenance, counts per shape and operator."""
        return self._tables[layout.MODELS]

    @property
    def layers(self) -> pd.DataFrame:
        """One row per conv layer, with ``filter_id_start``/``filter_id_stop`` (exclusive)."""
        return self._tables[layout.LAYERS]

    @property
    def meta(self) -> pd.DataFrame:
        """The published ``/meta`` view."""
        return self._tables[layout.META]

    @cached_property
    def dataset_info(self) -> dict:
        """Dataset metadata: title, creators, licence, version, DOI, changelog, ...

        Defaults (CC BY-SA 4.0, unreleased version) fill what was never set; see
        :mod:`filterdb.store.dataset`.
        """
        with h5py.File(self.path, "r") as handle:
            return dataset.merged(dataset.read_json(handle, dataset.INFO_DATASET))

    @cached_property
    def datasheet_answers(self) -> dict:
        """Prose datasheet answers stored at build time (question key -> text)."""
        with h5py.File(self.path, "r") as handle:
            return dataset.read_json(handle, dataset.ANSWERS_DATASET)

    def filter_count(self, shape: Shape = (3, 3)) -> int:
        column = layout.shape_column(shape)
        return int(self.models[column].sum()) if column in self.models else 0

    def model_filter_starts(self, shape: Shape = (3, 3)) -> pd.Series:
        """Global id of each model's first filter of ``shape``, indexed by model_id."""
        column = layout.shape_column(shape)
        counts = (self.models[column].to_numpy() if column in self.models
                  else np.zeros(len(self.models), dtype=np.int64))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return pd.Series(starts, index=self.models["model_id"].to_numpy())

    def row_locations(self, model_ids, shape: Shape = (3, 3)) -> dict[int, tuple[str, int]]:
        """Where the rows of ``model_ids`` live: (shard file, first filter id) per model.

        Small and picklable, so chunk tasks can read rows (:meth:`rows`) without
        loading the tables.
        """
        starts = self.model_filter_starts(shape)
        shard = self.models.set_index("model_id")["shard"]
        return {int(m): (str(shard[m]), int(starts[m])) for m in model_ids}

    def rows(self, shape: Shape = (3, 3), locations: dict | None = None) -> ShardRows:
        """A reader of filter rows by global id range: ``reader.read(model_id, start, stop)``.

        Examples
        --------
        >>> with db.rows((3, 3), db.row_locations([0])) as reader:   # doctest: +SKIP
        ...     first = reader.read(0, 0, 10)
        """
        return ShardRows(self.path, tuple(shape), locations if locations is not None
                         else self.row_locations(self.models["model_id"], shape))

    def select(self, shape: Shape | str = (3, 3), **conditions) -> Selection:
        """Filters of the layers that meet every condition.

        Parameters
        ----------
        shape : (kh, kw) or str, default (3, 3)
            Kernel shape; must be one the database stores.
        **conditions
            ``column=value`` on any model or layer column: a scalar for equality, a
            list or set for membership, a tuple ``(low, high)`` for an inclusive range.

        Returns
        -------
        Selection

        Examples
        --------
        >>> db.select(Task=["Classification", "Segmentation"], depthwise=False)  # doctest: +SKIP
        """
        shape = layout.parse_shape(shape) if isinstance(shape, str) else tuple(shape)
        if shape not in self.shapes:
            stored = ", ".join(layout.shape_label(s) for s in self.shapes)
            raise ValueError(f"{self.path}: shape {layout.shape_label(shape)} is not stored "
                             f"(stored: {stored})")
        layers = self.layers
        layers = layers[(layers["kh"] == shape[0]) & (layers["kw"] == shape[1])]
        model_columns = [c for c in self.models.columns if c not in layers.columns]
        table = layers.join(self.models.set_index("model_id")[model_columns], on="model_id")
        mask = np.ones(len(table), dtype=bool)
        for column, condition in conditions.items():
            if column not in table.columns:
                raise ValueError(f"no column {column!r}; choose from: "
                                 + ", ".join(sorted(map(str, table.columns))))
            values = table[column]
            if _numbers(condition) and not pd.api.types.is_numeric_dtype(values):
                # index columns are text as written ("8"): numbers compare as numbers
                values = pd.to_numeric(values, errors="coerce")
            if isinstance(condition, tuple):
                if len(condition) != 2:
                    raise ValueError(f"{column}: a range is a (low, high) pair")
                mask &= ((values >= condition[0]) & (values <= condition[1])).to_numpy()
            elif isinstance(condition, list | set | frozenset):
                mask &= values.isin(list(condition)).to_numpy()
            else:
                mask &= (values == condition).to_numpy()
        return Selection(self, shape, table.loc[mask, ["model_id", "filter_id_start",
                                                       "filter_id_stop"]])


def _numbers(condition) -> bool:
    """Whether a condition's values are all numbers (not booleans)."""
    values = condition if isinstance(condition, tuple | list | set | frozenset) else [condition]
    return bool(values) and all(isinstance(v, numbers.Number)
                                and not isinstance(v, bool | np.bool_) for v in values)


class Selection:
    """Filters of chosen layers; iterate in chunks or read at once.

    Ranges are merged and sorted by filter id so reads are sequential.
    """

    def __init__(self, db: FilterDB, shape: Shape, rows: pd.DataFrame):
        self.db = db
        self.shape = shape
        self.ranges = _merge(rows)

    def __len__(self) -> int:
        return int(sum(stop - start for _, start, stop in self.ranges))

    def __repr__(self) -> str:
        return f"<Selection of {len(self)} {layout.shape_label(self.shape)} filters>"

    @property
    def filter_ids(self) -> np.ndarray:
        """The selected filter ids, ascending."""
        if not self.ranges:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b) for _, a, b in self.ranges])

    def read(self) -> np.ndarray:
        """All selected filters as a float32 (k, kh, kw) array."""
        out = np.empty((len(self), *self.shape), dtype=np.float32)
        position = 0
        for chunk in self.iter_chunks(1 << 20):
            out[position:position + len(chunk)] = chunk
            position += len(chunk)
        return out

    def iter_chunks(self, rows: int = 1 << 18) -> Iterator[np.ndarray]:
        """Yield the selected filters in id order, at most ``rows`` at a time."""
        if rows < 1:
            raise ValueError("rows must be positive")
        locations = self.db.row_locations({m for m, _, _ in self.ranges}, self.shape)
        with self.db.rows(self.shape, locations) as reader:
            for model_id, start, stop in self.ranges:
                for at in range(start, stop, rows):
                    yield reader.read(model_id, at, min(at + rows, stop))


class ShardRows:
    """Reads filter rows of a filterdb database from its shards, one open file at a time.

    Made by :meth:`FilterDB.rows`; a context manager. Reads are fastest in id order
    (a shard is reopened only when the model changes). Uncompressed float32 shards
    (what the store writes) are read with ``pread`` at the rows' file offsets
    (:mod:`filterdb.store.direct`), without Python's lock, or mapped
    (:meth:`mapped`); others through h5py.
    """

    def __init__(self, db_path: Path, shape: Shape, locations: dict[int, tuple[str, int]]):
        self.shards = layout.shards_dir(db_path)
        self.shape = shape
        self.name = layout.filters_dataset(shape)
        self.locations = locations
        self.model, self.handle, self.fd, self.extents = None, None, None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()

    def _close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.model = None

    def read(self, model_id: int, start: int, stop: int, out: np.ndarray | None = None
             ) -> np.ndarray:
        """Filters ``start:stop`` (global ids, all of model ``model_id``) as float32
        (k, kh, kw), written into ``out`` when given."""
        if out is None:
            out = np.empty((stop - start, *self.shape), dtype=np.float32)
        if stop == start:
            return out
        shard, first = self._open(model_id)
        try:
            if self.fd is not None and out.dtype == np.float32 and out.flags.c_contiguous:
                direct.read_rows(self.fd, self.extents, start - first, stop - first, out)
            else:
                if self.handle is None:
                    self.handle = h5py.File(self.shards / shard, "r")
                self.handle[self.name].read_direct(out, np.s_[start - first:stop - first])
        except (OSError, KeyError) as error:  # not ValueError: a caller's wrong ``out``
            raise self._damaged(shard, error) from None
        return out

    def mapped(self, model_id: int, start: int, stop: int) -> np.ndarray | None:
        """Filters ``start:stop`` (global ids, all of model ``model_id``) as a float32
        (k, kh, kw) view of the shard file mapped into memory (:func:`direct.map_rows`:
        no copy; unmapped when the view is dropped), or None where the rows are not
        mapped (not one run of an uncompressed shard, or the file cannot be mapped):
        :meth:`read` them."""
        _, first = self._open(model_id)
        if self.fd is None:
            return None
        rows = direct.map_rows(self.fd, self.extents, start - first, stop - first)
        return None if rows is None else rows.reshape(stop - start, *self.shape)

    def _open(self, model_id: int) -> tuple[str, int]:
        """Open the shard of ``model_id`` unless open; returns its (shard, first id)."""
        shard, first = self.locations[model_id]
        if model_id != self.model:
            self._close()
            path = self.shards / shard
            try:
                self.extents = direct.extents(path, self.name)
                if self.extents is not None and self.extents.row_bytes == 4 * int(
                        np.prod(self.shape)):
                    self.fd = os.open(path, os.O_RDONLY)
                else:
                    self.extents = None
                    self.handle = h5py.File(path, "r")
            except (OSError, KeyError, ValueError) as error:
                raise self._damaged(shard, error) from None
            self.model = model_id
        return shard, first

    def _damaged(self, shard: str, error: Exception) -> DatabaseError:
        """A shard that is missing, truncated or corrupt: one line naming the file."""
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        return DatabaseError(f"{self.shards / shard}: cannot read this shard of the "
                             f"database ({reason}); `filterdb verify` checks every shard")


def _merge(rows: pd.DataFrame) -> list[tuple[int, int, int]]:
    """Sorted, merged (model_id, start, stop) ranges; ranges never span models."""
    merged: list[list[int]] = []
    ordered = rows.sort_values("filter_id_start")
    for model_id, start, stop in ordered.itertuples(index=False):
        if stop <= start:
            continue
        if merged and merged[-1][0] == model_id and merged[-1][2] == start:
            merged[-1][2] = stop
        else:
            merged.append([int(model_id), int(start), int(stop)])
    return [tuple(r) for r in merged]
