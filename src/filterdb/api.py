"""Top-level conveniences that accept models in any form filterdb reads."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import extraction, layer_quality
from .errors import FilterDBError
from .readers import Limits, open_model
from .readers.arrays import from_arrays, from_module
from .records import ModelRecord

#: Columns of a quality report, in order (also the keys of ``filterdb check --format json``).
QUALITY_COLUMNS = ("name", "shape", "groups", "n", "sparsity", "variance_entropy",
                   "variance_entropy_norm", "variance_entropy_clean",
                   "variance_entropy_clean_norm", "orthogonality", "verdict", "reason")


def model_record(model, limits: Limits | None = None) -> ModelRecord:
    """A ModelRecord from a path, a mapping of name -> array, or a ``torch.nn.Module``."""
    if isinstance(model, ModelRecord):
        return model
    if isinstance(model, str | os.PathLike):
        return open_model(model, limits)
    if isinstance(model, Mapping):
        return from_arrays(model)
    if hasattr(model, "named_modules"):
        return from_module(model)
    raise TypeError(f"cannot read a model from {type(model).__name__}; pass a path, a "
                    "mapping of name -> array or a torch.nn.Module")


def quality(model, db=None, thresholds: layer_quality.Thresholds | None = None,
            limits: Limits | None = None) -> pd.DataFrame:
    """Degeneration metrics and verdicts per conv layer.

    Parameters
    ----------
    model : path, mapping, torch.nn.Module or int
        A model file in any format filterdb reads, a mapping of name -> 4-D array
        (e.g. a state dict), a live module, or a model id of ``db``.
    db : FilterDB or path, optional
        With an integer ``model``: read the metrics stored at build time.
    thresholds : Thresholds, optional
    limits : Limits, optional
        Reader limits; ``Limits(allow_unsafe_pickle=True)`` runs code in pickles.

    Returns
    -------
    pandas.DataFrame
        One row per layer with :data:`QUALITY_COLUMNS`; ``attrs["summary"]`` holds the
        model verdict.

    Examples
    --------
    >>> import filterdb, numpy as np
    >>> table = filterdb.quality({"conv": np.random.default_rng(0).normal(size=(32, 16, 3, 3))})
    >>> table.loc[0, "verdict"]
    'random-like'
    """
    thresholds = thresholds or layer_quality.Thresholds()
    if isinstance(model, int):
        return _stored_quality(model, db, thresholds)
    record = model_record(model, limits)
    layers = extraction.ordered_layers(record)
    if not layers:
        raise FilterDBError(f"{record.path or record.name}: no convolution layers with 2-D kernels")
    rows, summary = layer_quality.assess_layers([layer.weight for layer in layers], thresholds)
    table = pd.DataFrame([{
        "name": layer.name,
        "shape": "x".join(str(d) for d in (layer.c_out, layer.c_in_per_group,
                                             *layer.kernel_shape)),
        "groups": layer.groups,
        **{key: row[key] for key in QUALITY_COLUMNS if key in row},
    } for layer, row in zip(layers, rows, strict=True)], columns=list(QUALITY_COLUMNS))
    table.attrs["summary"] = summary
    return table


def extract(model, limits: Limits | None = None) -> pd.DataFrame:
    """The conv layers of a model and their 2-D filters, without building a database.

    Parameters
    ----------
    model : path, mapping or torch.nn.Module
        A model file in any format filterdb reads, a mapping of name -> 4-D array
        (e.g. a state dict), or a live module (true depths from a ``torch.fx`` trace).
    limits : Limits, optional
        Reader limits; ``Limits(allow_unsafe_pickle=True)`` runs code in pickles.

    Returns
    -------
    pandas.DataFrame
        One row per conv layer, in the order filters are stored (graph depth, then graph
        order), with the columns of ``filterdb layers``: name, op_type, depth, conv_depth,
        conv_depth_norm, depth_is_approximate, channels, groups, kernel size, strides,
        dilations, source_dtype, n_filters, nan_count, inf_count.
        ``attrs["filters"]`` maps each kernel shape ``(kh, kw)`` to a float32 array
        ``(n, kh, kw)`` of all the model's filters of that shape, layer by layer in row
        order; ``attrs["framework"]`` names the source format.

    Raises
    ------
    FilterDBError
        If the model has no convolution layers with 2-D kernels, or cannot be read.

    Examples
    --------
    >>> import filterdb, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> table = filterdb.extract({"conv1.weight": rng.normal(size=(8, 3, 3, 3)),
    ...                           "conv2.weight": rng.normal(size=(4, 8, 1, 1))})
    >>> table[["name", "kh", "kw", "n_filters"]].values.tolist()
    [['conv1.weight', 3, 3, 24], ['conv2.weight', 1, 1, 32]]
    >>> table.attrs["filters"][(3, 3)].shape
    (24, 3, 3)
    """
    record = model_record(model, limits)
    layers = extraction.ordered_layers(record)
    if not layers:
        raise FilterDBError(f"{record.path or record.name}: no convolution layers with 2-D kernels")
    rows = extraction.layer_rows(layers)
    table = pd.DataFrame(rows).drop(columns=["local_start"])
    filters: dict[tuple[int, int], list[np.ndarray]] = {}
    for layer in layers:
        filters.setdefault(layer.kernel_shape, []).append(layer.filters())
    table.attrs["filters"] = {shape: np.concatenate(parts).astype(np.float32, copy=False)
                              for shape, parts in sorted(filters.items())}
    table.attrs["framework"] = record.framework
    return table


def _stored_quality(model_id: int, db, thresholds) -> pd.DataFrame:
    from .store.reader import FilterDB

    if db is None:
        raise FilterDBError("a model id needs db=: the database it belongs to")
    db = db if isinstance(db, FilterDB) else FilterDB(db)
    layers = db.layers[db.layers["model_id"] == model_id]
    if layers.empty:
        raise FilterDBError(f"{db.path}: no model with id {model_id}")
    table = layers.rename(columns={"n_filters": "n"}).assign(
        shape=lambda t: t["c_out"].astype(str) + "x" + t["c_in_per_group"].astype(str) + "x"
        + t["kh"].astype(str) + "x" + t["kw"].astype(str))
    table = table[list(QUALITY_COLUMNS)].reset_index(drop=True)
    table.attrs["summary"] = layer_quality.model_verdict(list(table["verdict"]), thresholds)
    return table
