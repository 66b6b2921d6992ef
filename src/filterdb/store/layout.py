"""The single place that knows the database layout: names, schema, published columns.

A database is a master HDF5 file ``DB.h5`` plus a folder ``DB.h5.shards/`` of
immutable shard files, one per model. The master holds the tables, the
published ``/meta`` view and ``/filters`` as a virtual dataset over the shards.
"""

from __future__ import annotations

import re
from pathlib import Path

SCHEMA_NAME = "filterdb"
SCHEMA_VERSION = 1

MODELS = "models"
LAYERS = "layers"
META = "meta"
FILTERS = "filters"

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((3, 3),)

#: Meta index columns in their published spellings; others are kept as given.
INDEX_COLUMNS = (
    "Name", "Paper", "Framework", "Precision", "Training-Dataset", "Pretraining-Dataset",
    "Visual Category", "Task", "Conv Weight Initializer", "Optimizer", "Accessible",
    "Dataset URL",
)

#: Columns of the published /meta table besides the per-shape and per-operator counts.
PUBLISHED_META_COLUMNS = (
    "model", "producer", "op_set", "depth", "Name", "Paper", "Pretraining-Dataset",
    "Training-Dataset", "Visual Category", "Task", "Accessible", "Dataset URL",
    "filter_ids", "total_filters", "3x3_filter_share",
)
META_INDEX = ("model_id", "conv_depth", "conv_depth_norm")

#: Prefix of the per-operator count columns in the models table (bare in /meta).
OPERATOR_PREFIX = "op:"

Shape = tuple[int, int]


def shape_label(shape: Shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def parse_shape(text: str) -> Shape:
    """``"3x3"`` -> ``(3, 3)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"not a kernel shape: {text!r} (expected e.g. 3x3 or 1x3)")
    return int(match[1]), int(match[2])


def filters_dataset(shape: Shape) -> str:
    """Dataset of one kernel shape: ``filters`` for 3x3, ``filters_5x5`` for others."""
    return FILTERS if tuple(shape) == (3, 3) else f"{FILTERS}_{shape_label(shape)}"


def shape_column(shape: Shape) -> str:
    """Per-model filter count column, spelled as published: ``"(3, 3) filters"``."""
    return f"({shape[0]}, {shape[1]}) filters"


def shards_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".shards")


def shard_name(sha256: str, shapes) -> str:
    """Shard file of a model: named by its content hash and the stored shapes."""
    return f"{sha256[:40]}-{'-'.join(shape_label(s) for s in sorted(shapes))}.h5"


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def report_path(db_path: Path) -> Path:
    """The JSON build report beside the database."""
    return db_path.with_name(db_path.name + ".build.json")
