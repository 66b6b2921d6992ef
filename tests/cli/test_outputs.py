"""Commands that write files refuse, in one line and before any work, an output that
is part of the database they read or of another database; a file where a folder is
wanted (and the reverse) is one line too."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from filterdb.store import layout
from filterdb.synthetic_published import published_meta, write_published

# each command with the arguments that make it quick
COMMANDS = {
    "datasheet": ["--no-scan"],
    "export-meta": ["--no-scan"],
    "report": ["--no-analysis"],
    "analyze": ["--by", "depth", "--no-figures"],
}


def _digest(db: Path) -> str:
    """sha256 over the master and every shard: any write shows."""
    digest = hashlib.sha256(db.read_bytes())
    for shard in sorted(layout.shards_dir(db).iterdir()):
        digest.update(shard.name.encode() + shard.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def two_databases(small_db, tmp_path):
    """A copy of the small database, and another beside it."""
    copies = []
    for name in ("db.h5", "other.h5"):
        target = tmp_path / name
        shutil.copy2(small_db, target)
        shutil.copytree(layout.shards_dir(small_db), layout.shards_dir(target))
        copies.append(target)
    return copies


@pytest.mark.parametrize("command", COMMANDS)
def test_outputs_inside_a_database_are_refused(two_databases, cli, command, tmp_path):
    db, other = two_databases
    layout.report_path(db).write_text("{}")
    published = write_published(tmp_path / "published.h5", published_meta(40, 2), 40)
    before = {path: _digest(path) for path in two_databases}
    kept = {path: path.read_bytes() for path in (published, layout.report_path(db))}
    shard = next(layout.shards_dir(db).iterdir())
    cases = [
        (db, f"{db}: is part of the database {db}; choose another output"),
        (layout.shards_dir(db), f"{layout.shards_dir(db)}: is part of the database {db}"),
        (shard, f"{shard}: is part of the database {db}"),
        (db.with_name("db.h5.lock"), "db.h5.lock: is part of the database"),
        (layout.report_path(db), "db.h5.build.json: is part of the database"),
        (published, f"{published}: is a filter database file (it holds /filters); not "
                    "overwritten"),
        (other, f"{other}: is part of a filterdb database; not overwritten"),
        (layout.shards_dir(other) / "x",
         f"{layout.shards_dir(other) / 'x'}: is part of a filterdb database"),
    ]
    for output, message in cases:
        result = cli(command, db, "-o", output, *COMMANDS[command])
        assert result.returncode == 2, (output, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("filterdb")]
        assert len(lines) == 1 and message in lines[0], (output, result.stderr)
    assert {path: _digest(path) for path in two_databases} == before
    assert {path: path.read_bytes() for path in kept} == kept


def test_file_and_folder_mix_ups_are_one_line(two_databases, cli, tmp_path):
    db, _ = two_databases
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    result = cli("datasheet", db, "-o", folder, "--no-scan")
    assert result.returncode == 2
    assert result.stderr.strip() == f"filterdb: error: {folder}: is a folder, not a file"
    result = cli("analyze", db, "-o", a_file, "--no-figures")
    assert result.returncode == 2
    assert result.stderr.strip() == f"filterdb: error: {a_file}: is a file, not a folder"
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_cannot_be_written_is_one_line(two_databases, cli, tmp_path, command):
    """An output whose folder is a file (or missing, for a file output): one line naming
    the path, exit status 2, no traceback."""
    db, _ = two_databases
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    output = a_file / ("out" if command in ("analyze", "report") else "out.h5")
    result = cli(command, db, "-o", output, *COMMANDS[command])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("filterdb")]
    assert len(lines) == 1 and lines[0].startswith("filterdb: error: "), result.stderr
    assert str(a_file) in lines[0], lines[0]
    assert a_file.read_text() == "x"
