"""``verify``: is a database whole and consistent, and how redundant is it?

Integrity problems (each one line naming the file and what is wrong): schema,
tables and columns, row counts, dense id ranges, the ``/meta`` view, the
``/filters`` datasets, and every shard's stored filter checksum recomputed.
Redundancy and completeness (see :mod:`filterdb.redundancy`) are reported, not
failed on: a dataset may legitimately hold duplicate filters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import redundancy
from .store import layout
from .store.meta import published_meta
from .store.shard import filter_checksums

MODEL_COLUMNS = ("model_id", "model", "filter_id_start", "filter_id_stop", "shard")
LAYER_COLUMNS = ("model_id", "kh", "kw", "n_filters", "filter_id_start", "filter_id_stop")


@dataclass
class Verification:
    """Problems found (empty when all is well) and a summary of the database."""

    problems: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(db, checksums: bool = True, scan: bool = True, workdir=None) -> Verification:
    """Check a database's integrity and count its redundancies.

    Parameters
    ----------
    db : FilterDB
    checksums : bool
        Recompute every shard's filter checksum (reads all filters once).
    scan : bool
        Count duplicate filters and shared layers (reads all filters once more).
    workdir : path, optional
        Folder for the duplicate counter's bucket files.

    Returns
    -------
    Verification

    Examples
    --------
    >>> result = verify(filterdb.open("db.h5"))     # doctest: +SKIP
    >>> result.ok, result.summary["models"]          # doctest: +SKIP
    (True, 12)
    """
    result = Verification()
    problem = result.problems.append
    where = str(db.path)
    if int(db.attrs.get("schema_version", -1)) != layout.SCHEMA_VERSION:
        problem(f"{where}: schema version {db.attrs.get('schema_version')} is not "
                f"{layout.SCHEMA_VERSION}")
    try:
        models, layers, meta = db.models, db.layers, db.meta
    except (KeyError, OSError, ValueError) as error:
        problem(f"{where}: a table cannot be read ({error})")
        return result
    for table, name, columns in ((models, "models", MODEL_COLUMNS),
                                 (layers, "layers", LAYER_COLUMNS)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            problem(f"{where}: /{name} lacks column(s) {', '.join(missing)}")
    if result.problems:
        return result
    if int(db.attrs.get("n_models", -1)) != len(models):
        problem(f"{where}: n_models attribute {db.attrs.get('n_models')} but /models has "
                f"{len(models)} rows")
    if not np.array_equal(models["model_id"].to_numpy(), np.arange(len(models))):
        problem(f"{where}: /models model_id is not 0..{len(models) - 1} in order")
    if models["model"].duplicated().any():
        problem(f"{where}: duplicate model names in /models")
    for shape in db.shapes:
        _check_shape(db, shape, models, layers, problem)
    _check_meta(db, models, layers, meta, problem)
    unchecked = _check_shards(db, models, problem) if checksums else list(models["model"])
    result.summary = {"models": len(models), "layers": len(layers),
                      "models_without_checksum": unchecked,
                      "filters": {layout.shape_label(s): db.filter_count(s) for s in db.shapes},
                      "identical_models": redundancy.identical_models(db),
                      "empty_fields": redundancy.empty_fields(db)}
    if scan and not result.problems:
        result.summary["redundancy"] = [redundancy.scan_filters(db, s, workdir)
                                        for s in db.shapes]
    return result


def _check_shape(db, shape, models, layers, problem) -> None:
    where, label = str(db.path), layout.shape_label(shape)
    column = layout.shape_column(shape)
    counts = (models[column].to_numpy(dtype=np.int64) if column in models
              else np.zeros(len(models), np.int64))
    of_shape = layers[(layers["kh"] == shape[0]) & (layers["kw"] == shape[1])]
    per_model = of_shape.groupby("model_id")["n_filters"].sum()
    for model_id, model, count in zip(models["model_id"], models["model"], counts,
                                      strict=True):
        in_layers = int(per_model.get(model_id, 0))
        if in_layers != count:
            problem(f"{where}: {model}: {count} {label} filters in /models but {in_layers} "
                    "in /layers")
    ranges = of_shape[of_shape["n_filters"] > 0].sort_values("filter_id_start")
    starts, stops = ranges["filter_id_start"].to_numpy(), ranges["filter_id_stop"].to_numpy()
    expected = np.concatenate([[0], np.cumsum(ranges["n_filters"].to_numpy())])
    if (not np.array_equal(starts, expected[:-1]) or not np.array_equal(stops, expected[1:])):
        problem(f"{where}: {label} filter ids of /layers are not dense 0..{expected[-1] - 1} "
                "in layer order")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.searchsorted(first + counts, starts, side="right")
    if len(ranges) and not np.array_equal(
            models["model_id"].to_numpy()[np.minimum(owner, len(models) - 1)],
            ranges["model_id"].to_numpy()):
        problem(f"{where}: {label} filter ids of /layers fall outside their model's range")
    if shape == (3, 3) and (not np.array_equal(models["filter_id_start"], first)
                            or not np.array_equal(models["filter_id_stop"], first + counts)):
        problem(f"{where}: /models filter_id_start/stop disagree with the 3x3 counts")
    with h5py.File(db.path, "r") as handle:
        name = layout.filters_dataset(shape)
        length = handle[name].shape[0] if name in handle else None
        sources = ({source.file_name for source in handle[name].virtual_sources()}
                   if length and handle[name].is_virtual else set())
    folder = layout.shards_dir(db.path).name
    elsewhere = sorted(s for s in sources if Path(s).parts[:1] != (folder,))
    if elsewhere:  # h5py and HDF5 read missing sources as fill values, without an error
        used = Path(elsewhere[0]).parts[0]
        problem(f"{where}: /{name} reads its rows from {used}/, not from {folder}/: the "
                f"database was renamed; rename it and its shards folder back to "
                f"{used.removesuffix('.shards')} and {used} (h5py reads NaN otherwise)")
    if length != int(counts.sum()):
        problem(f"{where}: /{name} has {length} rows but the models count {int(counts.sum())}")


def _check_meta(db, models, layers, meta, problem) -> None:
    index_columns = json.loads(db.attrs.get("index_columns", "[]"))
    expected = published_meta(models, layers, index_columns)
    if len(meta) != len(expected):
        problem(f"{db.path}: /meta has {len(meta)} rows, the tables give {len(expected)}")
    elif not (meta["filter_ids"].to_numpy() == expected["filter_ids"].to_numpy()).all():
        problem(f"{db.path}: /meta filter_ids disagree with /layers")


def _check_shards(db, models, problem) -> list[str]:
    """Recompute each shard's checksums; returns the models without a stored one
    (built before checksums were stored)."""
    unchecked = []
    shards = layout.shards_dir(db.path)
    for model, shard, stored in zip(models["model"], models["shard"],
                                    models.get("filters_blake3", [""] * len(models)),
                                    strict=True):
        path = shards / shard
        if not path.is_file():
            problem(f"{path}: shard of {model} is missing")
            continue
        expected = json.loads(stored) if stored else {}
        try:
            actual = filter_checksums(path, db.shapes)
        except (OSError, KeyError) as error:
            problem(f"{path}: shard of {model} is unreadable ({error})")
            continue
        for label, digest in expected.items():
            if actual.get(label) != digest:
                problem(f"{path}: {label} filter data of {model} does not match its "
                        "stored checksum")
        if not expected:
            unchecked.append(model)
    return unchecked
