"""Files in the published CNN Filter DB layout, for tests and benchmarks.

:func:`published_meta` makes a ``/meta`` table shaped like the published one
(MultiIndex ``model_id, conv_depth, conv_depth_norm``; inclusive ``"start:end"``
``filter_ids``; 0.1.0 spells the visual category ``Datatype``); :func:`write_published`
writes it with ``DataFrame.to_hdf(..., format="table")`` beside ``/filters``,
written in chunks so multi-GB files need little memory.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

#: Tasks as 1.0.0 spells them, segmentation inconsistently on purpose.
TASKS = ("Classification", "Semantic Segmentation", "Classification", "GAN-Generator",
         "Segmentation", "Object Detection", "Instance Segmentation", "Classification")
CATEGORIES = ("natural", "natural", "handwriting", "faces", "medical xray", "natural")
#: Rows per write of /filters.
WRITE_ROWS = 1 << 20


def published_meta(n_filters: int, n_models: int, version: str = "1.0.0",
                   seed: int = 0) -> pd.DataFrame:
    """A published-style ``/meta`` for ``n_filters`` rows over ``n_models`` models.

    Model ``i`` has ``3 + i % 4`` conv depths; filters are split evenly (the rest to
    the last depth of the last model), ids contiguous in model order.

    Examples
    --------
    >>> meta = published_meta(1000, 4)
    >>> meta["filter_ids"].iloc[0], meta.index.names
    ('0:54', FrozenList(['model_id', 'conv_depth', 'conv_depth_norm']))
    """
    if n_models < 1 or n_filters < 1:
        raise ValueError("need at least one model and one filter")
    depths = [3 + i % 4 for i in range(n_models)]
    n_rows = sum(depths)
    if n_filters < n_rows:
        raise ValueError(f"{n_filters} filters cannot fill {n_rows} conv depths")
    sizes = np.full(n_rows, n_filters // n_rows, dtype=np.int64)
    sizes[-1] += n_filters - sizes.sum()
    ends = np.cumsum(sizes)
    rng = np.random.default_rng(seed)
    rows, at = [], 0
    category = "Datatype" if version == "0.1.0" else "Visual Category"
    for model_id, count in enumerate(depths):
        model_sizes = sizes[at:at + count]
        for conv_depth in range(count):
            end = int(ends[at + conv_depth])
            start = end - int(model_sizes[conv_depth])
            rows.append({
                "model_id": model_id, "conv_depth": conv_depth,
                "conv_depth_norm": conv_depth / (count - 1),
                "model": f"model-{model_id:04d}", "producer": "pytorch 1.9",
                "op_set": 11 + model_id % 3, "depth": 10 * count,
                "Name": f"Net{model_id}", "Paper": "", "Pretraining-Dataset": "",
                "Training-Dataset": "ImageNet1k", category: CATEGORIES[model_id % len(
                    CATEGORIES)],
                "Task": TASKS[model_id % len(TASKS)], "Accessible": "torchvision",
                "Dataset URL": "https://example.org",
                "filter_ids": f"{start}:{end - 1}",
                "total_filters": int(model_sizes.sum()) + 100 * (model_id + 1),
                "3x3_filter_share": float(model_sizes.sum()
                                          / (model_sizes.sum() + 100 * (model_id + 1))),
                "(1, 1) filters": 100 * (model_id + 1),
                "(3, 3) filters": int(model_sizes.sum()),
                "Conv": count + 1, "Relu": count, "Add": int(rng.integers(0, 5)),
            })
        at += count
    return pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm"])


def write_published(path, meta: pd.DataFrame, n_filters: int, dtype=np.float16,
                    flat: bool = True, seed: int = 0) -> Path:
    """Write ``/filters`` ((N, 9) when ``flat`` else (N, 3, 3), of ``dtype``) and ``/meta``.

    Row ``i`` of ``/filters`` is row ``i % 2**20`` of one seeded normal pool, scaled
    by ``1 + (i // 2**20) % 7``, so chunks differ without costing a draw each.

    Examples
    --------
    >>> write_published(tmp / "v1.h5", published_meta(1000, 4), 1000)  # doctest: +SKIP
    """
    path = Path(path)
    pool = np.random.default_rng(seed).standard_normal(
        (min(n_filters, WRITE_ROWS), 9)).astype(np.float32)
    shape = (n_filters, 9) if flat else (n_filters, 3, 3)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("filters", shape=shape, dtype=dtype,
                                        chunks=(min(n_filters, 1 << 16), *shape[1:]))
        for start in range(0, n_filters, WRITE_ROWS):
            rows = min(WRITE_ROWS, n_filters - start)
            block = pool[:rows] * (1 + (start // WRITE_ROWS) % 7)
            # cast here: numpy converts to float16 much faster than HDF5 does
            dataset[start:start + rows] = block.astype(dtype).reshape(rows, *shape[1:])
    meta.to_hdf(path, key="meta", format="table")
    return path
