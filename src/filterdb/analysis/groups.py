"""Groupings of filters by a model or layer column; filters inherit their layer's group.

A grouping is named by a column of the layers table or of the models table
(``Task``, ``Visual Category``, ``Framework``, ``producer``, ``model``, ``verdict``,
...), or ``depth``:

- ``depth`` (and ``conv_depth_norm``): the layer's ``conv_depth_norm`` in the bins
  of the published analysis, ``[0, 0.1], (0.1, 0.2], ..., (0.9, 1.0]``, labelled
  ``"0.0-0.1"``, ``"0.1-0.2"``, ... (right-closed, the first bin also holds 0).
  The name shadows the layer column ``depth`` (node depth in the graph).
- other float columns: ten equal-width bins over the selected layers' range, with
  the same right-closed rule, labelled ``"low-high"``;
- everything else (strings, integers, booleans): one group per value; labels are
  the values as text (``"(empty)"`` for an empty string, ``"(missing)"`` for a
  missing value), sorted by value.

Only groups that hold selected filters exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Name of the normalised-depth grouping.
DEPTH = "depth"
#: Upper edges of the depth bins but the last: a value equal to an edge belongs to the
#: bin below it (0.1 -> "0.0-0.1").
DEPTH_EDGES = np.arange(1, 10) / 10
DEPTH_LABELS = tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))
FLOAT_BINS = 10


def slug(name: str) -> str:
    """File-name form of a grouping name: lower case, runs of other characters -> ``_``.

    Examples
    --------
    >>> slug("Visual Category")
    'visual_category'
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower())


@dataclass(frozen=True)
class Grouping:
    """A named grouping of layers by one column.

    Parameters
    ----------
    name : str
        Label of the grouping (file names, result keys).
    column : str
        Column of the joined layers/models table.
    kind : {"auto", "depth"}
        ``depth``: fixed 0.1 bins of a value in [0, 1]; ``auto``: by the column's type.
    """

    name: str
    column: str
    kind: str = "auto"

    @classmethod
    def parse(cls, spec) -> Grouping:
        """``"depth"`` -> normalised depth bins; any other string -> that column."""
        if isinstance(spec, Grouping):
            return spec
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"a grouping is a column name, got {spec!r}")
        if spec in (DEPTH, "conv_depth_norm"):
            return cls(spec, "conv_depth_norm", "depth")
        return cls(spec, spec)

    def assign(self, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Group code (int64) of every row of ``table`` and the labels, in label order."""
        if self.column not in table.columns:
            raise ValueError(f"no column {self.column!r} to group by; choose from: depth, "
                             + ", ".join(sorted(map(str, table.columns))))
        values = table[self.column]
        if self.kind == "depth":
            return _depth_codes(values.to_numpy(dtype=np.float64), self.column)
        if pd.api.types.is_float_dtype(values.dtype):
            return _float_codes(values.to_numpy(dtype=np.float64))
        return _categorical_codes(values)


def depth_bin(values: np.ndarray) -> np.ndarray:
    """Index 0..9 of the depth bin of each value (``[0, 0.1]`` -> 0, ``(0.1, 0.2]`` -> 1, ...)."""
    return np.searchsorted(DEPTH_EDGES, np.asarray(values, dtype=np.float64), side="left")


def _depth_codes(values: np.ndarray, column: str) -> tuple[np.ndarray, list[str]]:
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        raise ValueError(f"{column} outside [0, 1]: {values[bad][:5].tolist()}")
    return _compact(depth_bin(values), list(DEPTH_LABELS))


def _float_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    missing = np.isnan(values)
    finite = values[~missing]
    if len(finite) == 0:
        return np.zeros(len(values), np.int64), ["(missing)"]
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        codes, labels = np.zeros(len(values), np.int64), [f"{lo:g}"]
    else:
        edges = np.linspace(lo, hi, FLOAT_BINS + 1)
        codes = np.searchsorted(edges[1:-1], values, side="left")
        labels = [f"{a:.4g}-{b:.4g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    codes = np.where(missing, len(labels), codes)
    return _compact(codes, [*labels, "(missing)"])


def _categorical_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    missing = values.isna().to_numpy()
    present = values[~missing]
    uniques = pd.unique(present)
    try:
        uniques = sorted(uniques)
    except TypeError:
        uniques = sorted(uniques, key=str)
    labels = [("(empty)" if str(v) == "" else str(v)) for v in uniques]
    codes = np.full(len(values), len(labels), dtype=np.int64)
    if len(uniques):
        position = pd.Index(uniques).get_indexer(present)
        codes[~missing] = position
    return _compact(codes, [*labels, "(missing)"])


def _compact(codes: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Drop labels no row uses; codes renumbered in label order."""
    codes = np.asarray(codes, dtype=np.int64)
    used = np.unique(codes)
    remap = np.full(len(labels), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return remap[codes], [labels[i] for i in used]


def layer_table(db, shape: tuple[int, int] = (3, 3), where: dict | None = None) -> pd.DataFrame:
    """The selected layers holding filters of ``shape``, joined with their model's columns.

    Selection semantics are those of :meth:`FilterDB.select` (``where`` holds its
    conditions). Rows are in filter-id order; columns include ``model_id``,
    ``filter_id_start``, ``filter_id_stop`` and ``n`` (filters of the layer).
    """
    selection = db.select(shape=shape, **(where or {}))
    layers = db.layers
    layers = layers[(layers["kh"] == shape[0]) & (layers["kw"] == shape[1])
                    & (layers["filter_id_stop"] > layers["filter_id_start"])]
    model_columns = [c for c in db.models.columns if c not in layers.columns]
    table = layers.join(db.models.set_index("model_id")[model_columns], on="model_id")
    table = table.sort_values("filter_id_start", kind="stable").reset_index(drop=True)
    ranges = np.array(selection.ranges, dtype=np.int64).reshape(-1, 3)
    starts = table["filter_id_start"].to_numpy(dtype=np.int64)
    stops = table["filter_id_stop"].to_numpy(dtype=np.int64)
    slot = np.searchsorted(ranges[:, 1], starts, side="right") - 1
    inside = (slot >= 0) & (stops <= ranges[np.maximum(slot, 0), 2]) if len(ranges) else \
        np.zeros(len(table), dtype=bool)
    table = table[inside].reset_index(drop=True)
    table["n"] = table["filter_id_stop"] - table["filter_id_start"]
    return table
