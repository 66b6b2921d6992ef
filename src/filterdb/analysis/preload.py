"""Load the compiled pass kernels in a background thread while the tables are read.

Importing numba and loading the cached machine code of the three pass kernels takes
about half a second, mostly Python work (imports, numba's type registries) but partly
in LLVM and file reads, which run without Python's lock. Started first thing by
``filterdb analyze``, the loading overlaps with opening the database and reading its
tables instead of following them.

numba probes for BLAS once, when its numpy support is first loaded, by importing
``scipy.linalg`` (about 0.1 s); the kernels use no BLAS. With ``skip_blas_probe``
the probe fails fast instead, so numba's own ``np.dot``-like helpers in this process
fall back to their plain loops (the linear-algebra functions still check for scipy
when they are compiled). Only for a process that imports no ``scipy.linalg`` while the
thread runs: the CLI without figures.
"""

from __future__ import annotations

import sys
import threading

_PROBE = "scipy.linalg.cython_blas"


def start(d: int = 9, skip_blas_probe: bool = False) -> threading.Thread:
    """Load the kernels for rows of ``d`` values in a daemon thread; returns the thread.

    Parameters
    ----------
    d : int, default 9
        Values per filter (``kh * kw``); the kernels are specialised on it.
    skip_blas_probe : bool, default False
        Make numba's BLAS probe fail fast (see the module); only when nothing imports
        ``scipy.linalg`` meanwhile.
    """
    thread = threading.Thread(target=load, args=(d, skip_blas_probe),
                              name="filterdb-kernels", daemon=True)
    thread.start()
    return thread


def load(d: int = 9, skip_blas_probe: bool = False) -> None:
    """Import the kernels and call each once on an empty block (loads its machine code)."""
    blocked = skip_blas_probe and "scipy.linalg" not in sys.modules \
        and _PROBE not in sys.modules
    if blocked:
        sys.modules[_PROBE] = None  # an import of a None entry raises ImportError at once
    try:
        from . import passes

        passes.warm(d)
    finally:
        if blocked and sys.modules.get(_PROBE, 0) is None:
            del sys.modules[_PROBE]
