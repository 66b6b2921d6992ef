"""Distribution-shift analysis of filter databases (the published method, out of core).

Scale each filter by its absolute peak, fit the PCA ("eigen-images") from streamed
moments, project, histogram the coefficients per group and component over one shared
range, and compare groups by explained-variance-weighted symmetric KL divergence.

Examples
--------
>>> from filterdb.analysis import analyze                                # doctest: +SKIP
>>> result = analyze("filters.h5", by=["Task", "Visual Category", "depth"])  # doctest: +SKIP
>>> result.groupings["depth"].drift                                       # doctest: +SKIP
"""


# Loaded on first use: ``filterdb analyze`` starts loading the compiled kernels
# (:mod:`.preload`) before pandas and the engine are imported.
_LAZY = {"AnalysisResult": "engine", "GroupingResult": "engine", "analyze": "engine",
         "Grouping": "groups", "slug": "groups", "Basis": "pca"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnalysisResult", "Basis", "Grouping", "GroupingResult", "analyze", "slug"]
