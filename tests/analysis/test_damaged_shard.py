"""A missing, truncated or corrupt shard: one clear error naming the file, no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import filterdb
from filterdb.analysis import analyze
from filterdb.errors import DatabaseError
from filterdb.store import layout


def _damage(zoo_db, tmp_path, how: str):
    """A copy of the database with its second model's shard damaged; (db, shard path)."""
    db = tmp_path / "filters.h5"
    shutil.copy(zoo_db, db)
    shutil.copytree(layout.shards_dir(zoo_db), layout.shards_dir(db))
    shard = layout.shards_dir(db) / filterdb.open(db).models["shard"].iloc[1]
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        with open(shard, "r+b") as handle:
            handle.truncate(shard.stat().st_size // 2)
    else:  # not HDF5 at all
        shard.write_bytes(b"not a shard" * 100)
    return db, shard


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage"])
def test_reads_name_the_damaged_shard(zoo_db, tmp_path, how):
    db, shard = _damage(zoo_db, tmp_path, how)
    with pytest.raises(DatabaseError, match="cannot read this shard") as raised:
        filterdb.open(db).select().read()
    assert str(shard) in str(raised.value)
    with pytest.raises(DatabaseError, match="cannot read this shard"):
        analyze(db, by=["Task"])
    # the models before it still read
    first = filterdb.open(db).models["model"].iloc[0]
    assert len(filterdb.open(db).select(model=first).read()) > 0


def test_cli_analyze_reports_one_line(zoo_db, tmp_path):
    db, shard = _damage(zoo_db, tmp_path, "truncated")
    done = subprocess.run([sys.executable, "-m", "filterdb", "analyze", str(db), "--by", "Task",
                           "--no-figures", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("filterdb: error: ") and str(shard) in lines[-1]
    assert "Traceback" not in done.stderr
