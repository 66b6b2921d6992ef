"""``python slow_cli.py ARGS``: the filterdb CLI, slowed so a signal can land mid-build.

Generated models build in milliseconds, so an affordable zoo would be done before
a kill could land between commits. Each model read waits ``FILTERDB_TEST_DELAY``
seconds, and a commit starts whenever a model is ready and none is in flight (no
spacing of commits to amortise their cost), so a run has many commit points to be
interrupted at. Nothing else of the CLI is changed.
"""

import os
import runpy
import time

import filterdb.build
import filterdb.extraction as extraction

DELAY = float(os.environ.get("FILTERDB_TEST_DELAY", "0.1"))
_ordered, _build = extraction.ordered_layers, filterdb.build.build
_commit = filterdb.build._Committer._commit


def _slow_ordered(record):
    time.sleep(DELAY)
    return _ordered(record)


def _eager_build(zoo, database, index=None, options=None, on_outcome=None):
    options.commit_seconds = 0.0
    return _build(zoo, database, index, options, on_outcome)


def _commit_unspaced(self, entries):
    result = _commit(self, entries)
    self.cost = 0.0
    return result


extraction.ordered_layers = _slow_ordered
filterdb.build._Committer._commit = _commit_unspaced
filterdb.build.build = _eager_build
runpy.run_module("filterdb", run_name="__main__", alter_sys=True)
