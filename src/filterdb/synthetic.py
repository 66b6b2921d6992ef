"""Generated ONNX CNNs and zoos for the demo, the tests and the benchmarks.

Weights are not trained: each layer mixes a few smooth base patterns with noise so
that filters have structure, with deeper layers noisier. The demo-zoo issue
replaces this with models trained on the spot.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

KINDS = ("plain", "residual", "depthwise")

# Meta fields of generated models, cycled over the zoo.
TASKS = (("Classification", "natural", "ImageNet-like"),
         ("Classification", "handwriting", "digits"),
         ("Segmentation", "medical ct", "synthetic-ct"),
         ("Object Detection", "natural", "synthetic-coco"),
         ("Classification", "textures", "synthetic-textures"))


def _patterns(kh: int, kw: int) -> np.ndarray:
    """Smooth base patterns: constant, two gradients, a centre spot."""
    y, x = np.meshgrid(np.linspace(-1, 1, kh), np.linspace(-1, 1, kw), indexing="ij")
    spot = np.exp(-(x**2 + y**2) * 2)
    return np.stack([np.ones_like(x), x, y, spot - spot.mean()]).reshape(4, -1)


def layer_weight(rng: np.random.Generator, c_out: int, c_in: int, kh: int, kw: int,
                 noise: float) -> np.ndarray:
    """A (c_out, c_in, kh, kw) float32 weight: pattern mixtures plus noise."""
    base = _patterns(kh, kw).astype(np.float32)
    mix = rng.standard_normal((c_out * c_in, len(base)), dtype=np.float32)
    filters = mix @ base
    filters += noise * rng.standard_normal(filters.shape, dtype=np.float32)
    filters *= np.float32(1.0 / np.sqrt(c_in * kh * kw))
    return filters.reshape(c_out, c_in, kh, kw)


def make_cnn(path: Path, widths: list[int], kind: str = "plain", seed: int = 0,
             in_channels: int = 3, first_kernel: int = 3, classes: int = 10) -> Path:
    """Write an ONNX CNN: conv layers of the given widths, a pooled classifier head.

    ``plain`` chains 3x3 convs; ``residual`` adds a skip around each pair of equal
    width; ``depthwise`` alternates 3x3 depthwise and 1x1 pointwise convs.

    Examples
    --------
    >>> make_cnn(Path("net.onnx"), [16, 32], kind="residual")   # doctest: +SKIP
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current, channels = "x", in_channels
    skip = None

    def conv(name, src, c_out, c_in, k, groups=1, noise=0.5):
        weight = layer_weight(rng, c_out, c_in // groups, k, k, noise)
        inits.append(numpy_helper.from_array(weight, f"{name}.weight"))
        nodes.append(helper.make_node("Conv", [src, f"{name}.weight"], [f"{name}.out"],
                                      name=name, pads=[k // 2] * 4, group=groups))
        relu = f"{name}.relu"
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [relu], name=f"{name}_relu"))
        return relu

    current = conv("stem", current, widths[0], channels, first_kernel)
    channels = widths[0]
    for index, width in enumerate(widths[1:], start=1):
        noise = 0.3 + index / len(widths)
        if kind == "depthwise":
            current = conv(f"dw{index}", current, channels, channels, 3, groups=channels,
                           noise=noise)
            current = conv(f"pw{index}", current, width, channels, 1, noise=noise)
        elif kind == "residual" and width == channels:
            skip = current
            current = conv(f"conv{index}", current, width, channels, 3, noise=noise)
            nodes.append(helper.make_node("Add", [current, skip], [f"add{index}"],
                                          name=f"add{index}"))
            current = f"add{index}"
        else:
            current = conv(f"conv{index}", current, width, channels, 3, noise=noise)
        channels = width
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    # float32 throughout: a float64 head would not run (Gemm's inputs must share a type).
    fc = rng.standard_normal((classes, channels), dtype=np.float32) / np.float32(np.sqrt(channels))
    inits.append(numpy_helper.from_array(fc, "fc.weight"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight"], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="filterdb-synthetic",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path


def generate_zoo(folder: Path, n_models: int = 12, widths: tuple[int, ...] = (8, 16, 32),
                 depth: int = 4, seed: int = 0, size_spread: float = 1.0) -> Path:
    """Write ``n_models`` generated CNNs and their meta index; returns the index path.

    Model ``i`` cycles through the kinds and the meta fields in :data:`TASKS`; its
    widths are ``widths`` scaled by a factor in [1/(1+size_spread), 1+size_spread].
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(n_models):
        kind = KINDS[number % len(KINDS)]
        task, category, dataset = TASKS[number % len(TASKS)]
        factor = float(np.exp(rng.uniform(-1, 1) * np.log1p(size_spread)))
        model_widths = [max(2, int(round(widths[min(i, len(widths) - 1)] * factor)))
                        for i in range(depth)]
        name = f"{kind}-{number:03d}"
        make_cnn(folder / f"{name}.onnx", model_widths, kind=kind, seed=seed * 100003 + number)
        rows.append({"model": name, "Name": f"{kind} CNN", "Task": task,
                     "Visual Category": category, "Training-Dataset": dataset,
                     "Pretraining-Dataset": "", "Framework": "onnx", "Precision": "float32",
                     "Conv Weight Initializer": "synthetic", "Optimizer": "none",
                     "Paper": "", "Accessible": "generated by filterdb", "Dataset URL": ""})
    index = folder / "index.csv"
    with open(index, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return index
