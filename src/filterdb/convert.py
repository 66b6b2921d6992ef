"""Convert a published CNN Filter DB file into a filterdb database, keeping filter ids.

Models are committed in the order of their first filter id, in batches, through
the transactional :class:`~filterdb.store.writer.DatabaseWriter`; filterdb numbers
filters model after model, so the ids stay those of the published file (checked
first: the ranges must cover ``/filters`` without gaps, one model's ranges
consecutive). Filters are streamed model by model in chunks, so memory does not
grow with the file. A killed conversion resumes: a re-run keeps the committed
models and goes on with the next.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatabaseError, FilterDBError
from .store import layout
from .store.entry import ModelEntry
from .store.published import NOT_ASSESSED, PublishedDB, range_gaps
from .store.shard import seal_shard, temporary_shard, write_shard
from .store.writer import DatabaseWriter

#: Filters read at a time (9.4 MB as float32 3x3).
READ_ROWS = 1 << 18
#: Filters per commit by default: a commit rewrites the tables, so not too often.
BATCH_FILTERS = 1 << 26
#: Model columns that are not index fields (the rest of the text columns are kept as such).
NOT_META = {"model", "producer", "format", "weight_dtype", "quality_verdict", "source_path",
            "sha256", "shard"}
SHAPE_COLUMN = re.compile(r"\((\d+), (\d+)\) filters")


@dataclass
class ConvertReport:
    """What a conversion did: models added now, models found committed, filters in all."""

    database: str
    added: int
    present: int
    filters: int


def convert(source, database, batch_filters: int = BATCH_FILTERS, progress=None,
            on_commit: Callable[[int], None] | None = None) -> ConvertReport:
    """Write the published file ``source`` as the filterdb database ``database``.

    Parameters
    ----------
    source : str or Path
        A published CNN Filter DB file.
    database : str or Path
        The master file to create or to complete (resume).
    batch_filters : int
        Commit when at least this many filters wait (and after the last model).
    progress : callable, optional
        ``progress(total=..., initial=...)`` returning an object with ``update(n)``
        and ``close()`` (a ``tqdm``); called once.
    on_commit : callable, optional
        Called with the number of committed models after each commit.

    Returns
    -------
    ConvertReport

    Raises
    ------
    DatabaseError
        When the ids cannot be kept, or ``database`` holds other models.

    Examples
    --------
    >>> convert("cnn-filter-db-v1.0.0.h5", "filters.h5").filters   # doctest: +SKIP
    1464797156
    """
    published = PublishedDB(source)
    problem = range_gaps(published)
    if problem is not None:
        raise DatabaseError(f"{published.path}: cannot keep the published filter ids: {problem}")
    models = published.models.sort_values("filter_id_start", kind="stable")
    names = models["model"].astype(str).tolist()
    database = Path(database)
    with DatabaseWriter(database) as writer:
        if writer.shapes != ((3, 3),):
            raise DatabaseError(f"{database}: stores other shapes than 3x3; convert into a "
                                "new database")
        done = [] if writer.models.empty else writer.models["model"].tolist()
        if done != names[:len(done)]:
            raise DatabaseError(f"{database}: holds other models than the first "
                                f"{len(done)} of {published.path}; convert into a new database")
        total = published.filter_count()
        bar = progress(total=total, initial=writer.filter_count((3, 3))) if progress else None
        pending: list[ModelEntry] = []
        waiting = 0
        try:
            layers = published.layers.groupby("model_id")
            with published.rows() as reader:
                for model in models.iloc[len(done):].to_dict("records"):
                    entry = _entry(published, model, layers.get_group(model["model_id"]),
                                   reader, writer.shards, bar)
                    pending.append(entry)
                    waiting += entry.summary["shape_counts"][(3, 3)]
                    if waiting >= batch_filters:
                        writer.commit(pending)
                        pending, waiting = [], 0
                        if on_commit:
                            on_commit(len(writer.models))
            if pending:
                writer.commit(pending)
                if on_commit:
                    on_commit(len(writer.models))
        finally:
            if bar is not None:
                bar.close()
        writer.remove_orphan_shards()
        if writer.filter_count((3, 3)) != total:
            raise FilterDBError(f"{database}: holds {writer.filter_count((3, 3))} filters, "
                                f"{published.path} {total}")
        return ConvertReport(str(database), len(names) - len(done), len(done), total)


def _entry(published: PublishedDB, model: dict, layers, reader, shards: Path, bar
           ) -> ModelEntry:
    """Stream one model's rows into a sealed shard; its entry for the writer."""
    layers = layers.sort_values("filter_id_start")
    first = int(model["filter_id_start"])
    count = int(model["filter_id_stop"]) - first
    digest = hashlib.sha256(f"filterdb-convert:{model['model']}".encode())
    nonfinite: dict[int, tuple[int, int]] = {}

    def blocks(shape):
        for layer in layers.itertuples():
            nans = infs = 0
            for at in range(layer.filter_id_start, layer.filter_id_stop, READ_ROWS):
                block = reader.read(layer.model_id, at, min(at + READ_ROWS,
                                                           layer.filter_id_stop))
                digest.update(np.ascontiguousarray(block, dtype=np.float32))  # no copy
                nans += int(np.isnan(block).sum())
                infs += int(np.isinf(block).sum())
                if bar is not None:
                    bar.update(len(block))
                yield block
            nonfinite[layer.Index] = (nans, infs)

    rows = []
    for _, layer in layers.iterrows():
        rows.append({k: _plain(v) for k, v in layer.items()
                     if k not in ("model_id", "filter_id_start", "filter_id_stop")})
        rows[-1]["local_start"] = int(layer["filter_id_start"]) - first
    summary = _summary(model, count)
    tmp = temporary_shard(shards)
    write_shard(tmp, {(3, 3): count}, blocks, json.dumps({"summary": _jsonable(summary),
                                                           "layers": rows}), durable=True)
    for row, index in zip(rows, layers.index, strict=True):
        row["nan_count"], row["inf_count"] = nonfinite[index]
    sha256 = digest.hexdigest()
    shard = layout.shard_name(sha256, [(3, 3)])
    seal_shard(tmp, shards / shard)
    meta = {c: str(v) for c, v in model.items()
            if c not in NOT_META and isinstance(v, str)}
    return ModelEntry(model=str(model["model"]), sha256=sha256,
                      source_path=f"{published.path.name}:{model['model']}", shard=shard,
                      meta=meta, summary=summary, layers=rows)


def _summary(model: dict, count: int) -> dict:
    """The model's summary in the build's terms; what the file lacks stays missing."""
    shapes = {(3, 3): count}
    for column, value in model.items():
        match = SHAPE_COLUMN.fullmatch(str(column))
        if match and (int(match[1]), int(match[2])) != (3, 3):
            shapes[(int(match[1]), int(match[2]))] = int(value)
    operators = {c[len(layout.OPERATOR_PREFIX):]: int(v) for c, v in model.items()
                 if str(c).startswith(layout.OPERATOR_PREFIX)}
    return {
        "format": "", "weight_dtype": "", "producer": str(model.get("producer", "")),
        "opset": _plain(model.get("opset", np.nan)), "depth": _plain(model.get("depth", np.nan)),
        "n_layers": np.nan, "total_filters": _plain(model.get("total_filters", np.nan)),
        "3x3_filter_share": _plain(model.get("3x3_filter_share", np.nan)),
        "quality_verdict": NOT_ASSESSED, "degenerated_share": np.nan,
        "random_like_share": np.nan, "shape_counts": dict(sorted(shapes.items())),
        "operator_counts": operators,
    }


def _plain(value):
    """numpy scalars -> Python ones (JSON, and pandas infers the same dtypes)."""
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(summary: dict) -> dict:
    out = dict(summary)
    out["shape_counts"] = [[*shape, n] for shape, n in summary["shape_counts"].items()]
    return out
