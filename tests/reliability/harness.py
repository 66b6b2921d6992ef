"""The generated zoo and databases the fault-injection and concurrency tests share."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from filterdb.build import build
from filterdb.store import layout
from filterdb.synthetic import generate_zoo

SLOW_CLI = str(Path(__file__).with_name("slow_cli.py"))
N_MODELS = 12
N_BASE = 6  # models already in the database an append starts from
HANG_GUARD = 120  # seconds a command may take before it counts as hung


@dataclass(frozen=True)
class Workspace:
    """A generated zoo, the database it builds uninterrupted, and an append's start."""

    zoo: Path
    index: Path
    clean: Path  # uninterrupted build of the whole zoo
    base: Path  # the first N_BASE models (in commit order) built alone


def copy_database(source: Path, target: Path) -> None:
    """Copy a database (master and shards) to ``target``, creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    shutil.copytree(layout.shards_dir(source), layout.shards_dir(target))


def make_workspace(root: Path) -> Workspace:
    """Generate the zoo under ``root`` and build its clean and base databases."""
    zoo = root / "zoo"
    index = generate_zoo(zoo, n_models=N_MODELS, widths=(4, 8, 8), depth=3, seed=5)
    later = root / "later"
    later.mkdir()
    names = sorted(p.name for p in zoo.glob("*.onnx"))  # commit order is name order
    for name in names[N_BASE:]:
        (zoo / name).rename(later / name)
    base = root / "base" / "db.h5"
    base.parent.mkdir()
    build(zoo, base, index=index)
    for name in names[N_BASE:]:
        (later / name).rename(zoo / name)
    clean = root / "clean" / "db.h5"
    clean.parent.mkdir()
    build(zoo, clean, index=index)
    return Workspace(zoo, index, clean, base)
