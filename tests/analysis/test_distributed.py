"""Chunk tasks on a dask.distributed LocalCluster of 2 worker processes equal the local run."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from filterdb.analysis import analyze

BY = ["Task", "depth", "model"]


def assert_same(local, remote, rtol=1e-9):
    assert remote.n_filters == local.n_filters
    for field in ("mean", "components", "explained_variance_ratio", "coef_min", "coef_max"):
        np.testing.assert_allclose(getattr(remote.basis, field), getattr(local.basis, field),
                                   rtol=rtol, atol=1e-15)
    np.testing.assert_allclose(remote.bin_edges, local.bin_edges, rtol=rtol)
    np.testing.assert_array_equal(remote.density[0], local.density[0])
    for name, grouping in local.groupings.items():
        other = remote.groupings[name]
        assert other.labels == grouping.labels
        np.testing.assert_array_equal(other.raw_counts, grouping.raw_counts)
        assert list(other.drift.index) == list(grouping.drift.index)
        np.testing.assert_allclose(other.drift.to_numpy(), grouping.drift.to_numpy(),
                                   rtol=rtol, atol=0)
        assert other.counts.equals(grouping.counts)
        if grouping.intervals is not None:
            np.testing.assert_allclose(other.intervals[["low", "high", "mean"]].to_numpy(),
                                       grouping.intervals[["low", "high", "mean"]].to_numpy(),
                                       rtol=rtol)


def test_cluster_equals_local(zoo_db, dask_client):
    options = {"by": BY, "chunk_rows": 700, "balanced": 400, "bootstrap": 10, "seed": 2}
    local = analyze(zoo_db, **options)
    remote = analyze(zoo_db, scheduler=dask_client, **options)
    assert_same(local, remote)
    assert len(dask_client.nthreads()) == 2


def test_scheduler_address_and_given_basis(zoo_db, dask_client, tmp_path):
    basis = analyze(zoo_db, by=[], where={"Task": "Classification"}).basis
    options = {"by": ["Visual Category"], "chunk_rows": 1500, "basis": basis,
               "where": {"Task": ["Classification", "Segmentation"]}}
    local = analyze(zoo_db, **options)
    remote = analyze(zoo_db, scheduler=dask_client.scheduler.address, **options)
    assert_same(local, remote)


def test_unreachable_scheduler_is_a_value_error(zoo_db):
    # nothing listens on port 1; the CLI turns the ValueError into one line
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ValueError, match=r"scheduler 'tcp://127.0.0.1:1': cannot connect"):
        analyze(zoo_db, by=["Task"], scheduler="tcp://127.0.0.1:1")
