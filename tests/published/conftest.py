"""Published-layout files written by the tests: 8 models, 36 conv depths, 3,600 filters.

Model i has 3 + i % 4 conv depths of 100 filters each; model starts are
0, 300, 700, 1200, 1800, 2100, 2500, 3000. Tasks (as written): Classification,
Semantic Segmentation, Classification, GAN-Generator, Segmentation, Object Detection,
Instance Segmentation, Classification.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from filterdb.synthetic_published import published_meta, write_published

N_FILTERS = 3600
N_MODELS = 8
STARTS = (0, 300, 700, 1200, 1800, 2100, 2500, 3000)


@pytest.fixture(scope="session")
def v1_file(tmp_path_factory) -> Path:
    """Version 1.0.0 spellings, /filters float16 (N, 9). Do not modify."""
    path = tmp_path_factory.mktemp("published") / "v1.h5"
    return write_published(path, published_meta(N_FILTERS, N_MODELS), N_FILTERS,
                           dtype=np.float16, flat=True, seed=3)


@pytest.fixture(scope="session")
def v0_file(tmp_path_factory) -> Path:
    """Version 0.1.0 spellings (Datatype), /filters float32 (N, 3, 3). Do not modify."""
    path = tmp_path_factory.mktemp("published") / "v0.h5"
    return write_published(path, published_meta(N_FILTERS, N_MODELS, version="0.1.0"),
                           N_FILTERS, dtype=np.float32, flat=False, seed=3)


def stored(path: Path, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of /filters as float32 (k, 3, 3), read with plain h5py."""
    import h5py

    with h5py.File(path, "r") as handle:
        return handle["filters"][...].reshape(-1, 9)[ids].astype(np.float32).reshape(-1, 3, 3)
