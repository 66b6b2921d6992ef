"""The published CNN Filter DB file (v0.1.0 and v1.0.0), read in place.

A published file is ``/filters``, one 3x3 filter per row ((N, 9) or (N, 3, 3),
float16/32/64), and ``/meta``, a pandas table with one row per model and
convolution depth whose ``filter_ids`` is ``"start:end"`` with an INCLUSIVE end.
:class:`PublishedDB` derives filterdb's ``models`` and ``layers`` tables from
``/meta`` alone (the filters are read only by selections), so everything that
works on a :class:`~filterdb.store.reader.FilterDB` works on it.

What the derived tables cannot know is marked missing, never invented:

- text columns the file lacks (``Framework``, ``Precision``, ``Optimizer``,
  ``Conv Weight Initializer``, ``format``, ``sha256``, layer ``name``,
  ``op_type``, ...) are ``""``;
- numeric ones (layer ``depth``, ``c_out``, ``groups``, ``depthwise``, strides,
  NaN/Inf counts, every quality metric, ``n_layers``, ...) are NaN, so a
  condition such as ``depthwise=False`` selects nothing rather than guessing;
- verdicts are ``"not assessed"``, the sentinel of a build without quality metrics.

A "layer" row stands for one conv depth of a model, as ``/meta`` does (parallel
branches at one depth share a row). Data issues handled as the authors' notebook
does: 0.1.0's ``Datatype`` is ``Visual Category``; every Task containing
"Segmentation" counts as "Segmentation" (1.0.0 labels some segmentation models
inconsistently); a missing ``conv_depth_norm`` of a model with one conv depth
(the reference divides by zero there) is 0.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import DatabaseError
from . import dataset, layout
from .layout import Shape
from .reader import FilterDB

#: Spellings of 0.1.0 and their 1.0.0 names.
ALIASES = {"Datatype": "Visual Category"}
#: The build's sentinel for layers and models whose quality was not computed.
NOT_ASSESSED = "not assessed"
#: Model columns the published /meta does not have: text, and numbers.
MISSING_MODEL_TEXT = ("Framework", "Precision", "Conv Weight Initializer", "Optimizer",
                      "format", "weight_dtype", "source_path", "sha256", "shard")
MISSING_MODEL_NUMBERS = ("n_layers", "degenerated_share", "random_like_share", "nan_count",
                         "inf_count")
#: Layer columns the published /meta does not have: text, and numbers (NaN).
MISSING_LAYER_TEXT = ("name", "op_type", "source_dtype", "reason")
MISSING_LAYER_NUMBERS = (
    "depth", "depth_is_approximate", "c_out", "c_in_per_group", "groups", "depthwise",
    "stride_h", "stride_w", "dilation_h", "dilation_w", "nan_count", "inf_count", "sparsity",
    "variance_entropy", "variance_entropy_norm", "variance_entropy_clean",
    "variance_entropy_clean_norm", "orthogonality", "weight_l1", "weight_l2", "weight_max")
FILTER_DTYPES = (np.float16, np.float32, np.float64)


def layout_problem(handle: h5py.File) -> str | None:
    """Why an open HDF5 file is not in the published layout, or None when it is."""
    if "schema" in handle.attrs:  # a filterdb database has /filters and /meta too
        return f"it has a schema attribute ({handle.attrs['schema']})"
    if layout.FILTERS not in handle or not isinstance(handle[layout.FILTERS], h5py.Dataset):
        return "no /filters dataset"
    filters = handle[layout.FILTERS]
    if filters.shape[1:] not in ((9,), (3, 3)) or len(filters.shape) not in (2, 3):
        return f"/filters has shape {filters.shape}, not (N, 9) or (N, 3, 3)"
    if filters.dtype not in FILTER_DTYPES:
        return f"/filters has dtype {filters.dtype}, not float16, float32 or float64"
    if layout.META not in handle:
        return "no /meta table"
    return None


class PublishedDB(FilterDB):
    """A published CNN Filter DB file opened for reading, with FilterDB's interface.

    Parameters
    ----------
    path : str or Path
        The published HDF5 file (``/filters`` and the pandas ``/meta`` table).

    Attributes
    ----------
    version : str
        ``"0.1.0"`` when ``/meta`` spells the visual category ``Datatype``, else ``"1.0.0"``.
    stored_dtype, stored_shape
        Of ``/filters`` as stored; reads always give float32 (k, 3, 3).

    Examples
    --------
    >>> db = PublishedDB("cnn-filter-db-v1.0.0.h5")                     # doctest: +SKIP
    >>> db.models.groupby("Task").size()["Segmentation"]                 # doctest: +SKIP
    28
    >>> db.select(Task="Classification", conv_depth_norm=(0, 0.1)).read()  # doctest: +SKIP
    """

    def __init__(self, path):
        self._open(path)
        self._tables  # noqa: B018 - parse and check /meta now: errors belong to opening

    def _open(self, path) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as handle:
                problem = layout_problem(handle)
                if problem is None:
                    self.attrs = dict(handle.attrs)
                    self.stored_shape = handle[layout.FILTERS].shape
                    self.stored_dtype = handle[layout.FILTERS].dtype
        except OSError as error:
            raise DatabaseError(f"{self.path}: not an HDF5 file ({error})") from None
        if problem is not None:
            raise DatabaseError(f"{self.path}: not a published CNN Filter DB file ({problem})")
        self.shapes: tuple[Shape, ...] = ((3, 3),)

    def __setstate__(self, state):
        # Workers only read rows, which needs no tables: skip parsing /meta.
        self._open(state["path"])

    def __repr__(self) -> str:
        return f"PublishedDB({str(self.path)!r}, models={len(self.models)})"

    @property
    def dataset_info(self) -> dict:
        """Dataset metadata as for a database nobody described (:func:`dataset.defaults`),
        except the licence and version, which are blank: filterdb's defaults describe
        its own databases, and the published file records neither."""
        info = dataset.defaults()
        info.update(version="", license={key: "" for key in info["license"]})
        return info

    @cached_property
    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame, str]:
        try:
            meta = pd.read_hdf(self.path, layout.META)
        except (KeyError, ValueError, TypeError, OSError) as error:
            raise DatabaseError(f"{self.path}: /meta is not a pandas table "
                                f"({str(error).splitlines()[0]})") from None
        return _derive(self.path, meta, int(self.stored_shape[0]))

    @property
    def version(self) -> str:
        return self._tables[2]

    @property
    def models(self) -> pd.DataFrame:
        """One row per model, in model_id order; see the module notes on missing columns."""
        return self._tables[0]

    @property
    def layers(self) -> pd.DataFrame:
        """One row per model and conv depth, ``filter_id_stop`` exclusive."""
        return self._tables[1]

    @property
    def meta(self) -> pd.DataFrame:
        """The file's ``/meta`` table as stored (published spellings, inclusive ranges)."""
        return pd.read_hdf(self.path, layout.META)

    def filter_count(self, shape: Shape = (3, 3)) -> int:
        return int(self.stored_shape[0]) if tuple(shape) == (3, 3) else 0

    def model_filter_starts(self, shape: Shape = (3, 3)) -> pd.Series:
        """Global id of each model's first filter, indexed by model_id (as stored)."""
        return pd.Series(self.models["filter_id_start"].to_numpy(dtype=np.int64),
                         index=self.models["model_id"].to_numpy())

    def row_locations(self, model_ids, shape: Shape = (3, 3)) -> dict:
        """Row ids are global in the one ``/filters`` dataset: nothing to locate."""
        return {int(m): None for m in model_ids}

    def rows(self, shape: Shape = (3, 3), locations: dict | None = None) -> PublishedRows:
        """A reader of filter rows by global id range: ``reader.read(model_id, start, stop)``."""
        return PublishedRows(self.path)


class PublishedRows:
    """Reads rows of a published ``/filters`` as float32 (k, 3, 3); a context manager."""

    def __init__(self, path: Path):
        self.handle = h5py.File(path, "r")
        self.dataset = self.handle[layout.FILTERS]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def read(self, model_id: int, start: int, stop: int, out: np.ndarray | None = None
             ) -> np.ndarray:
        """Filters ``start:stop`` (``model_id`` is not needed: ids are rows)."""
        block = self.dataset[start:stop].reshape(stop - start, 3, 3)
        if out is None:
            return block.astype(np.float32, copy=False)
        out[...] = block
        return out

    def mapped(self, model_id: int, start: int, stop: int) -> None:
        """No mapped views of a published file: :meth:`read` its rows through h5py."""
        return None


def _derive(path: Path, meta: pd.DataFrame, n_rows: int
            ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The models and layers tables of a published /meta, after checking its ranges."""
    version = "0.1.0" if "Datatype" in meta.columns else "1.0.0"
    meta = meta.reset_index().rename(columns=ALIASES)
    required = ("model_id", "conv_depth", "conv_depth_norm", "model", "filter_ids", "Task",
                "Visual Category")
    absent = [c for c in required if c not in meta.columns]
    if absent:
        raise DatabaseError(f"{path}: /meta has no column {', '.join(absent)}")
    if meta.empty:
        raise DatabaseError(f"{path}: /meta has no rows")
    start, stop = _ranges(path, meta, n_rows)
    meta["Task"] = meta["Task"].astype(str)
    meta.loc[meta["Task"].str.contains("Segmentation"), "Task"] = "Segmentation"

    layers = pd.DataFrame({
        "model_id": meta["model_id"].to_numpy(np.int64),
        "conv_depth": meta["conv_depth"].to_numpy(np.int64),
        "conv_depth_norm": meta["conv_depth_norm"].to_numpy(np.float64),
        "kh": 3, "kw": 3, "n_filters": stop - start,
        "filter_id_start": start, "filter_id_stop": stop,
    }).sort_values(["model_id", "conv_depth"], kind="stable")
    single = layers.groupby("model_id")["conv_depth"].transform("size") == 1
    layers.loc[single & layers["conv_depth_norm"].isna(), "conv_depth_norm"] = 0.0
    layers.insert(1, "layer", layers.groupby("model_id").cumcount().astype(np.int64))
    for column in MISSING_LAYER_TEXT:
        layers[column] = ""
    for column in MISSING_LAYER_NUMBERS:
        layers[column] = np.nan
    layers["verdict"] = NOT_ASSESSED
    layers = layers.reset_index(drop=True)

    extent = layers.groupby("model_id").agg(filter_id_start=("filter_id_start", "min"),
                                            filter_id_stop=("filter_id_stop", "max"))
    models = meta.drop(columns=["conv_depth", "conv_depth_norm", "filter_ids"])
    models = models.groupby("model_id", sort=True).first().join(extent).reset_index()
    models = models.rename(columns={"op_set": "opset"})
    shapes = [c for c in models.columns if c.startswith("(") and c.endswith(" filters")]
    known = {*layout.PUBLISHED_META_COLUMNS, "opset", "model_id", "filter_id_start",
             "filter_id_stop", *shapes}
    # The remaining count columns are operator types (bare in /meta, prefixed in filterdb).
    operators = {c: layout.OPERATOR_PREFIX + c for c in models.columns
                 if c not in known and pd.api.types.is_integer_dtype(models[c])}
    models = models.rename(columns=operators)
    for column in (*layout.INDEX_COLUMNS, *MISSING_MODEL_TEXT):
        if column not in models:
            models[column] = ""
    for column in MISSING_MODEL_NUMBERS:
        models[column] = np.nan
    models["quality_verdict"] = NOT_ASSESSED
    return models, layers, version


def _ranges(path: Path, meta: pd.DataFrame, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``filter_ids`` as start and exclusive stop arrays, checked against /filters."""
    parts = meta["filter_ids"].astype(str).str.extract(r"^\s*(\d+)\s*:\s*(\d+)\s*$")

    def where(i: int) -> str:
        return f"model_id {meta['model_id'].iloc[i]}, conv_depth {meta['conv_depth'].iloc[i]}"

    bad = np.flatnonzero(parts.isna().any(axis=1).to_numpy())
    if len(bad):
        raise DatabaseError(f"{path}: /meta filter_ids {meta['filter_ids'].iloc[bad[0]]!r} "
                            f"({where(bad[0])}) is not 'start:end'")
    start = parts[0].astype(np.int64).to_numpy()
    stop = parts[1].astype(np.int64).to_numpy() + 1  # the published end is inclusive
    empty = np.flatnonzero(stop <= start)
    if len(empty):
        raise DatabaseError(f"{path}: /meta filter_ids {meta['filter_ids'].iloc[empty[0]]!r} "
                            f"({where(empty[0])}) ends before it starts")
    outside = np.flatnonzero(stop > n_rows)
    if len(outside):
        raise DatabaseError(f"{path}: /meta filter_ids {meta['filter_ids'].iloc[outside[0]]!r} "
                            f"({where(outside[0])}) is beyond the {n_rows} rows of /filters")
    order = np.argsort(start, kind="stable")
    clash = np.flatnonzero(start[order][1:] < stop[order][:-1])
    if len(clash):
        a, b = order[clash[0]], order[clash[0] + 1]
        raise DatabaseError(f"{path}: /meta filter_ids overlap: {meta['filter_ids'].iloc[a]!r} "
                            f"({where(a)}) and {meta['filter_ids'].iloc[b]!r} ({where(b)})")
    return start, stop


def range_gaps(db: PublishedDB) -> str | None:
    """Why the file's ids cannot be kept by a filterdb database, or None.

    filterdb numbers filters model after model without gaps; that keeps the
    published ids only when the ranges, in id order, cover ``/filters`` from 0 and
    each model's ranges are consecutive.
    """
    layers = db.layers.sort_values("filter_id_start", kind="stable")
    start = layers["filter_id_start"].to_numpy()
    stop = layers["filter_id_stop"].to_numpy()
    gaps = np.flatnonzero(start[1:] != stop[:-1])
    if start[0] != 0:
        return f"rows 0:{start[0] - 1} of /filters belong to no /meta row"
    if len(gaps):
        return (f"rows {stop[gaps[0]]}:{start[gaps[0] + 1] - 1} of /filters belong to no "
                "/meta row")
    if stop[-1] != db.filter_count():
        return f"rows {stop[-1]}:{db.filter_count() - 1} of /filters belong to no /meta row"
    models = layers["model_id"].to_numpy()
    seen: set[int] = set()
    for model in models[np.r_[True, models[1:] != models[:-1]]]:
        if model in seen:
            return f"the ranges of model_id {model} are interleaved with another model's"
        seen.add(model)
    return None
