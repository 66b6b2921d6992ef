"""Loading the pass kernels ahead of the analysis: the right specialisations, no side
effects on later imports, a light ``import filterdb.analysis``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from filterdb.analysis import analyze, fused, passes


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_warm_loads_the_specialisations_a_run_uses(zoo_db):
    passes.warm(9)
    kernels = (fused.moments, fused.coefficient_range, fused.histograms)
    loaded = [list(kernel.signatures) for kernel in kernels]
    assert all(len(signatures) >= 1 for signatures in loaded)
    analyze(zoo_db, by=["Task", "depth"], threads=2)
    analyze(zoo_db, by=["Task"], balanced=200)
    assert [list(kernel.signatures) for kernel in kernels] == loaded


def test_skipped_blas_probe_leaves_imports_working():
    out = run_python("""
        import sys
        from filterdb.analysis import preload
        preload.start(9, skip_blas_probe=True).join()
        from filterdb.analysis import fused
        assert fused.moments.signatures and fused.histograms.signatures
        assert sys.modules.get("scipy.linalg.cython_blas", 0) is not None
        import scipy.linalg.cython_blas
        print("ok")
    """)
    assert out.strip() == "ok"


def test_package_import_is_light():
    out = run_python("""
        import sys
        import filterdb.analysis
        from filterdb.analysis import preload, groups
        print(sorted(m for m in ("numba", "filterdb.analysis.engine") if m in sys.modules))
        filterdb.analysis.analyze
        print("filterdb.analysis.engine" in sys.modules)
    """)
    assert out.split("\n")[:2] == ["[]", "True"]
