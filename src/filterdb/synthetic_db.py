"""Synthetic filter databases of any size, for the analysis tests and the scale benchmark.

:func:`write_synthetic_db` writes a real filterdb database through the store API
(one shard per model, then one :class:`~filterdb.store.writer.DatabaseWriter`
commit), with the same tables and layout as ``filterdb build``, but no model files
are read: the models, their layers and their filters are generated.

The structure is meant to look like a trained zoo to the distribution-shift
analysis:

- many models (sizes log-normal) of several architectures (plain, residual,
  bottleneck with 1x1 convolutions, encoder-decoder with transposed convolutions,
  a 7x7 stem for some), with widths doubling by stage, so most filters sit deep;
- Tasks and Visual Categories drawn from the published composition, every one of
  a diverse set present once there are enough models;
- filters = coefficients on a fixed orthonormal basis of smooth 3x3 patterns (a
  blob, two gradients, centre-surround, saddles, ...) with strongly decreasing
  standard deviations plus a per-layer perturbation, so a few eigen-images carry
  most of the variance; the mean and spread shift with Task and Visual Category
  (a lot for the unusual categories: medical, textures, plants, ...) and with the
  normalised depth (most in the last layers);
- a per-layer scale (He-like ``sqrt(2 / fan_in)`` with a log-normal jitter) and,
  in some layers, a share of all-zero (pruned) filters.

Generation streams: heavy-tailed (Laplace) noise is drawn once into a pool of
``POOL_ROWS`` rows, and each block of a layer is one float32 product of a random
slice of the pool with the layer's 10 x 9 mixing matrix (its basis, spread, mean
and scale). Memory is bounded by the pool and one block (about 60 MB) whatever
the size; the speed is that of writing the shards (tens of millions of filters a
second). The same arguments give the same database, whatever the worker count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FilterDBError
from .store import layout
from .store.entry import ModelEntry
from .store.shard import seal_shard, temporary_shard, write_shard

#: Rows of the shared noise pool (10 float32 columns: 9 noise + a constant 1).
POOL_ROWS = 1 << 20
#: Largest block generated and written at once.
BLOCK_ROWS = 1 << 19
#: Default number of models: one per this many 3x3 filters, within [MIN_MODELS, 647].
FILTERS_PER_MODEL = 500_000
MIN_MODELS = 8
MAX_DEFAULT_MODELS = 647
NOT_ASSESSED = "not assessed"

#: Published composition (models per Task / Visual Category, datasheet v1.0.0).
TASK_WEIGHTS = {
    "Classification": 555, "Segmentation": 28, "GAN-Generator": 24, "Object Detection": 16,
    "GAN-Discriminator": 7, "Style Transfer": 5, "Super Resolution": 4, "Face Detection": 4,
    "Depth Estimation": 2, "Face Recognition": 1, "Auto-Encoder": 1,
}
CATEGORY_WEIGHTS = {
    "natural": 557, "handwriting": 36, "faces": 16, "medical xray": 9, "art": 5,
    "seismic": 4, "medical ct": 4, "medical mri": 3, "fractals": 2, "textures": 2,
    "depth": 2, "map": 2, "astronomy": 2, "thermal": 1, "cars": 1, "plants": 1,
}
#: Categories with little or unusual data: their filters shift most.
UNUSUAL = ("medical xray", "medical ct", "medical mri", "textures", "plants", "seismic",
           "fractals", "astronomy", "thermal")
#: The first models take these (Task, Visual Category) pairs, so that a small
#: database already holds several groups of each grouping.
DIVERSE = (
    ("Classification", "natural"), ("Segmentation", "medical ct"),
    ("GAN-Generator", "faces"), ("Object Detection", "natural"),
    ("Classification", "handwriting"), ("Classification", "textures"),
    ("Style Transfer", "art"), ("Classification", "medical xray"),
    ("Super Resolution", "natural"), ("GAN-Discriminator", "faces"),
    ("Classification", "plants"), ("Depth Estimation", "depth"),
    ("Segmentation", "seismic"), ("Face Detection", "faces"),
    ("Classification", "astronomy"), ("Segmentation", "medical mri"),
)
DATASETS = {
    "natural": "ImageNet1k", "handwriting": "MNIST", "faces": "CelebA",
    "medical xray": "CheXpert", "art": "WikiArt", "seismic": "seismic-facies",
    "medical ct": "LIDC-IDRI", "medical mri": "BraTS", "fractals": "FractalDB",
    "textures": "DTD", "depth": "NYU Depth v2", "map": "Maps", "astronomy": "Galaxy10",
    "thermal": "FLIR", "cars": "Stanford Cars", "plants": "PlantVillage",
}
PRODUCERS = ("pytorch 1.9", "pytorch 1.8", "tf2onnx 1.9.2", "keras2onnx 1.7.0",
             "pytorch 1.10")
FRAMEWORKS = {"pytorch": "PyTorch", "tf2onnx": "TensorFlow", "keras2onnx": "Keras"}
ARCHITECTURES = ("plain", "residual", "bottleneck", "encoder-decoder")
#: Base standard deviations of the coefficients on the basis (before peak scaling).
BASE_SIGMA = np.array([2.2, 1.5, 1.4, 0.8, 0.65, 0.55, 0.32, 0.28, 0.22])
BASE_MEAN = np.array([1.4, 0.0, 0.0, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
#: Seed of the fixed group effects (the same for every --seed).
STRUCTURE_SEED = 20220330


def basis_images() -> np.ndarray:
    """Orthonormal (9, 9) basis of 3x3 patterns, rows = flattened images.

    Gram-Schmidt over: a Gaussian blob, x and y gradients, centre-surround, the
    diagonal saddle xy, x^2 - y^2, then x y^2, x^2 y and x^2 y^2.
    """
    y, x = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    patterns = [np.exp(-(x**2 + y**2) / 2), x, y, x**2 + y**2, x * y, x**2 - y**2,
                x * y**2, x**2 * y, x**2 * y**2]
    matrix = np.stack([p.ravel() for p in patterns])
    q, r = np.linalg.qr(matrix.T)
    q = q * np.sign(np.diag(r))  # keep each pattern's sign
    return q.T


# --------------------------------------------------------------------------- plan


@dataclass
class LayerPlan:
    name: str
    op_type: str
    depth: int
    order: int
    c_out: int
    c_in_per_group: int
    groups: int
    kh: int
    kw: int
    stride: int = 1

    @property
    def n_filters(self) -> int:
        return self.c_out * self.c_in_per_group


@dataclass
class ModelPlan:
    index: int
    name: str
    task: str
    category: str
    architecture: str
    producer: str
    opset: int
    seed: int
    budget: int  # 3x3 filters
    layers: list[LayerPlan] = field(default_factory=list)
    graph_depth: int = 0
    operator_counts: dict[str, int] = field(default_factory=dict)


def default_models(n_filters: int) -> int:
    return int(min(MAX_DEFAULT_MODELS, max(MIN_MODELS, round(n_filters / FILTERS_PER_MODEL)),
                   max(1, n_filters)))


def plan_models(n_filters: int, n_models: int, seed: int) -> list[ModelPlan]:
    """Every model's meta, architecture and layers; 3x3 filters sum to ``n_filters``."""
    if n_filters < 1:
        raise FilterDBError("--filters must be at least 1")
    if not 1 <= n_models <= n_filters:
        raise FilterDBError(f"--models must be between 1 and the number of filters "
                            f"({n_filters:,}), not {n_models:,}")
    rng = np.random.default_rng([seed, 1])
    factors = rng.lognormal(0.0, 0.9, n_models)
    budgets = _partition(n_filters, factors)
    tasks, task_p = list(TASK_WEIGHTS), np.array(list(TASK_WEIGHTS.values()), float)
    cats, cat_p = list(CATEGORY_WEIGHTS), np.array(list(CATEGORY_WEIGHTS.values()), float)
    plans = []
    for index, budget in enumerate(budgets):
        if index < len(DIVERSE):
            task, category = DIVERSE[index]
        else:
            task = tasks[rng.choice(len(tasks), p=task_p / task_p.sum())]
            category = cats[rng.choice(len(cats), p=cat_p / cat_p.sum())]
        if task in ("GAN-Generator", "Segmentation", "Super Resolution", "Style Transfer",
                    "Depth Estimation", "Auto-Encoder"):
            architecture = "encoder-decoder"
        else:
            architecture = ARCHITECTURES[int(rng.integers(0, 3))]
        plan = ModelPlan(
            index=index, name=f"synth-{index:04d}-{architecture}", task=task,
            category=category, architecture=architecture,
            producer=PRODUCERS[int(rng.integers(0, len(PRODUCERS)))],
            opset=int(rng.integers(9, 14)), seed=int(rng.integers(0, 2**62)),
            budget=int(budget))
        _plan_layers(plan, np.random.default_rng([seed, 2, index]))
        plans.append(plan)
    return plans


def _partition(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers >= 1 proportional to ``weights`` that sum to ``total`` exactly."""
    n = len(weights)
    shares = (total - n) * weights / weights.sum()
    parts = np.floor(shares).astype(np.int64)
    rest = (total - n) - int(parts.sum())
    parts[np.argsort(shares - parts)[::-1][:rest]] += 1
    return parts + 1


def _plan_layers(plan: ModelPlan, rng: np.random.Generator) -> None:
    """Layers with widths doubling by stage, scaled so the 3x3 filters are ``budget``."""
    budget = plan.budget
    n3 = int(np.clip(round(6 + 3 * math.log2(max(budget, 1000) / 1000)
                           + rng.normal(0, 3)), 4, 80))
    stages = 4 if n3 < 30 else 5
    if plan.architecture == "encoder-decoder":
        # down to the bottleneck and back up
        stage = [round((stages - 1) * (1 - abs(2 * i / max(n3 - 1, 1) - 1))) for i in range(n3)]
    else:
        stage = [min(stages - 1, i * stages // n3) for i in range(n3)]
    base = float(rng.choice([16, 24, 32, 48, 64]))
    widths = np.array([base * 2.0 ** s for s in stage])
    stem7 = plan.architecture != "encoder-decoder" and rng.random() < 0.3
    # 3x3 filters per layer: c_in * c_out; the first takes the 3 image channels
    # unless a 7x7 stem does.
    c_in = np.concatenate([[widths[0] / 2 if stem7 else 3.0], widths[:-1]])
    nominal = float((c_in * widths).sum())
    f = math.sqrt(budget / nominal)
    c_out = np.maximum(1, np.round(widths * f)).astype(np.int64)
    c_in = np.concatenate([[max(1, round(c_in[0] * f)) if stem7 else 3], c_out[:-1]])
    c_in = np.asarray(c_in, dtype=np.int64)
    # Too many after rounding: thin the last layers' inputs (grouped convs), drop empty ones.
    excess = int((c_out * c_in).sum()) - budget
    for i in range(n3 - 1, -1, -1):
        if excess <= 0:
            break
        cut = min(int(c_in[i]), math.ceil(excess / int(c_out[i])))
        c_in[i] -= cut
        excess -= cut * int(c_out[i])
    # Too few: widen the last layer's input; a depthwise 3x3 head (narrower than the
    # last layer) takes what is left.
    last = max(i for i in range(n3) if c_in[i] > 0) if (c_in > 0).any() else n3 - 1
    deficit = budget - int((c_out * c_in).sum())
    c_in[last] += deficit // int(c_out[last])
    rest = deficit % int(c_out[last])
    transpose = plan.task in ("GAN-Generator", "Super Resolution", "Auto-Encoder")
    layers: list[LayerPlan] = []
    depth, order = 0, 0
    ops = {"Conv": 0, "ConvTranspose": 0, "Relu": 0, "BatchNormalization": 0, "Add": 0}

    def add(name, op_type, c_o, c_i, k, groups=1, stride=1, at=None):
        nonlocal order
        layers.append(LayerPlan(name, op_type, depth if at is None else at, order, int(c_o),
                                int(c_i), int(groups), k, k, stride))
        order += 1
        ops["ConvTranspose" if op_type == "conv_transpose" else "Conv"] += 1

    if stem7:
        add("stem7x7", "conv", c_in[0], 3, 7, stride=2)
        depth += 3
        ops["Relu"] += 1
        ops["BatchNormalization"] += 1
        ops["MaxPool"] = 1
        depth += 1
    for i in range(n3):
        if c_in[i] < 1:
            continue
        decoding = plan.architecture == "encoder-decoder" and i > n3 // 2
        op_type = "conv_transpose" if transpose and decoding else "conv"
        first_of_stage = i > 0 and stage[i] != stage[i - 1]
        if plan.architecture == "bottleneck" and i > 0:
            add(f"reduce{i}", "conv", c_in[i], c_in[i] * 2, 1)
            depth += 3
        add(f"conv{i}", op_type, c_out[i], c_in[i], 3, stride=2 if first_of_stage else 1)
        if plan.architecture in ("residual", "bottleneck") and first_of_stage:
            # projection shortcut: a parallel 1x1 at the same depth
            add(f"shortcut{i}", "conv", c_out[i], c_in[i], 1, stride=2, at=depth)
        depth += 3
        ops["Relu"] += 1
        ops["BatchNormalization"] += 1
        if plan.architecture in ("residual", "bottleneck") and i % 2 == 1:
            depth += 1
            ops["Add"] += 1
    if rest:
        add("head_dw", "conv", rest, 1, 3, groups=rest)
        depth += 3
    ops.update({"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1})
    layers.sort(key=lambda layer: (layer.depth, layer.order))
    plan.layers = layers
    plan.graph_depth = depth + 4
    plan.operator_counts = {op: n for op, n in ops.items() if n}


def _conv_depths(layers: list[LayerPlan]) -> list[tuple[int, float]]:
    levels = sorted({layer.depth for layer in layers})
    rank = {d: i for i, d in enumerate(levels)}
    top = max(len(levels) - 1, 1)
    return [(rank[layer.depth], rank[layer.depth] / top if len(levels) > 1 else 0.0)
            for layer in layers]


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Effects:
    """Fixed shifts of the coefficient distribution by Task, Visual Category and depth."""

    task_mean: dict[str, np.ndarray]
    task_spread: dict[str, np.ndarray]
    category_mean: dict[str, np.ndarray]
    category_spread: dict[str, np.ndarray]

    @classmethod
    def make(cls) -> Effects:
        rng = np.random.default_rng(STRUCTURE_SEED)

        def direction(size: float) -> np.ndarray:
            v = rng.standard_normal(9) * BASE_SIGMA
            return size * v / np.linalg.norm(v)

        def spread(size: float) -> np.ndarray:
            return np.exp(size * rng.standard_normal(9))

        task_mean = {t: direction(0.0 if t == "Classification" else 0.35)
                     for t in TASK_WEIGHTS}
        task_spread = {t: spread(0.0 if t == "Classification" else 0.08) for t in TASK_WEIGHTS}
        category_mean, category_spread = {}, {}
        for c in CATEGORY_WEIGHTS:
            size = 0.0 if c == "natural" else (1.2 if c in UNUSUAL else 0.4)
            category_mean[c] = direction(size)
            category_spread[c] = spread(size / 5)
        return cls(task_mean, task_spread, category_mean, category_spread)


def layer_mixing(plan: ModelPlan, layer: LayerPlan, depth_norm: float, effects: Effects,
                 basis: np.ndarray, rng: np.random.Generator,
                 model_shift: np.ndarray) -> np.ndarray:
    """The (10, 9) float32 matrix turning ``[noise(9), 1]`` rows into the layer's filters."""
    t3 = depth_norm ** 3
    sigma = BASE_SIGMA * effects.task_spread[plan.task] * effects.category_spread[plan.category]
    # Deep layers are noisier and less structured (towards isotropic); the first
    # layer carries more edges.
    sigma = sigma + t3 * (1.3 - sigma) * 0.6
    if depth_norm == 0.0:
        sigma = sigma * np.array([1.0, 1.5, 1.5, 1.2, 1, 1, 1, 1, 1])
    mean = (BASE_MEAN * (1.0 - 0.7 * t3) + effects.task_mean[plan.task]
            + effects.category_mean[plan.category] + model_shift
            + t3 * np.array([0.0, 0.3, -0.2, 0.4, 0.2, 0, 0, 0, 0]))
    if layer.c_in_per_group == 1:  # depthwise: blob-like
        mean = mean + np.array([0.8, 0, 0, 0.3, 0, 0, 0, 0, 0])
    perturb = np.eye(9) + 0.08 * rng.standard_normal((9, 9))
    fan_in = layer.c_in_per_group * layer.kh * layer.kw
    scale = math.sqrt(2.0 / fan_in) * rng.lognormal(0.0, 0.3) / float(BASE_SIGMA[0])
    mixing = np.vstack([(sigma[:, None] * perturb) @ basis, mean @ basis]) * scale
    return mixing.astype(np.float32)


def noise_pool(seed: int, rows: int = POOL_ROWS) -> np.ndarray:
    """``rows`` x 10 float32: 9 Laplace(0, 1/sqrt 2) columns (unit variance), then 1."""
    rng = np.random.default_rng([seed, 0])
    pool = np.empty((rows, 10), dtype=np.float32)
    noise = rng.standard_exponential((rows, 9), dtype=np.float32)
    noise -= rng.standard_exponential((rows, 9), dtype=np.float32)
    pool[:, :9] = noise * np.float32(1 / math.sqrt(2))
    pool[:, 9] = 1.0
    return pool


def model_blocks(plan: ModelPlan, pool: np.ndarray, effects: Effects,
                 basis: np.ndarray) -> Iterator[np.ndarray]:
    """The model's 3x3 filters, layer by layer in stored order, as (n, 3, 3) blocks."""
    rng = np.random.default_rng(plan.seed)
    model_shift = 0.08 * rng.standard_normal(9) * BASE_SIGMA
    depths = _conv_depths(plan.layers)
    rows = len(pool)
    for layer, (_, depth_norm) in zip(plan.layers, depths, strict=True):
        if (layer.kh, layer.kw) != (3, 3):
            continue
        mixing = layer_mixing(plan, layer, depth_norm, effects, basis, rng, model_shift)
        pruned = rng.uniform(0.01, 0.2) if rng.random() < 0.1 else 0.0
        n = layer.n_filters
        for at in range(0, n, BLOCK_ROWS):
            count = min(BLOCK_ROWS, n - at)
            start = int(rng.integers(0, rows - count + 1))
            block = pool[start:start + count] @ mixing
            if pruned:
                block[rng.random(count) < pruned] = 0.0
            yield block.reshape(count, 3, 3)


# --------------------------------------------------------------------------- entries


def _sha256(plan: ModelPlan, n_filters: int, n_models: int, seed: int) -> str:
    key = f"filterdb-synth:v1:{seed}:{n_filters}:{n_models}:{plan.index}"
    return hashlib.sha256(key.encode()).hexdigest()


def _meta(plan: ModelPlan) -> dict[str, str]:
    framework = FRAMEWORKS[plan.producer.split()[0]]
    dataset = DATASETS[plan.category]
    return {
        "Name": plan.name, "Paper": "synthetic (filterdb synth)", "Framework": framework,
        "Precision": "float32", "Training-Dataset": dataset,
        "Pretraining-Dataset": "ImageNet1k" if plan.index % 3 == 0 else "",
        "Visual Category": plan.category, "Task": plan.task,
        "Conv Weight Initializer": ("kaiming_normal", "xavier_uniform")[plan.index % 2],
        "Optimizer": ("SGD", "Adam", "AdamW")[plan.index % 3],
        "Accessible": "synthetic", "Dataset URL": f"https://example.org/{dataset}",
    }


def model_entry(plan: ModelPlan, sha256: str, shard: str) -> ModelEntry:
    """The entry the writer commits: summary and layer rows as a build produces them."""
    from .worker import QUALITY_LAYER_COLUMNS

    quality = {c: float("nan") for c in QUALITY_LAYER_COLUMNS}
    quality.update(verdict=NOT_ASSESSED, reason="")
    rows, offsets, counts = [], {}, {}
    for index, (layer, (conv_depth, depth_norm)) in enumerate(
            zip(plan.layers, _conv_depths(plan.layers), strict=True)):
        shape = (layer.kh, layer.kw)
        rows.append({
            "layer": index, "name": layer.name, "op_type": layer.op_type,
            "depth": layer.depth, "conv_depth": conv_depth,
            "conv_depth_norm": float(depth_norm), "depth_is_approximate": False,
            "c_out": layer.c_out, "c_in_per_group": layer.c_in_per_group,
            "groups": layer.groups, "depthwise": layer.groups > 1 and layer.c_in_per_group == 1,
            "kh": layer.kh, "kw": layer.kw, "stride_h": layer.stride, "stride_w": layer.stride,
            "dilation_h": 1, "dilation_w": 1, "source_dtype": "float32",
            "n_filters": layer.n_filters, "nan_count": 0, "inf_count": 0,
            "local_start": offsets.get(shape, 0), **quality,
        })
        offsets[shape] = offsets.get(shape, 0) + layer.n_filters
        counts[shape] = counts.get(shape, 0) + layer.n_filters
    total = sum(counts.values())
    summary = {
        "format": "synthetic", "producer": plan.producer, "opset": plan.opset,
        "depth": plan.graph_depth, "n_layers": len(plan.layers), "total_filters": total,
        "3x3_filter_share": counts.get((3, 3), 0) / total if total else 0.0,
        "weight_dtype": "float32",
        "shape_counts": dict(sorted(counts.items())),
        "operator_counts": dict(plan.operator_counts),
        "quality_verdict": NOT_ASSESSED, "degenerated_share": float("nan"),
        "random_like_share": float("nan"),
    }
    return ModelEntry(model=plan.name, sha256=sha256, source_path=f"synthetic:{plan.name}",
                      shard=shard, meta=_meta(plan), summary=summary, layers=rows)


def _entry_json(entry: ModelEntry) -> str:
    summary = dict(entry.summary)
    summary["shape_counts"] = [[*shape, n] for shape, n in summary["shape_counts"].items()]
    return json.dumps({"summary": summary, "layers": entry.layers})


_POOL: dict[int, np.ndarray] = {}


def _write_model(shards: str, plan: ModelPlan, sha256: str, seed: int) -> ModelEntry:
    """Write one model's shard (in a worker process or inline); returns its entry."""
    pool = _POOL.get(seed)
    if pool is None:
        _POOL.clear()
        pool = _POOL[seed] = noise_pool(seed)
    folder = Path(shards)
    shard = layout.shard_name(sha256, layout.DEFAULT_SHAPES)
    entry = model_entry(plan, sha256, shard)
    effects, basis = Effects.make(), basis_images()
    tmp = temporary_shard(folder)
    entry.summary["filters_blake3"] = write_shard(
        tmp, {(3, 3): entry.summary["shape_counts"].get((3, 3), 0)},
        lambda shape: model_blocks(plan, pool, effects, basis), _entry_json(entry),
        durable=True)
    seal_shard(tmp, folder / shard)
    return entry


def write_synthetic_db(path, n_filters: int, n_models: int | None = None, seed: int = 0,
                       workers: int = 1,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic database of exactly ``n_filters`` 3x3 filters.

    Parameters
    ----------
    path : str or Path
        The master file to create; it must not exist.
    n_filters : int
        3x3 filters in ``/filters``.
    n_models : int, optional
        Models; default one per 500,000 filters, at least 8 and at most 647.
    seed : int
        Same seed and sizes, same database.
    workers : int
        Processes writing shards (the commit is one, in model order).
    progress : callable, optional
        ``progress(filters_done, n_filters)`` after each model.

    Returns
    -------
    dict
        ``path``, ``models``, ``layers``, ``filters``, ``seconds``.

    Examples
    --------
    >>> write_synthetic_db("synth.h5", 10_000_000)     # doctest: +SKIP
    """
    from .store.writer import DatabaseWriter

    path = Path(path)
    if path.exists() or layout.shards_dir(path).exists():
        raise FilterDBError(f"{path}: exists; synth writes a new database (remove it and "
                            f"{layout.shards_dir(path).name}/ first)")
    n_filters = int(n_filters)
    n_models = default_models(n_filters) if n_models is None else int(n_models)
    started = time.perf_counter()
    plans = plan_models(n_filters, n_models, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with DatabaseWriter(path) as writer:
        shards = os.fspath(writer.shards)
        hashes = [_sha256(plan, n_filters, n_models, seed) for plan in plans]
        if workers <= 1:
            results: Iterator[ModelEntry] = (
                _write_model(shards, plan, sha, seed)
                for plan, sha in zip(plans, hashes, strict=True))
            entries = _collect(results, n_filters, progress)
        else:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_write_model, [shards] * len(plans), plans, hashes,
                                   [seed] * len(plans))
                entries = _collect(results, n_filters, progress)
        done = sum(e.summary["shape_counts"].get((3, 3), 0) for e in entries)
        if done != n_filters:
            raise RuntimeError(f"synth: planned {done:,} filters, not {n_filters:,}")
        writer.commit(entries)
    return {"path": str(path), "models": len(plans),
            "layers": sum(len(p.layers) for p in plans), "filters": n_filters,
            "seconds": time.perf_counter() - started}


def _collect(results, n_filters: int, progress) -> list[ModelEntry]:
    entries, done = [], 0
    for entry in results:
        entries.append(entry)
        done += entry.summary["shape_counts"].get((3, 3), 0)
        if progress is not None:
            progress(done, n_filters)
    return entries
