"""``python slow_cli.py ARGS``: the filterdb CLI, slowed so a signal can land mid-build.

Generated models build in milliseconds, so an affordable zoo would be done before
a kill could land between commits. Each model read waits ``FILTERDB_TEST_DELAY``
seconds, and a commit starts whenever a model is ready and none is in flight (no
spacing of commits to amortise their cost), so a run has many commit points to be
interrupted at.

A one-commit command (``release``, ``remove``) spends milliseconds in its writer
and most of its run starting Python. With ``FILTERDB_TEST_WRITE_DELAY`` each step
of writing the temporary master (each table, its fsync) waits that long, and with
``FILTERDB_TEST_COMMITTED_DELAY`` the fsync after its rename over the master
(which for ``remove`` precedes deleting the model's shard), so random kills land
before, inside and after the commit.
``FILTERDB_TEST_TODAY`` pins the changelog date, so runs either side of midnight
give the same bytes. Nothing else of the CLI is changed.
"""

import os
import runpy
import time

# As the CLI does before its imports: numpy starts no BLAS threads, so the build's
# process has one thread and forks its workers, which inherit the slowed steps below.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import filterdb.build  # noqa: E402
import filterdb.extraction as extraction  # noqa: E402
import filterdb.store.dataset as dataset  # noqa: E402
import filterdb.store.writer as writer  # noqa: E402

DELAY = float(os.environ.get("FILTERDB_TEST_DELAY", "0.1"))
WRITE_DELAY = float(os.environ.get("FILTERDB_TEST_WRITE_DELAY", "0"))
COMMITTED_DELAY = float(os.environ.get("FILTERDB_TEST_COMMITTED_DELAY", "0"))
TODAY = os.environ.get("FILTERDB_TEST_TODAY")
_ordered, _build = extraction.ordered_layers, filterdb.build.build
_commit = filterdb.build._Committer._commit


def _slow_ordered(record):
    time.sleep(DELAY)
    return _ordered(record)


def _eager_build(zoo, database, index=None, options=None, on_outcome=None, **kwargs):
    options.commit_seconds = 0.0
    return _build(zoo, database, index, options, on_outcome, **kwargs)


def _commit_unspaced(self, entries):
    result = _commit(self, entries)
    self.cost = 0.0
    return result


def _slowed(step, seconds):
    def slow_step(*args):
        time.sleep(seconds)
        return step(*args)
    return slow_step


extraction.ordered_layers = _slow_ordered
filterdb.build._Committer._commit = _commit_unspaced
filterdb.build.build = _eager_build
for name, seconds in (("_canonical_blocks", WRITE_DELAY), ("_fsync", WRITE_DELAY),
                      ("_fsync_dir", COMMITTED_DELAY)):
    if seconds:
        setattr(writer, name, _slowed(getattr(writer, name), seconds))
if TODAY:
    dataset._today = lambda: TODAY
runpy.run_module("filterdb", run_name="__main__", alter_sys=True)
