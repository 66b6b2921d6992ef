"""Two writers never interleave (a second build, ``release`` or ``remove`` is refused),
a dead writer's lock is released, and readers that run while a build commits always
see a committed state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

import filterdb
from filterdb.cli import main
from filterdb.store import layout
from filterdb.store.writer import DatabaseWriter

from .harness import HANG_GUARD, N_MODELS, SLOW_CLI, copy_database
from .integrity import check_prefix, database_digest

# A process that takes the writer lock, says so, and holds it until killed.
HOLDER = """
import sys, time
from filterdb.store.writer import DatabaseWriter
writer = DatabaseWriter(sys.argv[1])
print("holding", flush=True)
time.sleep(600)
"""


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "filterdb", *map(str, args)],
                          capture_output=True, text=True, timeout=HANG_GUARD)


def test_second_writer_fails_with_one_line_and_changes_nothing(workspace, tmp_path):
    db = tmp_path / "db.h5"
    copy_database(workspace.base, db)
    before = db.read_bytes()
    with DatabaseWriter(db):
        done = _cli("build", workspace.zoo, "--index", workspace.index, "-o", db)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "locked by a running writer" in lines[0], done.stderr
    assert f"pid {os.getpid()}" in lines[0]  # names the holder
    assert db.read_bytes() == before


def test_release_and_remove_during_a_build_are_refused_and_change_nothing(workspace,
                                                                         tmp_path, capsys):
    """While an append runs, ``release`` and ``remove`` fail at once with the one-line
    lock message naming the build; the build then ends as if they never ran."""
    db = tmp_path / "db.h5"
    copy_database(workspace.base, db)
    first = str(pd.read_hdf(workspace.base, "models")["model"].iloc[0])
    build = subprocess.Popen([sys.executable, SLOW_CLI, "build", workspace.zoo,
                              "--index", workspace.index, "-o", db],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "FILTERDB_TEST_DELAY": "0.3"})
    lock = layout.lock_path(db)
    try:
        # The holder writes its pid into the lock file once it has the lock.
        while build.poll() is None and not (lock.exists()
                                            and lock.read_text() == f"pid {build.pid}"):
            time.sleep(0.01)
        for argv in (["release", db, "--version", "1.0.0", "--comment", "first"],
                     ["remove", db, "--model", first, "--reason", "erratum"]):
            assert main([str(a) for a in argv]) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert lines == [f"filterdb: error: {db}: locked by a running writer "
                             f"(pid {build.pid}); wait for it to finish"]
        _, stderr = build.communicate(timeout=HANG_GUARD)
    finally:
        build.kill()
        build.wait(timeout=HANG_GUARD)
    assert build.returncode == 0, stderr
    assert database_digest(db) == database_digest(workspace.clean)


def test_lock_of_a_killed_writer_is_released(workspace, tmp_path):
    db = tmp_path / "db.h5"
    copy_database(workspace.base, db)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        refused = _cli("build", workspace.zoo, "--index", workspace.index, "-o", db)
        assert refused.returncode == 2 and "locked" in refused.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=HANG_GUARD)
    done = _cli("build", workspace.zoo, "--index", workspace.index, "-o", db)
    assert done.returncode == 0, done.stderr
    assert check_prefix(db, workspace.clean) == N_MODELS


def _start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "filterdb", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _read_with_recipe(db: Path, clean_filters: np.ndarray) -> int:
    """The published recipe, as a user runs it while a build commits; every range the
    meta table names must hold the uninterrupted build's filters. Returns models seen."""
    meta = pd.read_hdf(db, "meta")
    with h5py.File(db, "r") as handle:
        filters = handle["filters"]
        for text in meta["filter_ids"]:
            a, b = (int(v) for v in text.split(":"))
            np.testing.assert_array_equal(filters[a:b + 1], clean_filters[a:b + 1])
    return meta["model"].nunique()


def _read_with_api(db: Path, clean_filters: np.ndarray) -> int:
    """``filterdb.open``: its tables agree with each other and its reads with the
    uninterrupted build. Returns models seen."""
    opened = filterdb.open(db)
    models, layers, meta = opened.models, opened.layers, opened.meta
    assert set(layers["model_id"]) == set(models["model_id"]) == set(meta.index.get_level_values(0))
    n = int(models["(3, 3) filters"].sum())
    np.testing.assert_array_equal(opened.select().read(), clean_filters[:n])
    return len(models)


def test_readers_see_committed_states_while_a_build_commits(workspace, tmp_path):
    db = tmp_path / "db.h5"
    with h5py.File(workspace.clean, "r") as handle:
        clean_filters = handle["filters"][...]
    writer = subprocess.Popen([sys.executable, SLOW_CLI, "build", workspace.zoo,
                               "--index", workspace.index, "-o", db],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "FILTERDB_TEST_DELAY": "0.3"})
    seen, readers = set(), []
    try:
        with tempfile.TemporaryDirectory() as out:
            while writer.poll() is None:
                if not db.exists():
                    continue
                if not readers:  # the CLI readers run beside the loop below
                    readers = [_start_cli("info", db),
                               _start_cli("analyze", db, "-o", out, "--no-figures")]
                seen.add(_read_with_recipe(db, clean_filters))
                seen.add(_read_with_api(db, clean_filters))
            for reader in readers:
                _, stderr = reader.communicate(timeout=HANG_GUARD)
                assert reader.returncode == 0, stderr
    finally:
        writer.kill()
        writer.wait(timeout=HANG_GUARD)
    assert writer.returncode == 0, writer.stderr.read()
    assert readers
    assert len(seen) >= 2, f"reads saw too few states to test isolation: {seen}"
    assert check_prefix(db, workspace.clean) == N_MODELS
