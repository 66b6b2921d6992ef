"""Fault injection: writing commands killed with SIGKILL at random moments, or stopped
with Ctrl-C, leave a committed state, and running the command again ends in the same
bytes as an uninterrupted run.

A build or append keeps a whole prefix of the models (:class:`Scenario`,
``SCENARIOS``); a one-commit command (``release``, ``remove``) leaves the database
either as it was or as the whole command makes it (:class:`OneCommit`,
``ONE_COMMITS``). A new writing command is tested by adding one entry to either.
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
from filterdb.cli import main
from filterdb.store import dataset, layout

from .harness import HANG_GUARD, N_BASE, N_MODELS, SLOW_CLI, Workspace, copy_database
from .integrity import check_database, check_prefix, database_digest


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


def _run_interrupted(argv: list, moment: float, signum: int,
                     env: dict | None = None) -> subprocess.CompletedProcess:
    """Start the slowed CLI, send ``signum`` after ``moment`` seconds, wait for the end."""
    proc = subprocess.Popen([sys.executable, SLOW_CLI, *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
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


def _assert_no_leftovers(db: Path) -> None:
    leftovers = {p.name for p in db.parent.iterdir()} - {
        db.name, layout.shards_dir(db).name, layout.lock_path(db).name,
        layout.report_path(db).name}
    assert not leftovers, f"temporary files left behind: {leftovers}"


def _assert_resumes_to_clean(ws: Workspace, scenario: Scenario, db: Path) -> None:
    scenario.resume(ws, db)
    assert database_digest(db) == database_digest(ws.clean)
    _assert_no_leftovers(db)


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


TODAY = "2026-01-02"  # changelog date of every run, so reruns here match byte for byte
#: The slowed writer of a one-commit command: 4 steps of 0.05 s writing the temporary
#: master, 0.3 s between its rename over the master and the end of the commit.
ONE_COMMIT_ENV = {"FILTERDB_TEST_WRITE_DELAY": "0.05", "FILTERDB_TEST_COMMITTED_DELAY": "0.3",
                  "FILTERDB_TEST_TODAY": TODAY}


@dataclass(frozen=True)
class OneCommit:
    """A command that changes the database in one commit, run on the clean build."""

    name: str
    argv: Callable[[Workspace, Path], list]


def _removed_model(ws: Workspace) -> str:
    """A model in the middle, so the removal shifts the ids of the models after it."""
    return str(pd.read_hdf(ws.clean, layout.MODELS)["model"].iloc[N_BASE - 2])


ONE_COMMITS = [
    OneCommit("release", lambda ws, db: ["release", db, "--version", "1.0.0", "--comment",
                                         "first release", "--doi", "10.5281/zenodo.1"]),
    OneCommit("remove", lambda ws, db: ["remove", db, "--model", _removed_model(ws),
                                        "--reason", "weights leaked from the test set"]),
]
OLD, NEW, NEW_ORPHAN = "old", "new", "new, removed model's shard not yet deleted"


def _run_in_process(ws: Workspace, command: OneCommit, db: Path) -> None:
    assert main([str(a) for a in command.argv(ws, db)]) == 0


def _new_state(ws: Workspace, command: OneCommit, db: Path) -> dict[str, str]:
    """Digest of the clean build after the command, run here uninterrupted."""
    copy_database(ws.clean, db)
    _run_in_process(ws, command, db)
    check_database(db)
    return database_digest(db)


def _state(db: Path, old: dict[str, str], new: dict[str, str]) -> str:
    """Which whole state the database is in, asserting it is one: the master and every
    shard as before the command, or the master of after it with every shard it names;
    besides, only the removed model's shard may be left (the commit came before its
    deletion; it is unreferenced, so harmless, and the next writer deletes it)."""
    got = database_digest(db)
    if got["master"] == old["master"]:
        assert got == old, "a shard changed although the master is the old one"
        return OLD
    assert got["master"] == new["master"], "the master is neither the old nor the new one"
    assert {name: got.get(name) for name in new} == new, "a shard of the new state differs"
    extra = set(got) - set(new)
    assert extra <= set(old) - set(new), f"unexpected files: {extra}"
    return NEW_ORPHAN if extra else NEW


def _assert_rerun_completes(ws: Workspace, command: OneCommit, db: Path,
                            new: dict[str, str]) -> None:
    _run_in_process(ws, command, db)
    assert database_digest(db) == new
    _assert_no_leftovers(db)


@pytest.mark.parametrize("command", ONE_COMMITS, ids=lambda c: c.name)
def test_sigkill_during_one_commit_leaves_the_old_or_the_new_state(workspace, command,
                                                                   tmp_path, monkeypatch):
    """SIGKILL at seeded moments drawn uniformly over the slowed command's whole run
    (start-up, writing the new master, between its rename and the end), until KILLS
    landed mid-run: each time the database is the old or the new state, whole, passes
    every check including ``filterdb verify``, and running the command again ends in
    the uninterrupted run's bytes."""
    monkeypatch.setattr(dataset, "_today", lambda: TODAY)
    old = database_digest(workspace.clean)
    new = _new_state(workspace, command, tmp_path / "reference" / "db.h5")
    calibrate = tmp_path / "calibrate" / "db.h5"
    copy_database(workspace.clean, calibrate)
    began = time.monotonic()
    done = subprocess.run([sys.executable, SLOW_CLI, *map(str, command.argv(workspace,
                                                                           calibrate))],
                          capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, **ONE_COMMIT_ENV})
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert database_digest(calibrate) == new
    rng = np.random.default_rng([8, len(SCENARIOS) + ONE_COMMITS.index(command)])
    killed, states = 0, {OLD: 0, NEW: 0, NEW_ORPHAN: 0}
    for attempt in range(MAX_ATTEMPTS):
        db = tmp_path / f"run{attempt}" / "db.h5"
        copy_database(workspace.clean, db)
        began = time.monotonic()
        done = _run_interrupted(command.argv(workspace, db), rng.uniform(0.0, seconds),
                                signal.SIGKILL, ONE_COMMIT_ENV)
        if done.returncode == -signal.SIGKILL:
            killed += 1
        else:  # it ended before its moment: narrow the window, as for builds
            assert done.returncode == 0, done.stderr
            seconds = min(seconds, time.monotonic() - began)
        states[_state(db, old, new)] += 1
        check_database(db)
        _assert_rerun_completes(workspace, command, db, new)
        shutil.rmtree(db.parent)
        if killed == KILLS:
            break
    assert killed == KILLS, f"only {killed} of {MAX_ATTEMPTS} runs were killed mid-run"
    # Kills landed both before and after the commit.
    assert states[OLD] and states[NEW] + states[NEW_ORPHAN], states


def _tmp_master_exists(db: Path) -> bool:
    return any(db.parent.glob(f".{db.name}.*.tmp"))


@pytest.mark.parametrize("moment", ["writing", "committed"])
@pytest.mark.parametrize("command", ONE_COMMITS, ids=lambda c: c.name)
def test_ctrl_c_during_one_commit_stops_cleanly(workspace, command, moment, tmp_path,
                                                monkeypatch):
    """Ctrl-C while the new master is written (the old state stays) or right after its
    rename (the new state stands): exit 130, one last line saying the database is
    whole and to run the command again, which completes it."""
    monkeypatch.setattr(dataset, "_today", lambda: TODAY)
    old = database_digest(workspace.clean)
    new = _new_state(workspace, command, tmp_path / "reference" / "db.h5")
    db = tmp_path / "run" / "db.h5"
    copy_database(workspace.clean, db)
    inode = db.stat().st_ino
    reached = {"writing": lambda: _tmp_master_exists(db),
               "committed": lambda: db.stat().st_ino != inode}[moment]
    proc = subprocess.Popen([sys.executable, SLOW_CLI, *map(str, command.argv(workspace, db))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_COMMIT_ENV})
    while proc.poll() is None and not reached():
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"filterdb: {db}: {command.name} interrupted;"), last
    assert "never in between. Run the same command again to complete it." in last, last
    expected = {"writing": {OLD}, "committed": {NEW, NEW_ORPHAN}}[moment]
    assert _state(db, old, new) in expected
    check_database(db)
    _assert_rerun_completes(workspace, command, db, new)


def _children(pid: int) -> set[int]:
    """The process's child processes (Linux)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_with_a_killed_build(workspace, tmp_path):
    """SIGKILL of the build's process ends its worker: none is left waiting for tasks
    (holding the output pipes open, so a caller reading them would wait for ever)."""
    db = tmp_path / "db.h5"
    proc = subprocess.Popen([sys.executable, SLOW_CLI, *map(str, _build_argv(workspace, db))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "FILTERDB_TEST_DELAY": "0.3"})
    while proc.poll() is None and not db.exists():  # workers are up, models committing
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert len(workers) == 1  # --workers defaults to 1: one worker process
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + HANG_GUARD
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
