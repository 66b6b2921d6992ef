"""Integrity checks of a database at rest, shared by the reliability tests.

The checks open the master several times, so they are for a database no writer is
changing (after a kill, after a build); readers racing a writer are tested apart.

:func:`check_database` is what every fault-injection and concurrency test runs on
a database it did not see being written. ``CHECKS`` lists the independent checks,
``filterdb verify DB`` among them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from filterdb.cli import main
from filterdb.store import layout


def check_recipe(db: Path) -> None:
    """The published recipe opens the database: h5py for /filters, pandas for /meta."""
    with h5py.File(db, "r") as handle:
        filters = handle["filters"][...]
        assert int(handle.attrs["n_models"]) == len(pd.read_hdf(db, layout.MODELS))
    meta = pd.read_hdf(db, "meta")
    for text in meta["filter_ids"]:
        start, end = (int(v) for v in text.split(":"))
        assert 0 <= start <= end < len(filters)
    assert not np.isnan(filters).any(), "NaN fill: a shard behind /filters is missing"


def check_invariants(db: Path) -> None:
    """Row counts agree, ids are contiguous, every committed model's shard is present."""
    models = pd.read_hdf(db, layout.MODELS)
    layers = pd.read_hdf(db, layout.LAYERS)
    with h5py.File(db, "r") as handle:
        n_filters = len(handle["filters"])
    assert list(models["model_id"]) == list(range(len(models)))
    assert models["model"].is_unique and models["sha256"].is_unique
    counts = models["(3, 3) filters"].to_numpy()
    starts, stops = models["filter_id_start"].to_numpy(), models["filter_id_stop"].to_numpy()
    assert (stops - starts == counts).all()
    assert (starts == np.cumsum(counts) - counts).all()
    assert int(counts.sum()) == n_filters
    assert set(layers["model_id"]) <= set(models["model_id"])
    three = layers[(layers["kh"] == 3) & (layers["kw"] == 3)].sort_values("filter_id_start")
    assert int(three["n_filters"].sum()) == n_filters
    layer_starts, layer_stops = (three[c].to_numpy() for c in ("filter_id_start",
                                                                "filter_id_stop"))
    assert (layer_starts[1:] == layer_stops[:-1]).all()
    shards = layout.shards_dir(db)
    for name in models["shard"]:
        assert (shards / name).is_file(), f"shard {name} of a committed model is missing"


def check_verify(db: Path) -> None:
    """``filterdb verify DB`` passes: exit 0, shard checksums and duplicate scan included.

    Run in this process (the same code path as the command, without a second
    interpreter start per check) so every kill of every scenario can afford it.
    """
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["verify", str(db)])
    assert code == 0, output.getvalue()
    assert output.getvalue().startswith(f"{db}: OK: "), output.getvalue()


#: Independent whole-database checks.
CHECKS = (check_recipe, check_invariants, check_verify)


def check_database(db: Path) -> pd.DataFrame:
    """Run every check in :data:`CHECKS`; returns the committed models table."""
    for check in CHECKS:
        check(db)
    return pd.read_hdf(db, layout.MODELS)


def check_prefix(db: Path, reference: Path) -> int:
    """The database holds exactly the first k models of the uninterrupted ``reference``
    build, each whole, with the same ids and filters; returns k."""
    models = check_database(db)
    expected = pd.read_hdf(reference, layout.MODELS)
    k = len(models)
    assert k <= len(expected)
    pd.testing.assert_frame_equal(models, expected.iloc[:k][list(models.columns)],
                                  check_dtype=False)
    n = int(models["(3, 3) filters"].sum())
    with h5py.File(db, "r") as got, h5py.File(reference, "r") as want:
        np.testing.assert_array_equal(got["filters"][:n], want["filters"][:n])
    return k


def database_digest(db: Path) -> dict[str, str]:
    """sha256 of the master file and of every file in its shards folder, by name."""
    files = [db, *sorted(layout.shards_dir(db).iterdir())]
    return {("master" if p == db else p.name): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}
