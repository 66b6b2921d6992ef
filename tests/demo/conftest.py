"""The demo zoo, trained once per test session in a temporary folder, and its database.

The full zoo (41 models) trains in about a minute on two cores; the tests check the
zoo that ``filterdb demo`` ships, not a stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.demo import ZooResult, make_zoo, zoo_specs


@dataclass
class Demo:
    out: Path
    zoo: ZooResult
    database: Path
    log: list[str]


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Demo:
    """The demo zoo trained into a fresh folder and built with quality metrics. Read only."""
    out = tmp_path_factory.mktemp("demo")
    log: list[str] = []
    zoo = make_zoo(out, zoo_specs(), workers=2, log=log.append)
    database = out / "filters.h5"
    report = build(zoo.zoo, database, zoo.index,
                   BuildOptions(workers=2, shapes=((3, 3), (1, 1), (5, 5))))
    assert report.count("added") == len(zoo.rows), report.to_dict()["summary"]
    assert not report.findings
    return Demo(out, zoo, database, log)


@pytest.fixture(scope="session")
def models(demo):
    """The database's models table (index columns, format, quality verdicts)."""
    return filterdb.open(demo.database).models
