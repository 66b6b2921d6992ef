"""Build benchmark (issue 2): ``filterdb build`` against a bare onnx.load + h5py baseline.

Usage::

    .venv/bin/python benchmarks/bench_build.py --out bench-out [--models 200 --filters 50e6]
    .venv/bin/python benchmarks/bench_build.py --out bench-out --quick    # smoke run

Steps:

1. Generate a zoo of plain and residual CNNs with :func:`filterdb.synthetic.make_cnn`
   (not timed; reused when ``OUT/zoo-*/manifest.json`` matches). Widths are chosen per
   model so the 3x3 filters reach ``--filters``; sizes vary and the largest model holds
   3x the mean. The largest model sits among the first models, so the subset run of
   step 4 contains it.
2. Baseline, in a subprocess: onnx.load every model in sorted order and append its
   3x3 Conv weights to one resizable chunked h5py dataset. Nothing else.
3. ``python -m filterdb build ZOO -o DB --workers 1`` and ``--workers 2``, each into a
   fresh folder, stderr redirected to a file (not a tty, as in CI).
4. ``--workers 1`` on the first ``--subset`` models only: is the peak flat in the
   number of models?

Every run is timed (wall clock of the subprocess, interpreter start included) while a
thread samples the whole process tree every 50 ms with psutil: the sum of RSS and the
sum of PSS (shared pages split between the processes that map them) over the process
and all its descendants. The zoo is read once before the runs, so every run reads it
from the page cache. Output databases are checked against the baseline file (filter
count and sampled rows) and deleted after each run.

Writes ``OUT/build.md`` and ``OUT/build.json`` (``build-quick.*`` with ``--quick``); a
full run also replaces the section "## Build (issue 2)" of BENCHMARKS.md at the
repository root.
MB means 2**20 bytes throughout.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
ZOO_VERSION = 1
from benchmarks_md import replace_section  # noqa: E402

SECTION = "## Build (issue 2)"
TIME_TARGET = 1.5  # build seconds / baseline seconds
MEMORY_SLACK = 300 * MB  # peak tree memory <= 2 x largest model's weights + this
SAMPLE_SECONDS = 0.05


# --------------------------------------------------------------------------- zoo


def _count_3x3(widths: list[int]) -> int:
    """3x3 filters of make_cnn(widths): a 3-channel 3x3 stem, then 3x3 convs."""
    return 3 * widths[0] + sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def _widths(target: int, depth: int) -> list[int]:
    """Smallest width w with [w/2, w, w, ...] (``depth`` convs) holding >= target filters."""
    def make(w: int) -> list[int]:
        return [max(4, w // 2)] + [w] * (depth - 1)

    w = max(4, int(np.sqrt(target / (depth - 1.5))))
    while w > 4 and _count_3x3(make(w - 1)) >= target:
        w -= 1
    while _count_3x3(make(w)) < target:
        w += 1
    return make(w)


def zoo_plan(n_models: int, n_filters: int, seed: int = 0) -> list[dict]:
    """Per-model kind, widths and filter counts; model 2 is the largest, 3x the mean."""
    if n_models < 4:
        raise SystemExit("--models must be at least 4")
    rng = np.random.default_rng(seed)
    factors = rng.lognormal(0.0, 0.45, n_models)
    factors = np.clip(factors, 0.25 * factors.mean(), 2.2 * factors.mean())
    big = 2
    others = factors.sum() - factors[big]
    factors[big] = 3.0 * others / (n_models - 3)  # then factors[big] == 3 * factors.mean()
    targets = np.ceil(n_filters * factors / factors.sum()).astype(int)
    plan = []
    for number, target in enumerate(targets):
        kind = ("plain", "residual")[number % 2]
        widths = _widths(int(target), depth=6 + number % 5)
        filters = _count_3x3(widths)
        plan.append({
            "file": f"m{number:04d}-{kind}.onnx",
            "kind": kind,
            "seed": seed * 100003 + number,
            "widths": widths,
            "filters_3x3": filters,
            # float32 initializers: the 3x3 convs plus the 10-class fc head
            "weight_bytes": 4 * (9 * filters + 10 * widths[-1]),
        })
    return plan


def _make_one(folder: str, entry: dict) -> int:
    from filterdb.synthetic import make_cnn

    path = make_cnn(Path(folder) / entry["file"], entry["widths"], kind=entry["kind"],
                    seed=entry["seed"])
    return path.stat().st_size


def ensure_zoo(out: Path, n_models: int, n_filters: int, seed: int) -> tuple[Path, dict]:
    """The generated zoo folder and its manifest, generating it unless it matches."""
    zoo = out / f"zoo-{n_models}m-{n_filters}f-s{seed}"
    manifest_path = zoo / "manifest.json"
    params = {"version": ZOO_VERSION, "models": n_models, "filters": n_filters, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if (manifest.get("params") == params and all(
                (zoo / m["file"]).is_file()
                and (zoo / m["file"]).stat().st_size == m["file_bytes"]
                for m in manifest["models"])):
            print(f"reusing zoo {zoo}", flush=True)
            return zoo, manifest
    plan = zoo_plan(n_models, n_filters, seed)
    need = sum(m["weight_bytes"] for m in plan) * 3.5  # zoo, baseline file, one database
    free = shutil.disk_usage(out).free
    if free < need:
        raise SystemExit(f"{out}: {free / MB:,.0f} MB free, the benchmark needs about "
                         f"{need / MB:,.0f} MB")
    shutil.rmtree(zoo, ignore_errors=True)
    zoo.mkdir(parents=True)
    print(f"generating {n_models} models, {sum(m['filters_3x3'] for m in plan):,} 3x3 "
          f"filters into {zoo} ...", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_make_one, [str(zoo)] * len(plan), plan))
    for entry, size in zip(plan, sizes, strict=True):
        entry["file_bytes"] = size
    manifest = {"params": params, "models": plan}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return zoo, manifest


def subset_zoo(out: Path, zoo: Path, manifest: dict, count: int) -> tuple[Path, list[dict]]:
    """A folder of symlinks to the first ``count`` models (in name order)."""
    models = sorted(manifest["models"], key=lambda m: m["file"])[:count]
    folder = out / f"{zoo.name}-first{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for m in models:
        (folder / m["file"]).symlink_to((zoo / m["file"]).resolve())
    return folder, models


def warm_cache(zoo: Path) -> None:
    """Read every model file once so that all runs read from the page cache."""
    for path in sorted(zoo.glob("*.onnx")):
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


# --------------------------------------------------------------------------- baseline


def baseline(zoo: Path, output: Path) -> None:
    """onnx.load every model; append its 3x3 Conv weights to one h5py dataset. Nothing else."""
    import h5py
    import onnx
    from onnx import numpy_helper

    total = 0
    with h5py.File(output, "w") as handle:
        dataset = handle.create_dataset("filters", shape=(0, 3, 3), maxshape=(None, 3, 3),
                                        chunks=(32768, 3, 3), dtype=np.float32)
        for path in sorted(zoo.rglob("*.onnx")):
            model = onnx.load(os.fspath(path))
            conv_weights = {node.input[1] for node in model.graph.node
                            if node.op_type == "Conv" and len(node.input) > 1}
            for tensor in model.graph.initializer:
                if tensor.name in conv_weights and list(tensor.dims[2:]) == [3, 3]:
                    filters = numpy_helper.to_array(tensor).astype(np.float32, copy=False)
                    filters = filters.reshape(-1, 3, 3)
                    dataset.resize(total + len(filters), axis=0)
                    dataset[total:] = filters
                    total += len(filters)
    print(json.dumps({"filters": total}))


# --------------------------------------------------------------------------- measuring


def _hwm(pid: int) -> int:
    """The kernel's peak RSS (VmHWM) of one process, 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples RSS and PSS summed over a process and all its descendants."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.done = threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self.at_peak: list[dict] = []
        self.hwm: dict[int, int] = {}
        self.samples = 0

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = pss = 0
            rows = []
            for process in processes:
                try:
                    info = process.memory_full_info()
                    name = " ".join(process.cmdline()[1:4])[:60]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += info.pss
                rows.append({"pid": process.pid, "cmd": name, "rss_mb": info.rss / MB,
                             "pss_mb": info.pss / MB})
                self.hwm[process.pid] = max(self.hwm.get(process.pid, 0), _hwm(process.pid))
            self.samples += 1
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(rows))
            if pss > self.peak_pss:
                self.peak_pss, self.at_peak = pss, rows
            self.done.wait(self.interval)


def measure(name: str, command: list[str], log: Path, src: Path | None = None,
            cgroup_procs: Path | None = None) -> dict:
    """Run ``command`` with stdout/stderr to ``log`` (not a tty); time it, sample memory.

    Dirty pages of earlier runs are written out first (``sync``, not timed), so no run
    pays for the write-back of another. ``cgroup_procs``: the ``cgroup.procs`` file of
    a cgroup the command starts in (with its children).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    os.sync()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   preexec_fn=None if cgroup_procs is None else
                                   lambda: cgroup_procs.write_text(str(os.getpid())))
        sampler = TreeSampler(process.pid)
        sampler.start()
        code = process.wait()
        seconds = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tree: workers are waited
    cpu = (children.ru_utime + children.ru_stime
           - children_before.ru_utime - children_before.ru_stime)
    if code != 0:
        raise SystemExit(f"{name}: exit status {code}; see {log}:\n{log.read_text()[-3000:]}")
    return {"run": name, "command": command, "seconds": seconds, "cpu_seconds": cpu,
            "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
            "sum_process_hwm": sum(sampler.hwm.values()),
            "processes": sampler.peak_processes, "samples": sampler.samples,
            "at_peak_pss": sampler.at_peak, "log": str(log)}


def check_database(database: Path, reference: Path, expected: int, models: int,
                   seed: int = 1) -> dict:
    """Compare a built database with the baseline file: counts and sampled filter rows."""
    import h5py

    report = json.loads((database.parent / (database.name + ".build.json")).read_text())
    problems = []
    if report["summary"]["added"] != models:
        problems.append(f"{report['summary']} added, expected {models}")
    added = report["filters_added"].get("3x3", 0)
    if added != expected:
        problems.append(f"report says {added:,} 3x3 filters, expected {expected:,}")
    rng = np.random.default_rng(seed)
    with h5py.File(database, "r") as db, h5py.File(reference, "r") as ref:
        built, base = db["filters"], ref["filters"]
        if len(built) != expected or len(base) < expected:
            problems.append(f"database holds {len(built):,} filters, expected {expected:,}")
        else:
            for start in [0, expected - 1024, *rng.integers(0, expected - 1024, 16)]:
                start = max(0, int(start))
                if not np.array_equal(built[start:start + 1024], base[start:start + 1024]):
                    problems.append(f"filters {start}..{start + 1024} differ from the baseline")
                    break
    return {"build_seconds": report["seconds"], "problems": problems}


# --------------------------------------------------------------------------- report


def snapshot(rev: str, out: Path) -> tuple[Path, str]:
    """``src/`` of the repository at ``rev``, exported with git archive (read-only)."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    folder = out / f"src-{commit}"
    if not (folder / "src" / "filterdb").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src", commit


def machine() -> dict:
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle
                    if line.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"commit": commit, "cpus": os.cpu_count(), "cpu": cpu,
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


WHERE_THE_TIME_GOES = """\
Where the time beyond the baseline goes (perf, py-spy and per-component CPU timers on
this zoo): besides reading and writing the same bytes, a worker computes the sha256 of
every file (about 1.3 s of CPU for the 1.7 GB: the published `sha256` column, and how an
append recognises known models; OpenSSL with SHA-NI hashes 1.5 GB/s here) and one BLAKE3
pass over the conv weights that also counts NaN and Inf (0.36 s: the duplicate-model
and shared-layer hashes and the shard checksums that `verify` recomputes). Both run in
threads beside the reading and writing, so one worker already keeps two cores busy and a
second worker adds less than it would to a single-threaded pipeline. The main process
imports pandas and PyTables and rewrites the master at each commit (about 0.2 s of CPU
in all). Three process-level settings took the 2-worker build from about 1.9x to
1.5-1.7x the baseline (measured alternately on this zoo: system time 2.5 s -> 1.1 s):
workers keep freed heap memory between models (glibc `mallopt`: blocks up to 32 MB from
the heap, 256 MB of free heap kept), where each model's buffers were otherwise new pages
that the kernel faulted in and zeroed again; a single-threaded `filterdb build` forks its
workers instead of spawning fresh interpreters; and it starts no BLAS threads, which
spin for a while after numpy's import and are never used by a build. The sha256 is
taken from a read-only mapping of the file. The ONNX parser gets the file without the
raw data of its large initializers (a scan of the protobuf wire format cuts them out),
and each of those is read once from the file into its array, where parsing copied every
weight twice (into the parser's memory, then into a Python bytes object): reading the
zoo went from about 1.0-1.1 s to 0.7-0.8 s of CPU and the 2-worker build's CPU time
from about 5.5 s to 4.4 s. The default build does not fsync: its renames keep a killed build whole;
`--durable` also fsyncs every shard and the master at each commit (the `durable` row;
this disk writes about 240 MB/s with fdatasync, so the row depends on how much of the
write-back the build overlaps). Unless `--no-quality`, the quality metrics add the
orthogonality Gram products and the statistics kernel (numba, loaded by each worker
as it starts, while the main process plans the zoo: about 120 MB more RSS per worker)."""

#: (workers, quality metrics, --durable) of the full-zoo builds.
BUILD_RUNS = ((1, True, False), (2, True, False), (1, False, False), (2, False, False),
              (2, False, True))


def run_name(workers: int, quality: bool, durable: bool) -> str:
    return (f"workers={workers}" + ("" if quality else " no-quality")
            + (" durable" if durable else ""))


def table(results: list[dict], base: dict, bound: int) -> str:
    header = ("| run | models | seconds | x baseline | median x baseline | CPU s "
              "| filters/s | weights MB/s | file MB/s "
              "| peak RSS tree MB | peak PSS tree MB | bound MB | time target | memory target |")
    lines = [header, "|" + "---|" * 14]
    base_median = float(np.median(base["rounds"]))
    for r in results:
        ratio = r["seconds"] / base["seconds"]
        is_build = r["run"] != "baseline"
        is_full = is_build and "first" not in r["run"]
        time_ok = ("pass" if ratio <= TIME_TARGET else "**fail**") if is_full else "-"
        memory_ok = "-"
        if is_build:
            memory_ok = " / ".join(
                f"{kind} {'pass' if r[key] <= bound else '**fail**'}"
                for kind, key in (("RSS", "peak_rss"), ("PSS", "peak_pss")))
        lines.append(
            f"| {r['run']} | {r['models']} | {r['seconds']:.1f} | {ratio:.2f} "
            f"| {float(np.median(r['rounds'])) / base_median:.2f} | {r['cpu_seconds']:.1f} "
            f"| {r['filters'] / r['seconds']:,.0f} "
            f"| {r['weight_bytes'] / MB / r['seconds']:.1f} "
            f"| {r['file_bytes'] / MB / r['seconds']:.1f} "
            f"| {r['peak_rss'] / MB:,.0f} | {r['peak_pss'] / MB:,.0f} "
            f"| {bound / MB:,.0f} | {time_ok} | {memory_ok} |")
    return "\n".join(lines)


def interpretation(results: list[dict], base: dict, bound: int, largest: int) -> str:
    runs = {r["run"]: r for r in results}
    sentences = []
    for workers, quality, durable in BUILD_RUNS:
        name = run_name(workers, quality, durable)
        r = runs[name]
        ratio = r["seconds"] / base["seconds"]
        sentences.append(
            f"`{name}` takes {ratio:.2f}x the baseline's time "
            f"({'meets' if ratio <= TIME_TARGET else 'misses'} the {TIME_TARGET}x target) "
            f"with a tree peak of {r['peak_rss'] / MB:,.0f} MB RSS / "
            f"{r['peak_pss'] / MB:,.0f} MB PSS against the {bound / MB:,.0f} MB bound "
            f"(2 x {largest / MB:.1f} MB + 300 MB).")
    subset = next(r for r in results if "first" in r["run"])
    full = runs["workers=1"]
    sentences.append(
        f"On the first {subset['models']} models (which include the largest) the "
        f"single-worker peak PSS is {subset['peak_pss'] / MB:,.0f} MB against "
        f"{full['peak_pss'] / MB:,.0f} MB for all {full['models']} models "
        f"(ratio {full['peak_pss'] / subset['peak_pss']:.2f}; RSS ratio "
        f"{full['peak_rss'] / subset['peak_rss']:.2f}).")
    sentences.append(
        f"The baseline itself peaks at {base['peak_rss'] / MB:,.0f} MB RSS: one "
        "interpreter with onnx, numpy and h5py and one model in memory.")
    return " ".join(sentences)


def run_benchmark(args: argparse.Namespace) -> None:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_filters = int(float(args.filters))
    zoo, manifest = ensure_zoo(out, args.models, n_filters, args.seed)
    models = sorted(manifest["models"], key=lambda m: m["file"])
    largest = max(m["weight_bytes"] for m in models)
    bound = 2 * largest + MEMORY_SLACK
    subset_count = min(args.subset, len(models))
    subset, subset_models = subset_zoo(out, zoo, manifest, subset_count)
    if max(m["weight_bytes"] for m in subset_models) != largest:
        raise SystemExit("the subset does not contain the largest model")

    def sizes(entries: list[dict]) -> dict:
        return {"models": len(entries),
                "filters": sum(m["filters_3x3"] for m in entries),
                "weight_bytes": sum(9 * 4 * m["filters_3x3"] for m in entries),
                "file_bytes": sum(m["file_bytes"] for m in entries)}

    full_sizes, subset_sizes = sizes(models), sizes(subset_models)
    print(f"zoo: {full_sizes['models']} models, {full_sizes['filters']:,} 3x3 filters, "
          f"{full_sizes['file_bytes'] / MB:,.0f} MB of files; largest model "
          f"{largest / MB:.1f} MB of weights (mean "
          f"{np.mean([m['weight_bytes'] for m in models]) / MB:.1f} MB)", flush=True)
    print(f"disk: {shutil.disk_usage(out).free / 2**30:.1f} GB free in {out}", flush=True)
    warm_cache(zoo)

    runs_dir = out / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    reference = runs_dir / "baseline.h5"
    python = sys.executable
    info = machine()  # the commit measured: src may change while the benchmark runs
    src = None
    if args.commit:
        src, info["commit"] = snapshot(args.commit, out)
        print(f"benchmarking filterdb at commit {info['commit']} ({src})", flush=True)
    else:
        print(f"benchmarking the working tree ({info['commit']})", flush=True)
    # byte-compiled first, as an installed package is (PYTHONDONTWRITEBYTECODE=1
    # would otherwise make every run and worker compile filterdb's sources again)
    compileall.compile_dir(os.fspath(src or ROOT / "src"), quiet=1)
    load_before = os.getloadavg()
    raw: dict[str, list[dict]] = {}

    def build_run(name: str, source: Path, workers: int, expect: dict,
                  quality: bool = True, durable: bool = False) -> dict:
        folder = runs_dir / name.replace("=", "").replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        database = folder / "db.h5"
        command = [python, "-m", "filterdb", "build", str(source), "-o", str(database),
                   "--workers", str(workers), *([] if quality else ["--no-quality"]),
                   *(["--durable"] if durable else [])]
        result = measure(name, command, runs_dir / f"{folder.name}.log", src)
        result.update(expect)
        result.update(check_database(database, reference, expect["filters"],
                                     expect["models"]))
        shutil.rmtree(folder)
        return result

    for repeat in range(args.repeat):
        print(f"round {repeat + 1}/{args.repeat}", flush=True)
        reference.unlink(missing_ok=True)
        result = measure("baseline", [python, os.fspath(Path(__file__).resolve()),
                                      "--baseline-child", str(zoo), str(reference)],
                         runs_dir / "baseline.log")
        result.update(full_sizes)
        raw.setdefault("baseline", []).append(result)
        print(f"  baseline: {result['seconds']:.1f} s", flush=True)
        for workers, quality, durable in BUILD_RUNS:
            name = run_name(workers, quality, durable)
            result = build_run(name, zoo, workers, full_sizes, quality, durable)
            raw.setdefault(name, []).append(result)
            print(f"  {name}: {result['seconds']:.1f} s, peak RSS "
                  f"{result['peak_rss'] / MB:.0f} MB, PSS {result['peak_pss'] / MB:.0f} MB"
                  + (f"  PROBLEMS: {result['problems']}" if result["problems"] else ""),
                  flush=True)
    name = f"workers=1 first {subset_count}"
    result = build_run(name, subset, 1, subset_sizes)
    raw[name] = [result]
    print(f"  {name}: {result['seconds']:.1f} s, peak PSS {result['peak_pss'] / MB:.0f} MB",
          flush=True)
    reference.unlink(missing_ok=True)
    load_after = os.getloadavg()

    # Best time (least disturbed by other jobs on the machine) and highest peak.
    results = []
    for runs in raw.values():
        merged = dict(min(runs, key=lambda r: r["seconds"]))
        for key in ("peak_rss", "peak_pss", "sum_process_hwm"):
            merged[key] = max(r[key] for r in runs)
        merged["rounds"] = [r["seconds"] for r in runs]
        results.append(merged)
    base = results[0]
    problems = [f"{r['run']}: {p}" for r in results for p in r.get("problems", [])]

    command = shlex.join([".venv/bin/python", "benchmarks/bench_build.py", *sys.argv[1:]])
    markdown = table(results, base, bound)
    text = interpretation(results, base, bound, largest)
    notes = (
        f"Zoo: {full_sizes['models']} generated ONNX CNNs (plain and residual), "
        f"{full_sizes['filters']:,} 3x3 filters, {full_sizes['weight_bytes'] / MB:,.0f} MB "
        f"of 3x3 weights in {full_sizes['file_bytes'] / MB:,.0f} MB of files; largest model "
        f"{largest / MB:.1f} MB of weights, mean "
        f"{np.mean([m['weight_bytes'] for m in models]) / MB:.1f} MB. "
        "Seconds are the wall time of the whole subprocess (interpreter start included)"
        + (f", best of {args.repeat} rounds" if args.repeat > 1 else "")
        + "; median x baseline: the median round against the baseline's median round. "
        "CPU s: user + system time of the whole process tree in the best round, a "
        "measure of the work done that other jobs on the machine disturb less than the "
        "wall time. The zoo is in the page cache for every run. Weights MB/s counts 3x3 "
        "float32 "
        "weights, file MB/s the model files read. Peaks are the sums over the process tree "
        "sampled every 50 ms (MB = 2^20 bytes). Each run starts after a sync. "
        + ("Seconds per round: " + "; ".join(
            f"{r['run']} " + ", ".join(f"{t:.1f}" for t in r["rounds"]) for r in results)
           + ". " if args.repeat > 1 else "")
        + f"filterdb at commit {info['commit']}. "
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(other jobs may share the machine; compare the ratios).")
    stem = "build-quick" if args.quick else "build"  # a smoke run keeps the full figures
    (out / f"{stem}.md").write_text(f"{markdown}\n\n{notes}\n\n{text}\n")
    (out / f"{stem}.json").write_text(json.dumps(
        {"command": command, "machine": info, "largest_weight_bytes": largest,
         "bound_bytes": bound, "load_before": load_before, "load_after": load_after,
         "problems": problems, "results": results}, indent=1, default=str))
    print()
    print(markdown)
    print()
    print(notes)
    print(text)
    if problems:
        print("DATABASE CHECK PROBLEMS:\n  " + "\n  ".join(problems))
    if not args.quick:
        section = (
            f"{SECTION}\n\n"
            f"Command (from the repository root):\n\n```\n{command}\n```\n\n"
            f"Machine: {info['cpus']} cores ({info['cpu']}), {info['ram_gb']} GB RAM, "
            f"Python {info['python']}, {info['platform']}; filterdb at commit "
            f"{info['commit']}.\n\n"
            f"{markdown}\n\n"
            "Targets: build time <= 1.5x the baseline (onnx.load every model and append "
            "its 3x3 weights to one h5py dataset, nothing else; same script, same run); "
            "peak memory of the process tree <= 2x the largest model's weights + 300 MB, "
            f"flat in the number of models. {notes}\n\n{text}\n\n{WHERE_THE_TIME_GOES}\n")
        if problems:
            section += "\nDatabase check problems: " + "; ".join(problems) + "\n"
        print(f"\nwrote {out / 'build.md'} and {replace_section(section)}")
    else:
        print(f"\nwrote {out / 'build-quick.md'} (--quick: BENCHMARKS.md left alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"),
                        help="output folder (zoo, logs, build.md); default bench-out")
    parser.add_argument("--models", type=int, default=200, help="models in the zoo")
    parser.add_argument("--filters", default="50e6", help="3x3 filters in the zoo (at least)")
    parser.add_argument("--subset", type=int, default=50,
                        help="models of the flatness run (workers=1 on the first N)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of baseline/workers=1/workers=2 (best time, highest peak)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commit", metavar="REV",
                        help="benchmark src/ as committed at REV (exported with git archive "
                             "into OUT), not the working tree that others may be editing")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 models, 2M filters, subset 5")
    parser.add_argument("--baseline-child", nargs=2, type=Path, metavar=("ZOO", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline(*args.baseline_child)
        return
    if args.quick:
        args.models, args.filters, args.subset = 20, "2e6", 5
    run_benchmark(args)


if __name__ == "__main__":
    main()
