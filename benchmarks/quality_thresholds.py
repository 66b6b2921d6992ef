"""Measure the quality metrics on trained and freshly initialised 3x3 layers (issue 3).

Usage::

    .venv/bin/python benchmarks/quality_thresholds.py [--draws 5] [--markdown]

Groups of layers:

* trained: every 3x3 conv layer of the rapidocr-onnxruntime 1.4.4 ONNX models, of the
  facenet-pytorch 2.6.0 MTCNN state dicts (pnet, rnet, onet) and of a small CNN trained
  here on scikit-learn's digits (conv 1->32->64 3x3 + linear, Adam, seeded; the same
  recipe as ``tests/quality/test_behaviour.py``).
* other kernels: the Conv layers of those models with kernels other than 3x3 and 1x1
  (5x5 depthwise and 1x3 in rapidocr, 2x2 in MTCNN), whose normalised entropy divides
  by the mean entropy of random Gaussian layers of the same size, not the 3x3 fit.
* fresh: layers of exactly the same shapes (and groups), initialised as torch does:
  the default ``torch.nn.Conv2d`` init (kaiming_uniform with a=sqrt(5)),
  ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` and ``xavier_uniform_``;
  ``--draws`` seeded draws per shape and scheme.

For each group the script prints the distribution (min, 5 %, median, 95 %, max) of
variance_entropy_norm, variance_entropy_clean_norm and sparsity, and the share of layers
the default :class:`filterdb.layer_quality.Thresholds` flag as random-like,
low-diversity and sparse; then the share flagged random-like for other values of the
random-like threshold, and the same split by layer size (n filters).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import filterdb
from filterdb import extraction, layer_quality
from filterdb.api import model_record

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("variance_entropy_norm", "variance_entropy_clean_norm", "sparsity")
INITS = ("default", "kaiming_normal", "xavier_uniform")
CANDIDATES = (0.9, 0.95, 0.96, 0.97, 0.98, 1.0)
SIZE_BUCKETS = ((0, 100), (100, 1000), (1000, math.inf))


def fetch(folder: str) -> Path:
    spec = importlib.util.spec_from_file_location(
        "fetch_test_models", ROOT / "scripts" / "fetch_test_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fetch(folder)


def real_layers() -> dict[str, list[tuple[str, np.ndarray, int]]]:
    """{"rapidocr": [(name, weight, groups)], "mtcnn": [...]} for every 3x3 conv layer,
    and "rapidocr other", "mtcnn other" for the Conv layers of other kernel sizes but 1x1."""
    found: dict[str, list[tuple[str, np.ndarray, int]]] = {
        "rapidocr": [], "mtcnn": [], "rapidocr other": [], "mtcnn other": []}
    sources = [("rapidocr", path, path) for path in sorted(fetch("rapidocr").glob("*.onnx"))]
    sources += [("mtcnn", path, torch.load(path, weights_only=True))
                for path in sorted(fetch("facenet").glob("*.pt"))]
    for group, path, model in sources:
        for layer in extraction.ordered_layers(model_record(model)):
            item = (f"{path.stem}:{layer.name}", layer.weight, layer.groups)
            if layer.kernel_shape == (3, 3):
                found[group].append(item)
            elif layer.kernel_shape != (1, 1) and layer.op_type == "conv":
                found[f"{group} other"].append(item)
    return found


def train_digits_cnn(seed: int = 0, epochs: int = 10) -> tuple[torch.nn.Module, float]:
    """The digits CNN of the tests: conv 1->32->64 3x3, max-pool, linear; Adam lr 1e-3,
    batch 64. Returns the model and its training accuracy."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    return model, accuracy


def fresh_weight(shape: tuple[int, ...], groups: int, scheme: str, seed: int) -> np.ndarray:
    """A (c_out, c_in_per_group, kh, kw) weight initialised by ``scheme``."""
    torch.manual_seed(seed)
    c_out, c_in_per_group, kh, kw = shape
    conv = torch.nn.Conv2d(c_in_per_group * groups, c_out, (kh, kw), groups=groups)
    weight = conv.weight.detach()
    if scheme == "kaiming_normal":
        torch.nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    elif scheme == "xavier_uniform":
        torch.nn.init.xavier_uniform_(weight)
    return weight.numpy().copy()


def assess(weights: list[np.ndarray]) -> list[dict]:
    rows, _ = layer_quality.assess_layers(weights)
    return rows


def quantiles(values: np.ndarray) -> list[float]:
    return [float(np.min(values)), *np.quantile(values, [0.05, 0.5, 0.95]).tolist(),
            float(np.max(values))]


def measure(draws: int) -> dict[str, list[dict]]:
    layers = real_layers()
    started = time.perf_counter()
    torch.set_num_threads(1)   # small matrices: one thread is faster and load-proof
    model, accuracy = train_digits_cnn()
    print(f"digits CNN: train accuracy {accuracy:.3f} "
          f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    table = filterdb.quality(model)
    digits = [(f"digits:{name}", extraction.ordered_layers(model_record(model))[i].weight, 1)
              for i, name in enumerate(table["name"])]
    trained = {"rapidocr": layers["rapidocr"], "mtcnn": layers["mtcnn"], "digits CNN": digits}
    groups: dict[str, list[dict]] = {}
    for group, items in trained.items():
        groups[f"trained: {group}"] = assess([w for _, w, _ in items])
    groups["trained: all"] = [row for g in trained for row in groups[f"trained: {g}"]]
    shapes = [(w.shape, g) for items in trained.values() for _, w, g in items]
    for scheme in INITS:
        weights = [fresh_weight(shape, g, scheme, seed=1000 * draw + index)
                   for draw in range(draws) for index, (shape, g) in enumerate(shapes)]
        groups[f"fresh: {scheme}"] = assess(weights)
    groups["fresh: all"] = [row for s in INITS for row in groups[f"fresh: {s}"]]
    other = layers["rapidocr other"] + layers["mtcnn other"]
    groups["other kernels, trained"] = assess([w for _, w, _ in other])
    groups["other kernels, fresh"] = assess([
        fresh_weight(w.shape, g, scheme, seed=1000 * draw + index) for scheme in INITS
        for draw in range(draws) for index, (_, w, g) in enumerate(other)])
    return groups


def report(groups: dict[str, list[dict]], markdown: bool) -> str:
    defaults = layer_quality.Thresholds()
    out = []

    def table(header: list[str], rows: list[list[str]]) -> None:
        if markdown:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out.extend("| " + " | ".join(row) + " |" for row in rows)
        else:
            columns = zip(header, *rows, strict=True)
            widths = [max(len(str(c)) for c in column) for column in columns]
            for row in [header, *rows]:
                out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        out.append("")

    for metric in METRICS:
        out.append(f"{metric}: min / 5% / median / 95% / max")
        out.append("")
        table(["group", "layers", "min", "5%", "median", "95%", "max"],
              [[name, str(len(rows)), *(f"{v:.3f}" for v in
                                        quantiles(np.array([r[metric] for r in rows])))]
               for name, rows in groups.items()])

    out.append(f"share flagged with the default thresholds (random_like={defaults.random_like}, "
               f"low_diversity={defaults.low_diversity}, sparse={defaults.sparse})")
    out.append("")
    verdicts = (layer_quality.RANDOM_LIKE, layer_quality.LOW_DIVERSITY, layer_quality.SPARSE,
                layer_quality.OK)
    table(["group", "layers", *verdicts],
          [[name, str(len(rows)),
            *(_share(np.mean([r["verdict"] == v for r in rows]), len(rows)) for v in verdicts)]
           for name, rows in groups.items()])

    out.append("share flagged random-like for other values of Thresholds.random_like")
    out.append("")
    table(["group", "layers", *(f">= {c}" for c in CANDIDATES)],
          [[name, str(len(rows)), *(_share(_random_share(rows, c), len(rows)) for c in CANDIDATES)]
           for name, rows in groups.items() if not name.startswith("fresh: ")
           or name == "fresh: all"])

    out.append("the same, split by layer size n = c_out * c_in_per_group (trained all / "
               "fresh all)")
    out.append("")
    rows = []
    for low, high in SIZE_BUCKETS:
        label = f"{low} <= n < {high}" if high != math.inf else f"n >= {low}"
        for name in ("trained: all", "fresh: all"):
            subset = [r for r in groups[name] if low <= r["n"] < high]
            if not subset:
                continue
            entropy = np.array([r["variance_entropy_norm"] for r in subset])
            rows.append([label, name, str(len(subset)), f"{entropy.min():.3f}",
                         f"{np.median(entropy):.3f}", f"{entropy.max():.3f}",
                         *(_share(_random_share(subset, c), len(subset)) for c in CANDIDATES)])
    table(["n", "group", "layers", "min", "median", "max", *(f">= {c}" for c in CANDIDATES)],
          rows)
    return "\n".join(out)


def _share(share: float, total: int) -> str:
    """"12.5% (4)": the share and the count of layers."""
    return f"{share:.1%} ({round(share * total)})"


def _random_share(rows: list[dict], threshold: float) -> float:
    thresholds = layer_quality.Thresholds(random_like=threshold)
    return float(np.mean([layer_quality.layer_verdict(r, thresholds)[0]
                          == layer_quality.RANDOM_LIKE for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5,
                        help="seeded fresh draws per trained layer shape and init scheme")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    print(report(measure(args.draws), args.markdown))


if __name__ == "__main__":
    main()
