"""The published ``/meta`` view derived from the models and layers tables."""

from __future__ import annotations

import pandas as pd

from .layout import META_INDEX, OPERATOR_PREFIX, PUBLISHED_META_COLUMNS


def published_meta(models: pd.DataFrame, layers: pd.DataFrame,
                   index_columns: list[str]) -> pd.DataFrame:
    """One row per (model_id, conv_depth) holding 3x3 filters, as the published file has.

    ``filter_ids`` is ``"start:end"`` with an inclusive end. Depths without 3x3
    filters have no row (they would name an empty range).
    """
    three = layers[(layers["kh"] == 3) & (layers["kw"] == 3) & (layers["n_filters"] > 0)]
    grouped = three.groupby(list(META_INDEX), sort=True).agg(
        start=("filter_id_start", "min"), stop=("filter_id_stop", "max"))
    grouped["filter_ids"] = (grouped["start"].astype(str) + ":"
                             + (grouped["stop"] - 1).astype(str))
    model_columns = models.rename(columns={"opset": "op_set"}).rename(
        columns=lambda c: c[len(OPERATOR_PREFIX):] if c.startswith(OPERATOR_PREFIX) else c)
    wanted = [c for c in PUBLISHED_META_COLUMNS if c in model_columns.columns]
    shapes = [c for c in model_columns.columns if c.endswith(" filters") and c.startswith("(")]
    operators = [c[len(OPERATOR_PREFIX):] for c in models.columns
                 if c.startswith(OPERATOR_PREFIX)]
    extra = [c for c in index_columns if c not in wanted]
    per_model = model_columns.set_index("model_id")[wanted + extra + shapes + operators]
    meta = grouped[["filter_ids"]].join(per_model, on="model_id")
    ordered = [c for c in PUBLISHED_META_COLUMNS if c in meta.columns]
    return meta[ordered + [c for c in meta.columns if c not in ordered]]

