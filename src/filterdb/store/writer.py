"""Transactional writer: shards renamed into place, then an atomically replaced master.

A commit writes a complete new master file under a temporary name and renames
it over the old one, so a reader or a crash sees either the previous or the new
state, never a mix. Shards are immutable and named by the model's content hash,
so a shard left by a killed build is reused when the same model is built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from .._version import __version__
from ..errors import DatabaseError
from ..runs import RUN_COLUMNS, RUN_TEXT_COLUMNS, run_columns
from . import dataset, layout
from .entry import ModelEntry
from .layout import Shape

if TYPE_CHECKING:
    import pandas as pd


class DatabaseLock:
    """An exclusive ``flock`` on ``DB.h5.lock``; the kernel releases it if the holder dies."""

    def __init__(self, db_path: Path):
        self.path = layout.lock_path(db_path)
        self.handle = None

    def acquire(self) -> None:
        try:
            self.handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as error:
            raise DatabaseError(f"{self.path.with_suffix('')}: cannot create the database "
                                f"here ({error.strerror})") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            self.handle = None
            raise DatabaseError(f"{self.path.with_suffix('')}: locked by a running writer "
                                f"({holder}); wait for it to finish") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class DatabaseWriter:
    """Appends models to a database, one atomic commit at a time.

    Parameters
    ----------
    path : str or Path
        The master file; created on the first commit.
    shapes : sequence of (kh, kw), optional
        Kernel shapes stored as filter datasets. Defaults to the database's own, or
        3x3 for a new one; a different set for an existing database is an error.
    durable : bool, default True
        fsync the shards a commit names and the new master before and after its
        rename, so the commit also survives a power failure or an OS crash. Without
        it a commit is still atomic for readers and for a killed writer (the
        renames are; the page cache outlives the process), which is what a build
        needs by default: syncing makes it wait for the disk (see ``build
        --durable``).

    Examples
    --------
    >>> with DatabaseWriter("db.h5") as writer:     # doctest: +SKIP
    ...     writer.commit([entry])
    """

    def __init__(self, path, shapes=None, durable: bool = True):
        self.path = Path(path)
        self.durable = durable
        self.shards = layout.shards_dir(self.path)
        if self.path.is_dir():  # before the lock file: nothing is left beside it
            raise DatabaseError(f"{self.path}: is a folder, not a database file")
        self.lock = DatabaseLock(self.path)
        self.lock.acquire()
        try:
            self._load(shapes)
        except BaseException:
            self.lock.release()
            raise
        self.shards.mkdir(parents=True, exist_ok=True)
        # Temporary files of writers that died; the lock says none is running now.
        masters = self.path.parent.glob(f".{self.path.name}.*.tmp")
        for stale in [*self.shards.glob(".*.tmp"), *masters]:
            stale.unlink(missing_ok=True)

    def _load(self, shapes) -> None:
        # /filters (3x3) is what the published recipe reads: always stored.
        requested = (tuple(sorted({(3, 3), *(tuple(s) for s in shapes)}, key=_shape_order))
                     if shapes else None)
        if not self.path.exists():  # pandas is imported by the first commit, not here
            self.shapes = requested or layout.DEFAULT_SHAPES
            self._models = self._layers = None
            self.index_columns: list[str] = []
            self.dataset = dataset.defaults()
            self.answers: dict = {}
            return
        try:
            with h5py.File(self.path, "r") as handle:
                attrs = dict(handle.attrs)
                self.dataset = dataset.merged(dataset.read_json(handle, dataset.INFO_DATASET))
                self.answers = dataset.read_json(handle, dataset.ANSWERS_DATASET)
            import pandas as pd

            self._models = pd.read_hdf(self.path, layout.MODELS)
            self._layers = pd.read_hdf(self.path, layout.LAYERS)
        except (OSError, KeyError, ValueError) as error:
            raise DatabaseError(f"{self.path}: not a readable filterdb database "
                                f"({error})") from None
        if attrs.get("schema") != layout.SCHEMA_NAME:
            raise DatabaseError(f"{self.path}: not a filterdb database (no schema attribute)")
        if int(attrs.get("schema_version", -1)) != layout.SCHEMA_VERSION:
            raise DatabaseError(f"{self.path}: schema version {attrs.get('schema_version')} "
                                f"is not {layout.SCHEMA_VERSION}")
        self.shapes = tuple(layout.parse_shape(s) for s in json.loads(attrs["shapes"]))
        self.index_columns = json.loads(attrs["index_columns"])
        if requested and set(requested) != set(self.shapes):
            stored = ",".join(layout.shape_label(s) for s in self.shapes)
            raise DatabaseError(f"{self.path}: stores shapes {stored}; build with the "
                                "same --shapes to append")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.lock.release()

    @property
    def models(self) -> pd.DataFrame:
        """The models table as committed (empty before the first commit)."""
        return self._table("_models")

    @property
    def layers(self) -> pd.DataFrame:
        """The layers table as committed (empty before the first commit)."""
        return self._table("_layers")

    def _table(self, name: str) -> pd.DataFrame:
        if getattr(self, name) is None:
            import pandas as pd

            setattr(self, name, pd.DataFrame())
        return getattr(self, name)

    def _committed(self) -> bool:
        """Whether the database holds a model (without importing pandas when not)."""
        return self._models is not None and not self._models.empty

    @property
    def known_hashes(self) -> dict[str, str]:
        """sha256 -> model name of every committed model."""
        if not self._committed():
            return {}
        return dict(zip(self.models["sha256"], self.models["model"], strict=True))

    @property
    def missing_shards(self) -> set[str]:
        """sha256 of the committed models whose shard file is gone (deleted by hand): a
        build that meets such a model again writes its shard again."""
        if not self._committed():
            return set()
        return {sha for sha, shard in zip(self.models["sha256"], self.models["shard"],
                                          strict=True)
                if not (self.shards / shard).is_file()}

    @property
    def known_weights(self) -> dict[str, str]:
        """Conv-weights hash -> model name of every committed model (duplicates in
        another file or format have the same weights hash)."""
        if not self._committed() or "weights_blake3" not in self.models:
            return {}
        return {h: m for h, m in zip(self.models["weights_blake3"], self.models["model"],
                                     strict=True) if h}

    @property
    def known_names(self) -> set[str]:
        return set(self.models["model"]) if self._committed() else set()

    def filter_count(self, shape: Shape) -> int:
        column = layout.shape_column(shape)
        if not self._committed() or column not in self.models:
            return 0
        return int(self.models[column].sum())

    def commit(self, entries: list[ModelEntry]) -> list[int]:
        """Add models in the given order and publish them atomically; returns their ids."""
        if not entries:
            return []
        next_id = len(self.models)
        starts = {shape: self.filter_count(shape) for shape in self.shapes}
        model_rows, layer_rows, ids = [], [], []
        for entry in entries:
            model_id = next_id + len(ids)
            ids.append(model_id)
            model_rows.append(self._model_row(model_id, entry, starts))
            for row in entry.layers:
                shape = (row["kh"], row["kw"])
                row = {"model_id": model_id, **row}
                local = row.pop("local_start")
                start = starts[shape] + local if shape in starts else -1
                row["filter_id_start"] = start
                row["filter_id_stop"] = start + row["n_filters"] if start >= 0 else -1
                layer_rows.append(row)
            for shape in self.shapes:
                starts[shape] += entry.summary["shape_counts"].get(shape, 0)
            for column in entry.meta:
                if column not in self.index_columns:
                    self.index_columns.append(column)
        if self.durable:  # on disk before the master names them
            for entry in entries:
                _fsync(self.shards / entry.shard)
            _fsync_dir(self.shards)
        import pandas as pd

        models = _concat(self.models, pd.DataFrame(model_rows))
        layers = _concat(self.layers, pd.DataFrame(layer_rows))
        if "weights_blake3" in layers:  # layers of databases written before it: unknown
            layers["weights_blake3"] = layers["weights_blake3"].fillna("").astype(str)
        self.dataset = dataset.mark_changed(self.dataset)
        self._write_master(_tidy_models(models, self.index_columns), layers)
        return ids

    def update_dataset(self, info: dict | None = None, answers: dict | None = None) -> None:
        """Replace the dataset metadata and/or datasheet answers (one atomic commit)."""
        if self.models.empty:
            raise DatabaseError(f"{self.path}: no models yet; build the database first")
        if info is not None:
            self.dataset = info
        if answers is not None:
            self.answers = answers
        self._write_master(self.models, self.layers)

    def remove(self, model: str, reason: str) -> dict:
        """Take a model out of every table and view in one atomic commit (an erratum).

        Ids stay dense, as the published recipe assumes: the models after the removed
        one move down by one model id, and their filter ids of each shape move down by
        the number of filters removed of that shape. The changelog records the removed
        id ranges and the shift, and the version becomes a pre-release.

        Returns
        -------
        dict
            The changelog entry.
        """
        if self.models.empty or model not in set(self.models["model"]):
            raise DatabaseError(f"{self.path}: no model named {model!r}")
        if len(self.models) == 1:
            raise DatabaseError(f"{self.path}: {model} is the only model; delete the file")
        row = self.models[self.models["model"] == model].iloc[0]
        model_id = int(row["model_id"])
        starts = {shape: int(self.models.loc[self.models["model_id"] < model_id,
                                             layout.shape_column(shape)].sum())
                  if layout.shape_column(shape) in self.models else 0
                  for shape in self.shapes}
        removed = {shape: int(row.get(layout.shape_column(shape), 0)) for shape in self.shapes}
        models = self.models[self.models["model_id"] != model_id].copy()
        later = models["model_id"] > model_id
        models.loc[later, "model_id"] -= 1
        three = removed.get((3, 3), 0)
        models.loc[later & (models["filter_id_start"] >= 0),
                   ["filter_id_start", "filter_id_stop"]] -= three
        layers = self.layers[self.layers["model_id"] != model_id].copy()
        later = layers["model_id"] > model_id
        layers.loc[later, "model_id"] -= 1
        for shape, count in removed.items():
            moved = later & (layers["kh"] == shape[0]) & (layers["kw"] == shape[1]) & (
                layers["filter_id_start"] >= 0)
            layers.loc[moved, ["filter_id_start", "filter_id_stop"]] -= count
        details = {
            "model": model, "model_id": model_id,
            "removed_filter_ids": {layout.shape_label(s): f"{starts[s]}:{starts[s] + n - 1}"
                                   for s, n in removed.items() if n},
            "filter_id_shift": {layout.shape_label(s): -n for s, n in removed.items() if n},
            "model_id_shift": -1,
        }
        shifts = ", ".join(f"{label} ids {ids} (inclusive) removed, later ones shifted by "
                           f"{details['filter_id_shift'][label]}"
                           for label, ids in details["removed_filter_ids"].items())
        comment = (f"removed model {model} (id {model_id}): {reason}; {shifts}; later model "
                   "ids shifted by -1")
        self.dataset = dataset.record_removal(self.dataset, comment, details)
        self._write_master(models.reset_index(drop=True), layers.reset_index(drop=True))
        (self.shards / str(row["shard"])).unlink(missing_ok=True)
        return self.dataset["changelog"][-1]

    def _model_row(self, model_id: int, entry: ModelEntry, starts: dict) -> dict:
        summary = entry.summary
        meta = dict(entry.meta)
        # The index says how a model was trained; fill gaps with what the file shows.
        meta["Framework"] = meta.get("Framework") or summary.get("framework",
                                                                summary["format"])
        meta["Precision"] = meta.get("Precision") or summary["weight_dtype"]
        three = summary["shape_counts"].get((3, 3), 0)
        row = {"model_id": model_id, "model": entry.model, **meta}
        row.update({key: summary[key] for key in (
            "format", "weight_dtype", "producer", "opset", "depth", "n_layers",
            "total_filters", "3x3_filter_share", "quality_verdict", "degenerated_share",
            "random_like_share")})
        row["filter_id_start"] = starts.get((3, 3), -1)
        row["filter_id_stop"] = starts[(3, 3)] + three if (3, 3) in starts else -1
        # Entries never run (synthetic databases) are "not run", not verified.
        row.update({**run_columns(None),
                    **{key: summary[key] for key in RUN_COLUMNS if key in summary}})
        row["nan_count"] = sum(layer["nan_count"] for layer in entry.layers)
        row["inf_count"] = sum(layer["inf_count"] for layer in entry.layers)
        row.update({layout.shape_column(s): n for s, n in summary["shape_counts"].items()})
        row.update({layout.OPERATOR_PREFIX + op: n
                    for op, n in summary["operator_counts"].items()})
        row.update({"source_path": entry.source_path, "sha256": entry.sha256,
                    "weights_blake3": summary.get("weights_blake3", ""),
                    "filters_blake3": json.dumps(summary.get("filters_blake3", {}),
                                                 sort_keys=True),
                    "shard": entry.shard})
        return row

    def _write_master(self, models: pd.DataFrame, layers: pd.DataFrame) -> None:
        import pandas as pd

        from .meta import published_meta

        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with pd.HDFStore(tmp, mode="w") as store:
                for key, frame in ((layout.MODELS, models), (layout.LAYERS, layers),
                                   (layout.META, published_meta(models, layers,
                                                                self.index_columns))):
                    # pandas writes no table for an empty frame (a database without
                    # 3x3 filters has an empty /meta): the fixed format keeps its columns
                    store.put(key, _canonical_blocks(frame),
                              format="table" if len(frame) else "fixed",
                              **({"index": False} if len(frame) else {}), track_times=False)
            with h5py.File(tmp, "a") as handle:
                for shape in self.shapes:
                    self._virtual_filters(handle, models, shape)
                dataset.write_json(handle, dataset.INFO_DATASET, self.dataset)
                dataset.write_json(handle, dataset.ANSWERS_DATASET, self.answers)
                handle.attrs.update({
                    "schema": layout.SCHEMA_NAME,
                    "schema_version": layout.SCHEMA_VERSION,
                    "filterdb_version": __version__,
                    "shapes": json.dumps([layout.shape_label(s) for s in self.shapes]),
                    "index_columns": json.dumps(self.index_columns),
                    "n_models": len(models),
                })
            if self.durable:
                _fsync(tmp)
            os.replace(tmp, self.path)
            if self.durable:
                _fsync_dir(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        self._models, self._layers = models, layers

    def _virtual_filters(self, handle: h5py.File, models: pd.DataFrame, shape: Shape) -> None:
        name = layout.filters_dataset(shape)
        column = layout.shape_column(shape)
        counts = models[column].to_numpy() if column in models else np.zeros(len(models), int)
        total = int(counts.sum())
        if total == 0:
            handle.create_dataset(name, shape=(0, *shape), dtype=np.float32, track_times=False)
            return
        virtual = h5py.VirtualLayout(shape=(total, *shape), dtype=np.float32)
        start = 0
        for shard, count in zip(models["shard"], counts, strict=True):
            if count:
                source = h5py.VirtualSource(f"{self.shards.name}/{shard}", name,
                                            shape=(int(count), *shape))
                virtual[start:start + count] = source
                start += int(count)
        _create_virtual_dataset(handle, name, virtual)

    def remove_orphan_shards(self) -> int:
        """Delete shards no committed model references; returns how many. The shard
        folder of a database that was never created goes too, once empty."""
        used = set() if self.models.empty else set(self.models["shard"])
        orphans = [p for p in self.shards.glob("*.h5") if p.name not in used]
        for orphan in orphans:
            orphan.unlink(missing_ok=True)
        if not self.path.exists():
            with contextlib.suppress(OSError):  # not empty: files of someone else's
                self.shards.rmdir()
        return len(orphans)


def _create_virtual_dataset(handle: h5py.File, name: str, virtual: h5py.VirtualLayout) -> None:
    """``handle.create_virtual_dataset(name, virtual, fillvalue=NaN)`` without timestamps.

    h5py's high-level call stores the creation time in the object header, so two
    builds of the same zoo would differ in bytes; its property list (from h5py's
    ``_get_dcpl``, the mapping of sources) gets ``track_times`` off here.
    """
    dcpl = virtual._get_dcpl(handle.filename)
    dcpl.set_fill_value(np.array([np.nan], dtype=np.float32))
    dcpl.set_obj_track_times(False)
    space = h5py.h5s.create_simple(virtual.shape)
    dtype = h5py.h5t.py_create(np.dtype(np.float32), logical=1)
    h5py.h5d.create(handle.id, name.encode(), dtype, space, dcpl=dcpl)


def _shape_order(shape: Shape) -> tuple:
    return (shape != (3, 3), shape)


def _concat(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return new if old.empty else pd.concat([old, new], ignore_index=True)


def _canonical_blocks(frame: pd.DataFrame) -> pd.DataFrame:
    """The same frame with its columns regrouped into dtype blocks by column order.

    PyTables stores one column group per pandas block, in block order; a frame grown
    by ``pd.concat`` orders its blocks differently from one built in one go, so
    without this an appended database would differ in bytes from a fresh build.
    """
    import pandas as pd

    return pd.DataFrame(dict(frame.items()), index=frame.index)


def _tidy_models(models: pd.DataFrame, index_columns: list[str]) -> pd.DataFrame:
    """Fill the gaps appending leaves: counts with 0, text with ''; stable column order."""
    counts = [c for c in models.columns
              if c.startswith(layout.OPERATOR_PREFIX) or c.endswith(" filters")]
    models[counts] = models[counts].fillna(0).astype(np.int64)
    text = [c for c in index_columns if c in models.columns]
    # Models appended to a database from before the run columns have them empty.
    filled = text + [c for c in RUN_TEXT_COLUMNS if c in models.columns]
    models[filled] = models[filled].fillna("").astype(str)
    core = ["model_id", "model", *text]
    shapes = sorted(c for c in counts if c.endswith(" filters"))
    operators = sorted(c for c in counts if c.startswith(layout.OPERATOR_PREFIX))
    rest = [c for c in models.columns if c not in core + shapes + operators]
    return models[core + rest + shapes + operators].reset_index(drop=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
