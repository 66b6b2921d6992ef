"""Fault injection: writing commands killed with SIGKILL at random moments, or stopped
with Ctrl-C, leave a database that holds a whole prefix of the models, and running the
command again ends in the same bytes as an uninterrupted run.

A new writing command (``release``, ``remove``) is tested by adding one
:class:`Scenario` to ``SCENARIOS``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filterdb.build import build
from filterdb.store import layout

from .harness import HANG_GUARD, N_BASE, N_MODELS, SLOW_CLI, Workspace, copy_database
from .integrity import check_prefix, database_digest


@dataclass(frozen=True)
class Scenario:
    """A writing command to interrupt: the database it starts from, its command line,
    how to run it again, and how many models must survive any interruption."""

    name: str
    prepare: Callable[[Workspace, Path], None]
    argv: Callable[[Workspace, Path], list]
    resume: Callable[[Workspace, Path], None]
    kept: int


def _build_argv(ws: Workspace, db: Path) -> list:
    return ["build", ws.zoo, "--index", ws.index, "-o", db]


def _build_again(ws: Workspace, db: Path) -> None:
    report = build(ws.zoo, db, index=ws.index)
    assert report.count("failed") == 0 and not report.interrupted


KILLS = 20  # per scenario
MAX_ATTEMPTS = 40  # runs started to land KILLS kills mid-run

SCENARIOS = [
    Scenario("build", lambda ws, db: db.parent.mkdir(parents=True, exist_ok=True), _build_argv,
             _build_again, kept=0),
    Scenario("append", lambda ws, db: copy_database(ws.base, db), _build_argv,
             _build_again, kept=N_BASE),
]


def _run_interrupted(argv: list, moment: float, signum: int) -> subprocess.CompletedProcess:
    """Start the slowed CLI, send ``signum`` after ``moment`` seconds, wait for the end."""
    proc = subprocess.Popen([sys.executable, SLOW_CLI, *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=moment)
    except subprocess.TimeoutExpired:
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _uninterrupted_seconds(ws: Workspace, scenario: Scenario, db: Path) -> float:
    """Run the slowed command to its end once: how long it takes, and that its result
    is the clean build's, byte for byte."""
    scenario.prepare(ws, db)
    began = time.monotonic()
    done = subprocess.run([sys.executable, SLOW_CLI, *map(str, scenario.argv(ws, db))],
                          capture_output=True, text=True, timeout=HANG_GUARD)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert database_digest(db) == database_digest(ws.clean)
    shutil.rmtree(db.parent)
    return seconds


def _assert_resumes_to_clean(ws: Workspace, scenario: Scenario, db: Path) -> None:
    scenario.resume(ws, db)
    assert database_digest(db) == database_digest(ws.clean)
    leftovers = {p.name for p in db.parent.iterdir()} - {
        db.name, layout.shards_dir(db).name, layout.lock_path(db).name,
        layout.report_path(db).name}
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_sigkill_at_random_moments_keeps_a_whole_prefix(workspace, scenario, tmp_path):
    """SIGKILL at seeded moments drawn uniformly over an uninterrupted run, until KILLS
    of them landed mid-run. Run times vary with the machine's load: a run that ends
    before its moment narrows the window to its own duration."""
    seconds = _uninterrupted_seconds(workspace, scenario, tmp_path / "calibrate" / "db.h5")
    rng = np.random.default_rng([8, SCENARIOS.index(scenario)])
    killed, prefixes = 0, set()
    for attempt in range(MAX_ATTEMPTS):
        db = tmp_path / f"run{attempt}" / "db.h5"
        scenario.prepare(workspace, db)
        began = time.monotonic()
        done = _run_interrupted(scenario.argv(workspace, db), rng.uniform(0.0, seconds),
                                signal.SIGKILL)
        if done.returncode == -signal.SIGKILL:
            killed += 1
        else:  # it ended before its moment: the machine got faster, narrow the window
            seconds = min(seconds, time.monotonic() - began)
        if db.exists():
            committed = check_prefix(db, workspace.clean)
            assert committed >= scenario.kept
            prefixes.add(committed)
        else:
            assert scenario.kept == 0
        _assert_resumes_to_clean(workspace, scenario, db)
        shutil.rmtree(db.parent)
        if killed == KILLS:
            break
    assert killed == KILLS, f"only {killed} of {MAX_ATTEMPTS} runs were killed mid-run"
    # The kills must have landed at several different commit points.
    assert len(prefixes) >= 3, f"kills landed at too few commit points: {prefixes}"


def _ctrl_c_after_first_commit(argv: list, db: Path) -> subprocess.CompletedProcess:
    """Start the slowed CLI, send SIGINT once it has committed (the master was replaced:
    a new inode), wait for the end. Models take 0.3 s each, so most are still to do."""
    before = db.stat().st_ino if db.exists() else None
    proc = subprocess.Popen([sys.executable, SLOW_CLI, *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FILTERDB_TEST_DELAY": "0.3"})
    while proc.poll() is None and not (db.exists() and db.stat().st_ino != before):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(workspace, scenario, tmp_path):
    db = tmp_path / "db.h5"
    scenario.prepare(workspace, db)
    done = _ctrl_c_after_first_commit(scenario.argv(workspace, db), db)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "interrupted" in last and "again to resume" in last, last
    committed = check_prefix(db, workspace.clean)
    assert scenario.kept < committed < N_MODELS
    assert f"{committed - scenario.kept} model(s) committed" in last
    _assert_resumes_to_clean(workspace, scenario, db)
    assert len(pd.read_hdf(db, "models")) == N_MODELS
