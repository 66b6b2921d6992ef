"""The PCA basis of peak-scaled filters ("eigen-images"), fitted from streamed moments.

A :class:`Basis` can be fitted on one selection (a reference set), saved as JSON
and applied to another selection, so that drifts are measured in one shared basis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .stats import Moments

FORMAT = "filterdb-pca"
FORMAT_VERSION = 1


@dataclass
class Basis:
    """Eigen-images of a set of peak-scaled filters.

    Attributes
    ----------
    n : int
        Filters the basis was fitted on.
    mean : float64 (d,)
        Mean scaled filter (flattened, row-major ``kh x kw``).
    components : float64 (d, d)
        Rows are the eigen-images, by decreasing explained variance. Sign rule: the
        entry of largest absolute value of every row is positive.
    explained_variance_ratio : float64 (d,)
        Eigenvalue / sum of eigenvalues.
    coef_min, coef_max : float64 (d,)
        Range of the projections of the fitted filters per component (NaN when unknown).
    explained_variance : float64 (d,)
        Eigenvalues of the sample covariance (divisor ``n - 1``).
    shape : (kh, kw)
    """

    n: int
    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    coef_min: np.ndarray
    coef_max: np.ndarray
    explained_variance: np.ndarray | None = None
    shape: tuple[int, int] = field(default=(3, 3))

    @property
    def d(self) -> int:
        return len(self.mean)

    @classmethod
    def from_moments(cls, moments: Moments, shape: tuple[int, int] = (3, 3)) -> Basis:
        """Eigen-decomposition of the covariance of ``moments``; range unknown (NaN)."""
        covariance = moments.covariance()
        values, vectors = np.linalg.eigh(covariance)
        order = np.argsort(values)[::-1]
        values = np.clip(values[order], 0.0, None)
        components = orient(vectors[:, order].T)
        total = values.sum()
        ratio = values / total if total > 0 else np.zeros_like(values)
        nan = np.full(len(values), np.nan)
        return cls(n=int(moments.count), mean=moments.mean, components=components,
                   explained_variance_ratio=ratio, coef_min=nan, coef_max=nan.copy(),
                   explained_variance=values, shape=tuple(shape))

    def project(self, x: np.ndarray) -> np.ndarray:
        """Coefficients ``(x - mean) @ components.T`` of scaled rows ``x`` (n, d), float64."""
        x = np.asarray(x, dtype=np.float64)
        return (x - self.mean) @ self.components.T

    def with_range(self, lo: np.ndarray, hi: np.ndarray) -> Basis:
        return Basis(self.n, self.mean, self.components, self.explained_variance_ratio,
                     np.asarray(lo, np.float64), np.asarray(hi, np.float64),
                     self.explained_variance, self.shape)

    def to_dict(self) -> dict:
        """The ``pca.json`` content; components as rows."""
        def floats(a):
            return None if a is None else np.asarray(a, np.float64).tolist()

        return {"format": FORMAT, "version": FORMAT_VERSION, "shape": list(self.shape),
                "n": int(self.n), "mean": floats(self.mean),
                "components": floats(self.components),
                "explained_variance_ratio": floats(self.explained_variance_ratio),
                "explained_variance": floats(self.explained_variance),
                "coef_min": floats(self.coef_min), "coef_max": floats(self.coef_max)}

    @classmethod
    def from_dict(cls, data: dict) -> Basis:
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a filterdb PCA basis (format {data.get('format')!r})")
        try:
            components = np.array(data["components"], dtype=np.float64)
            d = len(components)
            mean = np.array(data["mean"], dtype=np.float64)
            ratio = np.array(data["explained_variance_ratio"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"incomplete PCA basis: {error}") from None
        if components.shape != (d, d) or mean.shape != (d,) or ratio.shape != (d,):
            raise ValueError("PCA basis arrays do not fit together")

        def optional(key):
            value = data.get(key)
            return (np.full(d, np.nan) if value is None
                    else np.array([np.nan if v is None else v for v in value], np.float64))

        variance = data.get("explained_variance")
        shape = tuple(data.get("shape") or (3, 3))
        if shape[0] * shape[1] != d:
            raise ValueError(f"PCA basis shape {shape} does not fit {d} components")
        return cls(n=int(data.get("n", 0)), mean=mean, components=components,
                   explained_variance_ratio=ratio, coef_min=optional("coef_min"),
                   coef_max=optional("coef_max"),
                   explained_variance=None if variance is None else np.array(variance, float),
                   shape=shape)

    def save(self, path) -> Path:
        """Write the basis as JSON (floats round-trip exactly)."""
        path = Path(path)
        data = self.to_dict()
        for key in ("coef_min", "coef_max"):
            data[key] = [None if np.isnan(v) else v for v in data[key]]
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> Basis:
        """Read a basis written by :meth:`save` (e.g. ``pca.json`` of ``filterdb analyze``)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read a PCA basis ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a PCA basis")
        return cls.from_dict(data)


def orient(components: np.ndarray) -> np.ndarray:
    """Flip rows so that the entry of largest absolute value of each row is positive."""
    components = np.array(components, dtype=np.float64)
    peak = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
    components[peak < 0] *= -1
    return components
