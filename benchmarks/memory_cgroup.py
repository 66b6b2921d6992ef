"""A memory cgroup for benchmark runs whose data must not fit in the page cache.

Page cache pages count against the memory limit of the cgroup of the process that
reads them in, so a run started in a cgroup with a limit below its data's size reads
like a run on a machine whose RAM is smaller than the data (the published CNN Filter
DB's 49 GB on this 24 GB machine), without making 49 GB of data. Needs a writable
memory controller (cgroup v1, or v2 with ``memory`` in the parent's
``cgroup.subtree_control``), as root in a VM or container usually has.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_memory_cgroup() -> tuple[Path, str] | None:
    """The folder of this process's memory cgroup and the name of its limit file."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            return ROOT / "memory" / path.lstrip("/"), "memory.limit_in_bytes"
    for line in lines:
        if line.startswith("0::"):  # v2
            folder = ROOT / line[3:].lstrip("/")
            control = folder / "cgroup.subtree_control"
            if control.exists() and "memory" in control.read_text().split():
                return folder, "memory.max"
    return None


class MemoryCgroup:
    """A child cgroup with a memory limit; ``procs`` is the file that moves a process in.

    Use as a context manager: it is removed on exit (its processes have ended by then).
    """

    def __init__(self, limit_bytes: int):
        own = _own_memory_cgroup()
        if own is None:
            raise OSError("no memory cgroup controller found")
        parent, limit_file = own
        self.folder = parent / f"filterdb-bench-{os.getpid()}"
        self.folder.mkdir()
        try:
            (self.folder / limit_file).write_text(str(int(limit_bytes)))
        except OSError:
            self.folder.rmdir()
            raise
        self.procs = self.folder / "cgroup.procs"
        self.limit_bytes = int(limit_bytes)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc) -> None:
        for _ in range(50):  # a process that just exited may still be listed briefly
            try:
                self.folder.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def available() -> str | None:
    """None when a limited cgroup can be made here, else why not (one line)."""
    try:
        with MemoryCgroup(1 << 30):
            return None
    except OSError as error:
        return f"cannot make a memory cgroup ({error.strerror or error})"
