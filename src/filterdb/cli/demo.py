"""``filterdb demo [-o DIR]``: train a small zoo, build its database, check, analyse and
report it."""

from __future__ import annotations

import importlib.util
import sys
import time
from argparse import Namespace
from pathlib import Path

from ..errors import FilterDBError
from . import build as build_command
from . import info as info_command
from .running import DEFAULT_MEMORY_GIB, DEFAULT_SECONDS

NAME = "demo"
HELP = ("Train a small, diverse model zoo on the CPU (scikit-learn's digits and sample "
        "photos), build its filter database, check its quality and analyse it.")

#: Kernel shapes the demo database stores (3x3 always; 1x1 pointwise and 5x5 GAN layers).
SHAPES = "3x3,1x1,5x5"


def add_arguments(parser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("demo"),
                        help="folder for the zoo, its cache, the database and the analysis "
                             "(default ./demo)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for training and building (default 2)")
    parser.add_argument("--models", type=int, metavar="N",
                        help="train only N models of the zoo, for a quick look")
    parser.add_argument("--no-analysis", dest="analysis", action="store_false",
                        help="stop after the database and its quality summary (the report "
                             "then shows composition and quality only)")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args) -> int:
    started = time.perf_counter()
    missing = [name for name in ("torch", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        raise FilterDBError(f"the demo trains its models with torch and scikit-learn; "
                            f"missing: {', '.join(missing)} (pip install 'filterdb[dev]')")
    if args.workers < 1:
        raise FilterDBError("--workers must be at least 1")
    from ..demo.zoo import make_zoo, pick, zoo_specs
    from ..store import layout

    out = _demo_folder(args.output)
    specs = zoo_specs()
    if args.models is not None:
        specs = pick(specs, args.models)
    _log(f"demo: training a zoo of {len(specs)} models in {out} "
         f"({args.workers} worker(s); trained models are cached)")
    zoo = make_zoo(out, specs, workers=args.workers, log=_log)
    _log(f"demo: zoo ready in {zoo.seconds:.1f} s ({zoo.trained} trained, {zoo.cached} from the "
         f"cache, {zoo.exported} file(s) written)")

    database = out / "filters.h5"
    for stale in (database, layout.report_path(database)):
        stale.unlink(missing_ok=True)
    shards = layout.shards_dir(database)
    if shards.is_dir():
        for shard in shards.glob("*.h5"):
            shard.unlink()
    _log(f"demo: building {database}")
    phase = time.perf_counter()
    status = build_command.run(Namespace(zoo=zoo.zoo, output=database, index=zoo.index,
                                         workers=args.workers, shapes=SHAPES, strict=False,
                                         quality=True, allow_unsafe_pickle=False,
                                         only_selected=False, count_duplicates=True,
                                         verify_run=True,
                                         require_run=False, durable=False,
                                         model_timeout=build_command.MODEL_TIMEOUT,
                                         run_timeout=DEFAULT_SECONDS,
                                         run_memory=DEFAULT_MEMORY_GIB))
    if status:
        return status
    _log(f"demo: database built in {time.perf_counter() - phase:.1f} s")
    info_command.run(Namespace(database=database))
    _quality_summary(database)

    analysis = out / "analysis"
    if args.analysis:
        phase = time.perf_counter()
        analysis = _analyse(database, analysis)
        if analysis is not None:
            _log(f"demo: analysis written in {time.perf_counter() - phase:.1f} s")
    report = _report(database, out / "report.html", args.analysis)
    print()
    print(f"demo: zoo       {zoo.zoo} ({len(specs)} models; index {zoo.index})")
    print(f"demo: cache     {out / 'cache'}")
    print(f"demo: database {database}; open it with filterdb.open({str(database)!r})")
    print(f"demo: build report {layout.report_path(database)}")
    if analysis is not None and args.analysis:
        print(f"demo: analysis  {analysis}")
    print(f"demo: report    {report}")
    _log(f"demo: done in {time.perf_counter() - started:.1f} s")
    return 0


#: Written into the demo's output folder: the demo replaces the database and removes
#: other model files there only in a folder that carries it.
MARKER = ".filterdb-demo"


def _demo_folder(out: Path) -> Path:
    """``out``, made and marked as the demo's; a folder that holds anything but a former
    demo run (the marker, or the model cache of a demo from before it) is refused, as
    the demo replaces ``filters.h5`` and removes model files there."""
    if out.exists() and not out.is_dir():
        raise FilterDBError(f"{out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (
            (out / MARKER).is_file() or (out / "cache" / "manifest.json").is_file()):
        raise FilterDBError(f"{out}: holds files of its own and is not a demo folder (the "
                            "demo replaces its database and model files); choose a new or "
                            "empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("filterdb demo output: filterdb demo replaces the files "
                                  "here\n")
    except OSError as error:
        raise FilterDBError(f"{out}: cannot write the demo here "
                            f"({error.strerror or error})") from None
    return out


def _quality_summary(database: Path) -> None:
    """Verdict counts, the models that look untrained or have degenerated layers, and
    each over-parameterised model beside its normally trained twin."""
    from .. import open as open_db

    models = open_db(database).models
    print("quality verdicts:")
    for verdict, count in models["quality_verdict"].value_counts().items():
        roles = models.loc[models["quality_verdict"] == verdict, "role"].value_counts()
        detail = ", ".join(f"{n} {role}" for role, n in roles.items())
        print(f"  {count:>5}  {verdict} ({detail})")
    untrained = models[models["quality_verdict"] == "looks untrained"]
    if len(untrained):
        print("models that look untrained: " + ", ".join(untrained["model"]))
    degenerated = models[models["quality_verdict"] == "has degenerated layers"]
    degenerated = degenerated.sort_values("degenerated_share", ascending=False)
    if len(degenerated):
        print("models with degenerated layers: " + ", ".join(
            f"{row.model} ({row.degenerated_share:.0%})" for row in degenerated.itertuples()))
    by_name = models.set_index("model")
    for row in models[models["role"] == "over-parameterised"].itertuples():
        if row.twin in by_name.index:
            twin = by_name.loc[row.twin]
            print(f"over-parameterised: {row.model} ({row.train_samples} samples) "
                  f"{row.degenerated_share:.0%} of layers degenerated; its twin {row.twin} "
                  f"({twin['train_samples']} samples) {twin['degenerated_share']:.0%}")


def _analyse(database: Path, out: Path) -> Path | None:
    """Distribution shift by task, visual category and depth, written by ``filterdb
    analyze`` when that command is installed."""
    if (importlib.util.find_spec("filterdb.analysis.engine") is None
            or importlib.util.find_spec("filterdb.cli.analyze") is None):
        _log("demo: analysis skipped: filterdb.analysis is not installed in this version")
        return None
    from . import parser

    argv = ["analyze", str(database), "-o", str(out),
            "--by", "Task", "--by", "Visual Category", "--by", "depth"]
    if importlib.util.find_spec("filterdb.analysis.plots") is None:
        argv.append("--no-figures")
    _log(f"demo: analysing {database} by Task, Visual Category and depth into {out}")
    args = parser().parse_args(argv)
    status = args.run(args)
    if status:
        raise FilterDBError(f"the analysis of {database} failed (status {status})")
    return out


def _report(database: Path, path: Path, analysis: bool) -> Path:
    """The HTML report of the demo database (``filterdb report``)."""
    from ..report import write_report

    phase = time.perf_counter()
    write_report(database, path, log=_log, analysis=analysis, progress=True)
    _log(f"demo: report written in {time.perf_counter() - phase:.1f} s")
    return path
