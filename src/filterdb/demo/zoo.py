"""The demo zoo: which models, how each is trained, cached and saved.

:func:`zoo_specs` lists the models; :func:`make_zoo` trains what the cache lacks
(in worker processes, one thread each), saves every model in its format under
``DIR/zoo`` and writes the meta index ``DIR/zoo/index.csv``.

Trained weights are cached in ``DIR/cache`` under a key that hashes the model's
spec, everything it depends on (a pre-trained model, a GAN partner), the data set
names, the torch version and :data:`CACHE_VERSION`; a second run loads them and
only re-exports files that are missing or stale.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .recipe import Recipe

#: Bump when training code changes in a way that changes weights.
CACHE_VERSION = 1

DIGITS, PHOTOS, PHOTOS_GREY, NONE = "digits", "photos", "photos-grey", "none"
#: Data sets (their names in the index come from filterdb.demo.data, see dataset_name).
DATASET_URLS = {
    DIGITS: "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    PHOTOS: "https://scikit-learn.org/stable/modules/generated/"
            "sklearn.datasets.load_sample_images.html",
}
DATASET_URLS[PHOTOS_GREY] = DATASET_URLS[PHOTOS]

#: Formats and their file suffixes.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "state_dict": ".pth",
            "safetensors": ".safetensors"}

INITIALIZERS = {"default": "PyTorch default (kaiming_uniform, a=sqrt(5))",
                "kaiming_normal": "kaiming_normal (fan_out, relu)",
                "orthogonal": "orthogonal",
                "dcgan": "normal (std 0.02, DCGAN)"}

#: The digit classifiers' recipes (400 steps of 32: about 10 epochs of the 1,348 digits).
SGD = Recipe("SGD", lr=0.1, weight_decay=5e-3, steps=400)
ADAM = Recipe("Adam", lr=1e-2, weight_decay=0.0, steps=400)
#: The over-parameterised models: 20 samples, 2,000 epochs, strong weight decay. Their
#: twins are the SGD classifiers of the same family and width, trained on all digits.
OVERFIT = Recipe("SGD", lr=0.1, weight_decay=2e-2, steps=2000, samples=20)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo.

    ``kind`` says how it is made: ``classify``, ``denoise``, ``autoencode``, ``gan``
    (a generator trained together with ``partner``, the discriminator, which has kind
    ``gan-partner``), ``finetune`` (starts from ``pretrained``'s weights) or
    ``untrained``. ``role`` is a free-text column of the index that the tests and
    the summary use: ``trained``, ``over-parameterised``, ``pretrained``,
    ``fine-tuned``, ``untrained control``.
    """

    name: str
    family: str
    width: int
    in_channels: int
    kind: str
    task: str
    category: str
    dataset: str
    recipe: Recipe | None = None
    init: str = "default"
    classes: int = 10
    pretrained: str | None = None
    partner: str | None = None
    fmt: str = "onnx"
    precision: str = "float32"
    role: str = "trained"
    twin: str = ""

    @property
    def file_name(self) -> str:
        return self.name + SUFFIXES[self.fmt]


def zoo_specs() -> list[ModelSpec]:
    """The demo zoo (41 models).

    * 24 digit classifiers: three families (plain VGG-like, residual, depthwise-separable)
      x two widths x two optimisers (SGD, Adam) x two seeds; seed 0 saved as ONNX, seed 1
      as safetensors (VGG, one of them float16), TorchScript (ResNet) or a state dict
      (separable);
    * 2 over-parameterised models trained on 20 digits, each with a twin among the above;
    * 2 patch classifiers on the sample photos; a model pre-trained on grey photo patches
      and the same network fine-tuned on digits;
    * a denoiser (photo patches), an auto-encoder (digits), two GAN generator and
      discriminator pairs (digits);
    * 5 untrained controls (four initialisers).
    """
    specs: list[ModelSpec] = []
    seeds = (0, 1)
    widths = (8, 16)
    alternate = {"vgg": "safetensors", "resnet": "torchscript", "separable": "state_dict"}
    for family in ("vgg", "resnet", "separable"):
        for width in widths:
            for recipe in (SGD, ADAM):
                for seed in seeds:
                    name = f"{family}-w{width}-{recipe.optimizer.lower()}-s{seed}"
                    fmt = alternate[family] if seed == 1 else "onnx"
                    precision = "float16" if (family, width, recipe, seed) == (
                        "vgg", 8, ADAM, 1) else "float32"
                    specs.append(ModelSpec(
                        name, family, width, 1, "classify", "Classification", "handwriting",
                        DIGITS, replace(recipe, seed=seed), fmt=fmt, precision=precision))
    # Over-parameterised for their data: 16 channels and up, trained on 20 digits (two
    # per class) for 2,000 epochs with strong weight decay, beside the same network
    # trained normally on all digits (its twin).
    for family in ("vgg", "resnet"):
        specs.append(ModelSpec(
            f"{family}-w16-sgd-n20", family, 16, 1, "classify", "Classification",
            "handwriting", DIGITS, OVERFIT, role="over-parameterised",
            twin=f"{family}-w16-sgd-s0"))
    # Natural patches: which photo and quadrant a patch comes from (8 classes).
    specs.append(ModelSpec("patches-vgg-w8-adam", "vgg", 8, 3, "classify", "Classification",
                           "natural", PHOTOS, ADAM, classes=8))
    specs.append(ModelSpec("patches-resnet-w8-sgd", "resnet", 8, 3, "classify",
                           "Classification", "natural", PHOTOS, SGD, classes=8,
                           fmt="torchscript"))
    # Pre-trained on grey photo patches, fine-tuned on digits.
    specs.append(ModelSpec("pretrain-vgg-w8-patches", "vgg", 8, 1, "classify", "Classification",
                           "natural", PHOTOS_GREY, SGD, classes=8, role="pretrained"))
    specs.append(ModelSpec("finetune-vgg-w8-digits", "vgg", 8, 1, "finetune", "Classification",
                           "handwriting", DIGITS, Recipe("SGD", lr=0.03, weight_decay=5e-3,
                                                         steps=200),
                           pretrained="pretrain-vgg-w8-patches", role="fine-tuned"))
    # Denoising natural patches, auto-encoding digits.
    specs.append(ModelSpec("denoiser-w16-adam", "denoiser", 16, 3, "denoise", "Denoising",
                           "natural", PHOTOS, Recipe("Adam", lr=1e-2, weight_decay=1e-3,
                                                     steps=600)))
    specs.append(ModelSpec("autoencoder-w16-adam", "autoencoder", 16, 1, "autoencode",
                           "Auto-Encoder", "handwriting", DIGITS,
                           Recipe("Adam", lr=3e-3, steps=400)))
    # A GAN on digits: the generator is trained with its discriminator.
    for seed in seeds:
        g, d = f"gan-generator-w16-s{seed}", f"gan-discriminator-w16-s{seed}"
        gan = Recipe("Adam", lr=2e-3, steps=600, batch=64, seed=seed)
        specs.append(ModelSpec(g, "generator", 16, 1, "gan", "GAN-Generator", "handwriting",
                               DIGITS, gan, init="dcgan", partner=d))
        specs.append(ModelSpec(d, "discriminator", 16, 1, "gan-partner", "GAN-Discriminator",
                               "handwriting", DIGITS, gan, init="dcgan", partner=g,
                               fmt="onnx" if seed == 0 else "state_dict"))
    # Untrained controls: fresh initialisations of trained architectures.
    controls = [("vgg", 16, "default", "onnx"), ("resnet", 16, "kaiming_normal", "onnx"),
                ("separable", 16, "default", "state_dict"), ("vgg", 8, "orthogonal", "onnx"),
                ("generator", 16, "dcgan", "onnx")]
    for family, width, init, fmt in controls:
        task = "GAN-Generator" if family == "generator" else "Classification"
        specs.append(ModelSpec(f"untrained-{family}-w{width}-{init.replace('_', '-')}", family,
                               width, 1, "untrained", task, "handwriting", NONE, None,
                               init=init, fmt=fmt, role="untrained control"))
    return specs


def pick(specs: list[ModelSpec], n: int) -> list[ModelSpec]:
    """``n`` models that need no other model (no GAN pair, no fine-tuning): one of each
    task first, then of each family, role and visual category, then the rest in zoo
    order."""
    alone = [s for s in specs if s.kind in ("classify", "denoise", "autoencode", "untrained")
             and s.role != "over-parameterised"]
    chosen: list[ModelSpec] = []
    for key in ("task", "family", "role", "category"):
        seen = {getattr(s, key) for s in chosen}
        for spec in alone:
            if getattr(spec, key) not in seen and spec not in chosen:
                seen.add(getattr(spec, key))
                chosen.append(spec)
    chosen += [s for s in alone if s not in chosen]
    return chosen[:max(n, 0)]


# --------------------------------------------------------------------------- cache keys


def dataset_name(dataset: str) -> str:
    """The data set's name as the index gives it (says when the photos were generated)."""
    from . import data

    if dataset == NONE:
        return ""
    if dataset == DIGITS:
        return data.DIGITS
    name = data.photos_name()
    return f"{name}, grey" if dataset == PHOTOS_GREY else name


def cache_key(spec: ModelSpec, specs: dict[str, ModelSpec]) -> str:
    """Hash of everything the weights of ``spec`` depend on: its training fields, the
    data set, a pre-trained model or GAN partner, the torch version, CACHE_VERSION."""
    def training(s: ModelSpec) -> dict:
        fields = asdict(s)
        for key in ("name", "fmt", "precision", "role", "twin", "task", "category"):
            fields.pop(key)
        fields["data"] = dataset_name(s.dataset)
        return fields

    parts = {"spec": training(spec), "torch": _torch_version(), "version": CACHE_VERSION}
    if spec.pretrained:
        parts["pretrained"] = cache_key(specs[spec.pretrained], specs)
    if spec.partner:
        parts["pair"] = [training(specs[name]) for name in sorted([spec.name, spec.partner])]
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "missing"


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """Models trained together: one model, a GAN pair, or a pre-trained model and the
    model fine-tuned from it. ``export`` names the models whose file must be written."""

    specs: list[ModelSpec]
    keys: dict[str, str]
    cache: Path
    zoo: Path
    export: set[str] = field(default_factory=set)

    def cache_file(self, name: str) -> Path:
        return self.cache / f"{name}-{self.keys[name]}.pt"

    @property
    def cached(self) -> bool:
        return all(self.cache_file(s.name).exists() for s in self.specs)


def plan_jobs(specs: list[ModelSpec], cache: Path, zoo: Path) -> list[Job]:
    """Group specs into jobs, the longest training first."""
    by_name = {s.name: s for s in specs}
    keys = {s.name: cache_key(s, by_name) for s in specs}
    groups: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        root = spec.pretrained or (spec.partner if spec.kind == "gan-partner" else spec.name)
        groups.setdefault(root, []).append(spec)
    jobs = []
    for members in groups.values():
        members.sort(key=lambda s: (s.pretrained is not None, s.kind == "gan-partner"))
        jobs.append(Job(members, {s.name: keys[s.name] for s in members}, cache, zoo))
    return sorted(jobs, key=lambda job: -_cost(job))


def _cost(job: Job) -> float:
    """Rough training cost (relative), to start the longest jobs first."""
    scale = {"resnet": 1.6, "separable": 1.3, "denoiser": 2.0, "generator": 3.0,
             "autoencoder": 1.5}
    return sum(spec.recipe.steps * spec.width ** 1.5 * scale.get(spec.family, 1.0)
               for spec in job.specs if spec.recipe is not None and spec.kind != "gan-partner")


# --------------------------------------------------------------------------- worker side


def _data(dataset: str):
    from . import data

    if dataset == DIGITS:
        return data.digits()
    return data.photos(grey=dataset == PHOTOS_GREY)


def _fresh(spec: ModelSpec):
    """A freshly initialised network of the spec (seeded by the recipe or the name)."""
    import torch

    from . import nets

    torch.manual_seed(spec.recipe.seed if spec.recipe else _seed_of(spec.name))
    if spec.family in nets.CLASSIFIERS:
        model = nets.build(spec.family, spec.in_channels, spec.width, spec.classes)
    else:
        model = nets.build(spec.family, spec.in_channels, spec.width)
    return nets.initialise(model, spec.init)


def _seed_of(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def run_job(job: Job) -> list[dict]:
    """Train (or load from the cache) every model of a job and write the files it must
    export. Returns one dict per model: ``name``, ``metrics``, ``cached``, ``seconds``."""
    import torch

    from . import train as T

    torch.set_num_threads(1)
    by_name = {s.name: s for s in job.specs}
    trained: dict[str, tuple] = {}  # name -> (model, metrics, cached, seconds)
    use_cache = job.cached  # a GAN pair or fine-tuning chain is reused only whole
    for spec in job.specs:
        if spec.name in trained:
            continue
        started = time.perf_counter()
        model = _fresh(spec)
        if use_cache:
            saved = torch.load(job.cache_file(spec.name), weights_only=True)
            model.load_state_dict(saved["state_dict"])
            trained[spec.name] = (model, saved["metrics"], True, 0.0)
            continue
        if spec.kind == "untrained":
            metrics = {}
        elif spec.kind == "gan":
            partner = by_name[spec.partner]
            discriminator = _fresh(partner)
            metrics = T.train_gan(model, discriminator, spec.recipe,
                                  _data(spec.dataset).x_train)
            seconds = time.perf_counter() - started
            trained[partner.name] = (discriminator, metrics, False, seconds)
        else:
            data = _data(spec.dataset)
            if spec.kind == "finetune":
                source = trained[spec.pretrained][0].state_dict()
                head = ("classifier.", "fc.")
                model.load_state_dict({k: v for k, v in source.items()
                                       if not k.startswith(head)}, strict=False)
            if spec.kind in ("classify", "finetune"):
                metrics = T.train_classifier(model, spec.recipe, data.x_train, data.y_train,
                                             data.x_test, data.y_test)
            elif spec.kind == "denoise":
                metrics = T.train_denoiser(model, spec.recipe, data.x_train, data.x_test)
            elif spec.kind == "autoencode":
                metrics = T.train_autoencoder(model, spec.recipe, data.x_train, data.x_test)
            else:
                raise ValueError(f"{spec.name}: unknown kind {spec.kind!r}")
        trained[spec.name] = (model, metrics, False, time.perf_counter() - started)
    results = []
    for spec in job.specs:
        model, metrics, cached, seconds = trained[spec.name]
        model.eval()
        if not cached:
            _atomic(job.cache_file(spec.name),
                    lambda tmp, m=model, x=metrics: torch.save(
                        {"state_dict": m.state_dict(), "metrics": x}, tmp))
        if spec.name in job.export:
            save_model(model, spec, job.zoo / spec.file_name)
        results.append({"name": spec.name, "metrics": metrics, "cached": cached,
                        "seconds": seconds, "untrained": spec.kind == "untrained"})
    return results


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model, spec: ModelSpec, path: Path) -> Path:
    """Write ``model`` in the spec's format (ONNX keeps batch norm as its own node, so
    every format stores the conv weights as trained)."""
    import torch

    from . import nets

    example = nets.example_input(spec.family, spec.in_channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = spec.precision == "float16"

    def state() -> dict:
        return {k: (v.half() if half and v.is_floating_point() else v).contiguous()
                for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if spec.fmt == "onnx":
                torch.onnx.export(model, (example,), str(tmp), dynamo=False,
                                  do_constant_folding=False, opset_version=17,
                                  input_names=["input"], output_names=["output"])
            elif spec.fmt == "torchscript":
                torch.jit.trace(model, example).save(str(tmp))
            elif spec.fmt == "state_dict":
                torch.save(state(), tmp)
            elif spec.fmt == "safetensors":
                from safetensors.torch import save_file

                save_file(state(), str(tmp), metadata={"format": "pt"})
            else:
                raise ValueError(f"unknown format {spec.fmt!r}")

    _atomic(path, write)
    return path


# --------------------------------------------------------------------------- main side

INDEX_FIELDS = ("model", "Name", "Paper", "Framework", "Precision", "Training-Dataset",
                "Pretraining-Dataset", "Visual Category", "Task", "Conv Weight Initializer",
                "Optimizer", "Accessible", "Dataset URL", "role", "twin", "family", "width",
                "seed", "train_samples", "steps", "learning_rate", "weight_decay", "score")


@dataclass
class ZooResult:
    """What :func:`make_zoo` did: the index, the rows, and counts for the summary."""

    zoo: Path
    index: Path
    rows: list[dict]
    trained: int = 0
    cached: int = 0
    exported: int = 0
    seconds: float = 0.0


def make_zoo(out: Path, specs: list[ModelSpec] | None = None, workers: int = 2,
             log: Callable[[str], None] | None = None) -> ZooResult:
    """Train or load every model of ``specs`` (default :func:`zoo_specs`), save it under
    ``out/zoo`` and write ``out/zoo/index.csv``.

    Model files in ``out/zoo`` that the zoo no longer has are removed, so that a
    build of the folder sees exactly this zoo.
    """
    started = time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    specs = specs if specs is not None else zoo_specs()
    out = Path(out)
    zoo, cache = out / "zoo", out / "cache"
    zoo.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = {spec.file_name for spec in specs}
    for stale in zoo.iterdir():
        if stale.is_file() and stale.suffix in SUFFIXES.values() and stale.name not in wanted:
            stale.unlink()
    manifest_path = cache / "manifest.json"
    try:  # file name -> {"stamp": key:format:precision, "metrics": {...}}
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    jobs = plan_jobs(specs, cache, zoo)
    for job in jobs:
        for spec in job.specs:
            entry = manifest.get(spec.file_name) or {}
            if (entry.get("stamp") != _stamp(spec, job.keys[spec.name])
                    or not (zoo / spec.file_name).exists()):
                job.export.add(spec.name)
    todo = [job for job in jobs if not job.cached or job.export]
    to_train = sum(len(job.specs) for job in jobs if not job.cached)
    log(f"demo: {len(specs)} models: {to_train} to train, {len(specs) - to_train} cached in "
        f"{cache}; {sum(len(j.export) for j in jobs)} file(s) to write in {zoo}")
    results: dict[str, dict] = {}
    done = 0

    def report(job_results: list[dict]) -> None:
        nonlocal done
        for item in job_results:
            done += 1
            results[item["name"]] = item
            verb = ("cached     " if item["cached"] else
                    "initialised" if item.get("untrained") else "trained    ")
            log(f"demo: [{done}/{len(specs)}] {verb} {item['name']}"
                + (f" in {item['seconds']:.1f} s" if not item["cached"]
                   and not item.get("untrained") else "")
                + (f" ({_score(item['metrics'])})" if item["metrics"] else ""))

    for job in jobs:
        if job not in todo:
            report([{"name": s.name, "metrics": manifest[s.file_name]["metrics"],
                     "cached": True, "seconds": 0.0} for s in job.specs])
    if todo:
        _run_jobs(todo, workers, report)
    manifest = {spec.file_name: {"stamp": _stamp(spec, job.keys[spec.name]),
                                 "metrics": results[spec.name]["metrics"]}
                for job in jobs for spec in job.specs}
    _atomic(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    rows = [index_row(spec, results[spec.name]["metrics"]) for spec in specs]
    index = zoo / "index.csv"

    def write_index(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(INDEX_FIELDS))
            writer.writeheader()
            writer.writerows(rows)

    _atomic(index, write_index)
    trained = sum(not item["cached"] for item in results.values())
    return ZooResult(zoo, index, rows, trained=trained, cached=len(results) - trained,
                     exported=sum(len(job.export) for job in jobs),
                     seconds=time.perf_counter() - started)


def _stamp(spec: ModelSpec, key: str) -> str:
    return f"{key}:{spec.fmt}:{spec.precision}"


def _run_jobs(jobs: list[Job], workers: int, report: Callable[[list[dict]], None]) -> None:
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            report(run_job(job))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        pending = {pool.submit(run_job, job) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    report(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _score(metrics: dict) -> str:
    if "test_accuracy" in metrics:
        return f"test accuracy {metrics['test_accuracy']:.3f}"
    if "denoised_mse" in metrics:
        return f"test MSE {metrics['noisy_mse']:.3f} noisy -> {metrics['denoised_mse']:.3f}"
    if "reconstruction_mse" in metrics:
        return f"test reconstruction MSE {metrics['reconstruction_mse']:.3f}"
    if "d_loss" in metrics:
        return f"final losses D {metrics['d_loss']:.2f}, G {metrics['g_loss']:.2f}"
    return ""


def index_row(spec: ModelSpec, metrics: dict) -> dict:
    """The meta index row of a model."""
    from . import nets

    recipe = spec.recipe
    trained = spec.kind != "untrained"
    pretraining = ""
    if spec.pretrained:
        pretraining = dataset_name(PHOTOS_GREY)
    name = f"{nets.FAMILY_NAMES[spec.family]}, width {spec.width}"
    if spec.role == "over-parameterised":
        name += f", {recipe.samples} training samples"
    elif not trained:
        name += ", untrained"
    return {
        "model": spec.name,
        "Name": name,
        "Paper": "",
        "Framework": "PyTorch",
        "Precision": spec.precision,
        "Training-Dataset": dataset_name(spec.dataset) if trained else "",
        "Pretraining-Dataset": pretraining,
        "Visual Category": spec.category,
        "Task": spec.task,
        "Conv Weight Initializer": INITIALIZERS[spec.init],
        "Optimizer": recipe.optimizer if trained else "",
        "Accessible": "trained by filterdb demo",
        "Dataset URL": DATASET_URLS.get(spec.dataset, ""),
        "role": spec.role,
        "twin": spec.twin,
        "family": spec.family,
        "width": spec.width,
        "seed": recipe.seed if recipe else "",
        "train_samples": metrics.get("train_samples", 0),
        "steps": recipe.steps if trained else 0,
        "learning_rate": recipe.lr if trained else "",
        "weight_decay": recipe.weight_decay if trained else "",
        "score": _score(metrics),
    }
