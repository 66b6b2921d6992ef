"""Pass directions: a pass whose merge is order-free runs against the one before it, so
that with filters larger than the page cache it starts on the rows still cached."""

from __future__ import annotations

import numpy as np
import pytest

import filterdb
from filterdb.analysis import analyze, engine


@pytest.fixture
def visits(monkeypatch):
    """The first filter id of every task, per pass kind, in the order the tasks ran."""
    seen: dict[str, list[int]] = {}
    task = engine._task

    def recording(spec, payload):
        seen.setdefault(spec.kind, []).append(int(payload["start"][0]))
        return task(spec, payload)

    monkeypatch.setattr(engine, "_task", recording)
    return seen


def _forward_only(monkeypatch):
    """Every pass in task order, as before passes alternated."""
    run_pass = engine._run_pass
    monkeypatch.setattr(engine, "_run_pass",
                        lambda *args, backward=False, **kw: run_pass(*args, **kw))


def _direction(starts: list[int]) -> str:
    assert len(starts) > 3  # several tasks, or the order says nothing
    if starts == sorted(starts):
        return "forward"
    assert starts == sorted(starts, reverse=True)
    return "backward"


def test_fitted_range_pass_runs_backward_with_equal_results(zoo_db, visits, monkeypatch):
    db = filterdb.open(zoo_db)
    result = analyze(db, by=["Task", "depth"], chunk_rows=1000, threads=1)
    assert [_direction(visits[k]) for k in ("moments", "range", "hist")] == \
        ["forward", "backward", "forward"]
    assert sorted(visits["range"]) == visits["moments"] == visits["hist"]
    visits.clear()
    _forward_only(monkeypatch)
    forward = analyze(db, by=["Task", "depth"], chunk_rows=1000, threads=1)
    assert _direction(visits["range"]) == "forward"
    np.testing.assert_array_equal(result.basis.coef_min, forward.basis.coef_min)
    np.testing.assert_array_equal(result.basis.coef_max, forward.basis.coef_max)
    np.testing.assert_array_equal(result.bin_edges, forward.bin_edges)
    for name in ("Task", "depth"):
        np.testing.assert_array_equal(result.groupings[name].raw_counts,
                                      forward.groupings[name].raw_counts)


def test_given_basis_histogram_pass_runs_backward(zoo_db, visits, monkeypatch):
    db = filterdb.open(zoo_db)
    basis = analyze(db, by=[], threads=1).basis
    visits.clear()
    result = analyze(db, by=["Task"], basis=basis, chunk_rows=1000, threads=2)
    assert "moments" not in visits
    assert [_direction(visits[k]) for k in ("range", "hist")] == ["forward", "backward"]
    _forward_only(monkeypatch)
    forward = analyze(db, by=["Task"], basis=basis, chunk_rows=1000, threads=2)
    np.testing.assert_array_equal(result.groupings["Task"].raw_counts,
                                  forward.groupings["Task"].raw_counts)
