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

from .engine import AnalysisResult, GroupingResult, analyze
from .groups import Grouping, slug
from .pca import Basis

__all__ = ["AnalysisResult", "Basis", "Grouping", "GroupingResult", "analyze", "slug"]
