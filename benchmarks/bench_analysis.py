"""Analysis benchmark (issue 5): the distribution-shift analysis at 10 M to 100 M filters.

Usage::

    .venv/bin/python benchmarks/bench_analysis.py --out bench-out [--sizes 10M,30M,100M]
    .venv/bin/python benchmarks/bench_analysis.py --out bench-out --quick   # 1M, 3M smoke run

For every size N:

1. ``filterdb synth -o DB --filters N`` (cached in ``OUT/analysis/``; timed when made).
2. Every shard is read once (not timed), so all runs read the filters from the page
   cache: the runs compare computation, not the disk.
3. (a) the I/O limit: a plain chunked read of ``/filters`` with h5py, 2**20 rows per
   read, nothing else.
4. (c) ``filterdb analyze DB --by Task --by "Visual Category" --by depth -o OUT``:
   PCA, projections, histograms and drifts for three groupings, CSV output.
5. (b) the published in-memory approach, where it fits: every filter into one float16
   array, scaled by its peak, ``sklearn.decomposition.PCA(9)`` fitted and applied,
   then ``np.histogram`` (70 bins, one shared range) per group and component for the
   three groupings. It needs about 18 B (float16) + 3 x 72 B (float64 copies that
   sklearn makes of the input, the centred data and the projections) per filter; a
   size whose estimate exceeds ``--inmemory-limit-gb`` (default 12) is skipped.

Each run is a subprocess timed by wall clock (interpreter start included) while a
thread samples RSS and PSS summed over its process tree every 50 ms (the sampler of
``bench_build.py``). In the same run, one more subprocess measures in process: in
one warm interpreter (imports done, kernels loaded) it times (a) the same h5py read
loops and (c) the same analysis through the Python API
(:func:`filterdb.analysis.analyze`, same groupings, no figures, the same files
written), best of the rounds: the computation without interpreter start and imports.
The slope of (c)'s seconds against N extrapolates to the
1,464,797,156 filters of the published dataset. A full run replaces the section
"## Analysis (issue 5)" of BENCHMARKS.md. MB means 2**20 bytes, GB 2**30.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import MB, ROOT, machine, measure  # noqa: E402

GB = 2**30
from benchmarks_md import replace_section  # noqa: E402
from memory_cgroup import MemoryCgroup, available  # noqa: E402

SECTION = "## Analysis (issue 5)"
PUBLISHED = 1_464_797_156
READ_ROWS = 1 << 20
BINS = 70
SYNTH_VERSION = 1
#: In-memory approach: bytes per filter (float16 array + three float64 n x 9 arrays).
INMEMORY_BYTES = 18 + 3 * 72
GROUPINGS = ("Task", "Visual Category", "depth")
#: filterdb analyze reads the filters three times: PCA moments, coefficient range,
#: histograms.
ANALYZE_PASSES = 3
TARGET_VS_INMEMORY = 3.0  # (b) seconds / (c) seconds >= this
TARGET_VS_READ = 3.0  # (c) seconds / (a) seconds <= this
TARGET_RSS = 1 * GB
#: Memory a run in the capped cgroup may use besides the page cache (the analysis tree
#: peaks below 400 MB).
CAPPED_ALLOWANCE = 512 * MB


def parse_count(text: str) -> int:
    text = text.strip()
    factor = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def label(n: int) -> str:
    return f"{n / 1e6:g}M"


# --------------------------------------------------------------------------- children


def child_read(database: Path, cache: bool) -> None:
    """(a) Read /filters in 2**20-row slices with h5py; nothing else.

    ``cache=False`` opens the file with ``rdcc_nbytes=0``: with the default chunk
    cache, h5py reads of the virtual /filters are several times slower and hold
    memory per source shard.
    """
    import h5py

    started = time.perf_counter()
    total, checksum = 0, 0.0
    with h5py.File(database, "r", **({} if cache else {"rdcc_nbytes": 0})) as handle:
        dataset = handle["filters"]
        n = len(dataset)
        for start in range(0, n, READ_ROWS):
            block = dataset[start:start + READ_ROWS]
            total += len(block)
            checksum += float(block[-1, 1, 1])  # touch the data
    print(json.dumps({"filters": total, "seconds": time.perf_counter() - started,
                      "checksum": checksum}))


def write_outputs(result, out: Path) -> None:
    """The files ``filterdb analyze --no-figures`` writes: pca.json, drift_* and groups_*."""
    from filterdb.analysis import slug
    from filterdb.csvsafe import to_csv

    out.mkdir(parents=True, exist_ok=True)
    result.basis.save(out / "pca.json")
    for name in GROUPINGS:
        grouping = result.groupings[name]
        to_csv(grouping.drift, out / f"drift_{slug(name)}.csv")
        to_csv(grouping.counts, out / f"groups_{slug(name)}.csv", index=False)


def child_inprocess(database: Path, out: Path, rounds: int) -> None:
    """(a) and (c) in one warm interpreter: imports done and the kernels loaded first
    (not timed), then per round both plain reads and the analysis through the API."""
    started = time.perf_counter()
    import h5py

    import filterdb
    from filterdb.analysis import analyze, preload

    preload.load(9)
    setup = time.perf_counter() - started

    def read(cache: bool) -> float:
        t = time.perf_counter()
        with h5py.File(database, "r", **({} if cache else {"rdcc_nbytes": 0})) as handle:
            dataset = handle["filters"]
            for start in range(0, len(dataset), READ_ROWS):
                block = dataset[start:start + READ_ROWS]
                float(block[-1, 1, 1])
        return time.perf_counter() - t

    def analysis() -> float:
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        result = analyze(filterdb.open(database), by=list(GROUPINGS))
        write_outputs(result, out)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"read": [], "read_nocache": [], "analyze": []}
    for _ in range(rounds):
        times["read"].append(read(True))
        times["read_nocache"].append(read(False))
        times["analyze"].append(analysis())
    print(json.dumps({"setup_seconds": setup, "rounds": times}))


def _filter_groups(database: Path) -> tuple[list[np.ndarray], list[list[str]]]:
    """Per filter: a group code per grouping (Task, Visual Category, depth bin)."""
    import pandas as pd

    models = pd.read_hdf(database, "models")
    layers = pd.read_hdf(database, "layers")
    layers = layers[(layers["kh"] == 3) & (layers["kw"] == 3) & (layers["n_filters"] > 0)]
    layers = layers.sort_values("filter_id_start")
    table = layers.join(models.set_index("model_id")[["Task", "Visual Category"]],
                        on="model_id")
    # depth bins [0, 0.1], (0.1, 0.2], ..., (0.9, 1.0]
    depth = np.clip(np.ceil(table["conv_depth_norm"].to_numpy() * 10 - 1e-9) - 1, 0, 9)
    codes, labels = [], []
    for values in (table["Task"], table["Visual Category"], pd.Series(depth.astype(int))):
        cat = pd.Categorical(values)
        codes.append(np.repeat(cat.codes.astype(np.int16), table["n_filters"].to_numpy()))
        labels.append([str(c) for c in cat.categories])
    return codes, labels


def child_inmemory(database: Path) -> None:
    """(b) The published approach: everything in memory, sklearn PCA, np.histogram."""
    import h5py
    from sklearn.decomposition import PCA

    phases = {}
    started = time.perf_counter()
    with h5py.File(database, "r") as handle:
        dataset = handle["filters"]
        n = len(dataset)
        x = np.empty((n, 9), dtype=np.float16)
        for start in range(0, n, READ_ROWS):
            x[start:start + READ_ROWS] = dataset[start:start + READ_ROWS].reshape(-1, 9)
    phases["load float16"] = time.perf_counter() - started
    t = time.perf_counter()
    peak = np.abs(x).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    x /= peak
    del peak
    phases["scale"] = time.perf_counter() - t
    t = time.perf_counter()
    pca = PCA(n_components=9).fit(x)
    phases["pca fit"] = time.perf_counter() - t
    t = time.perf_counter()
    coef = pca.transform(x)
    del x
    phases["project"] = time.perf_counter() - t
    t = time.perf_counter()
    codes, labels = _filter_groups(database)
    lo, hi = float(coef.min()), float(coef.max())
    histograms = []
    for code, names in zip(codes, labels, strict=True):
        hist = np.zeros((len(names), 9, BINS))
        for g in range(len(names)):
            part = coef[code == g]
            for i in range(9):
                hist[g, i] = np.histogram(part[:, i], bins=BINS, range=(lo, hi))[0]
        histograms.append(hist)
    phases["histograms"] = time.perf_counter() - t
    t = time.perf_counter()
    eps = np.finfo(np.float32).eps
    weights = pca.explained_variance_ratio_
    for hist in histograms:
        hist[hist == 0] = eps
        p = hist / hist.sum(axis=2, keepdims=True)
        kl = (p[:, None] * np.log(p[:, None] / p[None])).sum(axis=3)
        _ = ((kl + kl.transpose(1, 0, 2)) * weights).sum(axis=2)
    phases["drift"] = time.perf_counter() - t
    print(json.dumps({"filters": n, "seconds": time.perf_counter() - started,
                      "phases": phases,
                      "explained_variance_ratio": pca.explained_variance_ratio_.tolist()}))


# --------------------------------------------------------------------------- runs


def ensure_db(folder: Path, n: int, seed: int, python: str) -> tuple[Path, dict]:
    """The synthetic database of ``n`` filters, made unless a matching one exists."""
    database = folder / f"synth-{label(n)}-s{seed}.h5"
    manifest = database.with_name(database.name + ".bench.json")
    params = {"version": SYNTH_VERSION, "filters": n, "seed": seed}
    if manifest.exists() and database.exists():
        data = json.loads(manifest.read_text())
        if data.get("params") == params:
            import filterdb

            if filterdb.open(database).filter_count() == n:
                print(f"reusing {database}", flush=True)
                return database, data
    shards = database.with_name(database.name + ".shards")
    for stale in (database, manifest, database.with_name(database.name + ".lock")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(shards, ignore_errors=True)
    need = 36 * n * 1.1
    free = shutil.disk_usage(folder).free
    if free < need + 2 * GB:
        raise SystemExit(f"{folder}: {free / GB:.1f} GB free; {label(n)} filters need "
                         f"{need / GB:.1f} GB")
    print(f"synthesising {n:,} filters into {database} ...", flush=True)
    result = measure(f"synth {label(n)}",
                     [python, "-m", "filterdb", "synth", "-o", str(database), "--filters",
                      str(n), "--seed", str(seed)], folder / f"synth-{label(n)}.log")
    data = {"params": params, "synth": {k: result[k] for k in ("seconds", "peak_rss",
                                                                 "peak_pss")},
            "bytes": _db_bytes(database)}
    manifest.write_text(json.dumps(data, indent=1))
    return database, data


def _tree_digest(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _db_bytes(database: Path) -> int:
    shards = database.with_name(database.name + ".shards")
    return database.stat().st_size + sum(p.stat().st_size for p in shards.glob("*.h5"))


def warm(database: Path) -> float:
    """Read the master and every shard once (page cache); returns seconds."""
    started = time.perf_counter()
    shards = database.with_name(database.name + ".shards")
    for path in [database, *sorted(shards.glob("*.h5"))]:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - started


def evict(database: Path) -> None:
    """Drop the master and every shard from the page cache (no root needed): the next
    reads come from the disk."""
    shards = database.with_name(database.name + ".shards")
    for path in [database, *sorted(shards.glob("*.h5"))]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_read_speed(database: Path, limit: int = 2 * GB) -> float | None:
    """Bytes/s reading shards with O_DIRECT (bypassing the page cache), up to ``limit``."""
    shards = sorted(database.with_name(database.name + ".shards").glob("*.h5"),
                    key=lambda p: -p.stat().st_size)
    done, started = 0, time.perf_counter()
    for path in shards:
        if done >= limit:
            break
        result = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None
        done += path.stat().st_size
    seconds = time.perf_counter() - started
    return done / seconds if done and seconds > 0 else None


def analyze_command(python: str, database: Path, out: Path) -> list[str]:
    command = [python, "-m", "filterdb", "analyze", str(database)]
    for grouping in GROUPINGS:
        command += ["--by", grouping]
    return command + ["-o", str(out)]


def wait_for_analyze(seconds: float) -> None:
    """The analysis core is written in parallel: wait until its CLI exists."""
    needed = [ROOT / "src/filterdb/analysis/engine.py", ROOT / "src/filterdb/cli/analyze.py"]
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in needed):
        if time.monotonic() > deadline:
            raise SystemExit("filterdb analyze is not there: " + ", ".join(
                str(p) for p in needed if not p.exists()))
        print("waiting for src/filterdb/analysis/engine.py and cli/analyze.py ...",
              flush=True)
        time.sleep(60)


def run_size(n: int, args, folder: Path, python: str) -> dict:
    database, manifest = ensure_db(folder, n, args.seed, python)
    warm_seconds = warm(database)
    print(f"{label(n)}: warmed in {warm_seconds:.1f} s", flush=True)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    row = {"n": n, "database": str(database), "bytes": manifest["bytes"],
           "synth": manifest["synth"]}
    script = str(Path(__file__).resolve())
    rounds: dict[str, list[dict]] = {"read": [], "read_nocache": [], "analyze": [],
                                     "analyze_nofig": []}
    for repeat in range(args.repeat):
        for key, flag in (("read", "--read-child"), ("read_nocache", "--read-nocache-child")):
            result = measure(f"{key} {label(n)}", [python, script, flag, str(database)],
                             logs / f"{key}-{label(n)}.log")
            result["child"] = _last_json(Path(result["log"]))
            rounds[key].append(result)
            print(f"  (a) {key}: {result['seconds']:.1f} s, RSS "
                  f"{result['peak_rss'] / MB:.0f} MB", flush=True)
        for key, extra in (("analyze", []), ("analyze_nofig", ["--no-figures"])):
            out = folder / f"{key}-{label(n)}"
            shutil.rmtree(out, ignore_errors=True)
            result = measure(f"{key} {label(n)}",
                             analyze_command(python, database, out) + extra,
                             logs / f"{key}-{label(n)}-{repeat}.log", args.src)
            rounds[key].append(result)
            print(f"  (c) {key}: {result['seconds']:.1f} s, RSS "
                  f"{result['peak_rss'] / MB:.0f} MB, PSS {result['peak_pss'] / MB:.0f} MB",
                  flush=True)
    # in process: (a) and (c) in one warm interpreter, best of the rounds
    out = folder / f"inprocess-{label(n)}"
    result = measure(f"in-process {label(n)}",
                     [python, script, "--inprocess-child", str(database), str(out),
                      str(max(2, args.repeat))], logs / f"inprocess-{label(n)}.log", args.src)
    child = _last_json(Path(result["log"]))
    row["inprocess"] = {"setup_seconds": child["setup_seconds"], "rounds": child["rounds"],
                        **{k: min(v) for k, v in child["rounds"].items()},
                        "peak_rss": result["peak_rss"]}
    inproc = row["inprocess"]
    print(f"  in process: (a) {min(inproc['read'], inproc['read_nocache']):.2f} s, "
          f"(c) {inproc['analyze']:.2f} s, setup {inproc['setup_seconds']:.2f} s", flush=True)
    # cold cache: every shard evicted before the run, so (a) and (c) read from the disk
    for key, command in (
            ("read_cold", [python, script, "--read-nocache-child", str(database)]),
            ("analyze_cold", analyze_command(python, database, folder / f"cold-{label(n)}")
             + ["--no-figures"])):
        shutil.rmtree(folder / f"cold-{label(n)}", ignore_errors=True)
        evict(database)
        result = measure(f"{key} {label(n)}", command, logs / f"{key}-{label(n)}.log",
                         args.src if key == "analyze_cold" else None)
        rounds[key] = [result]
        print(f"  cold {key}: {result['seconds']:.1f} s, RSS {result['peak_rss'] / MB:.0f} MB",
              flush=True)
    warm(database)
    row["figures"] = str(folder / f"analyze-{label(n)}")
    for key, runs in rounds.items():
        best = dict(min(runs, key=lambda r: r["seconds"]))
        best["rounds"] = [r["seconds"] for r in runs]
        best["peak_rss"] = max(r["peak_rss"] for r in runs)
        best["peak_pss"] = max(r["peak_pss"] for r in runs)
        row[key] = best
    estimate = n * INMEMORY_BYTES
    row["inmemory_estimate"] = estimate
    if estimate <= args.inmemory_limit_gb * GB:
        result = measure(f"in-memory {label(n)}",
                         [python, script, "--inmemory-child", str(database)],
                         logs / f"inmemory-{label(n)}.log")
        result["child"] = _last_json(Path(result["log"]))
        row["inmemory"] = result
        print(f"  (b) in-memory: {result['seconds']:.1f} s, RSS "
              f"{result['peak_rss'] / MB:.0f} MB", flush=True)
    else:
        print(f"  (b) in-memory: skipped (needs about {estimate / GB:.1f} GB)", flush=True)
    return row


def published_cache_share() -> float:
    """The share of the published filters (1.46 billion, 49.1 GB) that this machine's
    page cache holds: its RAM less 2 GB (the system and the analysis) over their size."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(1.0, max(0.05, (ram - 2 * GB) / (PUBLISHED * 36)))


def run_capped(n: int, args, folder: Path, python: str) -> dict:
    """(a) and (c) from a cold cache in a memory cgroup whose page cache holds the same
    share of this database as the machine's RAM holds of the published filters."""
    why = available()
    if why is not None:
        print(f"  capped page cache: skipped, {why}", flush=True)
        return {"n": n, "skipped": why}
    database = folder / f"synth-{label(n)}-s{args.seed}.h5"
    size = _db_bytes(database)
    share = published_cache_share()
    limit = CAPPED_ALLOWANCE + int(share * size)
    script = str(Path(__file__).resolve())
    out = folder / f"capped-{label(n)}"
    commands = {"read": [python, script, "--read-nocache-child", str(database)],
                "analyze": analyze_command(python, database, out) + ["--no-figures"]}
    rounds: dict[str, list[dict]] = {"read": [], "analyze": []}
    with MemoryCgroup(limit) as group:
        for _ in range(args.repeat):
            for key, command in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                evict(database)
                result = measure(f"capped {key} {label(n)}", command,
                                 folder / "logs" / f"capped-{key}-{label(n)}.log",
                                 args.src if key == "analyze" else None, group.procs)
                rounds[key].append(result)
                print(f"  capped {key}: {result['seconds']:.1f} s", flush=True)
    warm(database)
    row = {"n": n, "bytes": size, "share": share, "limit": limit}
    for key, runs in rounds.items():
        row[key] = dict(min(runs, key=lambda r: r["seconds"]))
        row[key]["rounds"] = [r["seconds"] for r in runs]
    return row


def capped_report(capped: dict | None) -> str:
    """The capped-cache table and what it says, or "" when it was not measured."""
    if not capped:
        return ""
    if "skipped" in capped:
        return (f"The run with a page cache smaller than the filters was skipped: "
                f"{capped['skipped']}.\n\n")
    ratio = capped["analyze"]["seconds"] / capped["read"]["seconds"]
    rounds = "; ".join(f"{key} " + ", ".join(f"{t:.1f}" for t in capped[key]["rounds"])
                       for key in ("read", "analyze"))
    return (
        "**Filters larger than the page cache.** The published 49.1 GB of filters do not "
        "fit in this machine's RAM, so there the passes read them from the disk. To measure "
        "that case without 49 GB of data, (a) and (c) (`--no-figures`) ran from a cold "
        "cache in a memory cgroup whose limit lets the page cache hold "
        f"{capped['share']:.0%} of the database (the share of the published filters that "
        "this machine's RAM less 2 GB holds), plus "
        f"{CAPPED_ALLOWANCE / MB:.0f} MB for the processes "
        f"(benchmarks/memory_cgroup.py):\n\n"
        "| filters | database GB | cgroup limit GB | (a) read s | (c) analysis s "
        "| (c) / (a) | within 3x |\n|---|---|---|---|---|---|---|\n"
        f"| {capped['n']:,} | {capped['bytes'] / GB:.2f} | {capped['limit'] / GB:.2f} "
        f"| {capped['read']['seconds']:.1f} | {capped['analyze']['seconds']:.1f} "
        f"| {ratio:.1f} | {mark(ratio <= TARGET_VS_READ)} |\n\n"
        f"Best of {len(capped['read']['rounds'])} rounds (seconds per round: {rounds}). "
        "The passes alternate direction (the range pass runs last task first), so each "
        "pass starts on the part of the filters the pass before left in the page cache.\n\n")


def _last_json(log: Path) -> dict:
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


# --------------------------------------------------------------------------- report


def fit(ns: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (seconds per filter)."""
    if len(ns) < 2:
        return 0.0, seconds[0] / ns[0]
    slope, intercept = np.polyfit(np.array(ns, float), np.array(seconds, float), 1)
    return float(intercept), float(slope)


def mark(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def io_seconds(row: dict) -> float:
    """The I/O limit: the faster of the two plain reads."""
    return min(row["read"]["seconds"], row["read_nocache"]["seconds"])


def inprocess_read(row: dict) -> float:
    """In process: the faster of the two plain reads, best of the rounds."""
    return min(row["inprocess"]["read"], row["inprocess"]["read_nocache"])


def inprocess_ratio(row: dict) -> float:
    return row["inprocess"]["analyze"] / inprocess_read(row)


def cold_ratio(row: dict) -> float:
    return row["analyze_cold"]["seconds"] / row["read_cold"]["seconds"]


def table(rows: list[dict]) -> str:
    header = ("| filters | (c) analysis s | (c) filters/s | (c) with figures s "
              "| (c) peak RSS MB | (c) peak PSS MB | (a) read s, h5py defaults "
              "| (a) read s, chunk cache off | (c) / (a), subprocesses | (b) in-memory s "
              "| (b) peak RSS MB | (b) / (c) | RSS < 1 GB | within 3x of (a), subprocesses "
              "| >= 3x faster than (b) | in-process (a) s | in-process (c) s "
              "| (c) / (a), in process | within 3x of (a), in process "
              "| cold (c) s | cold (a) s | cold (c) / (a) | cold within 3x |")
    lines = [header, "|" + "---|" * 23]
    for row in rows:
        n, c = row["n"], row["analyze_nofig"]
        io = io_seconds(row)
        b = row.get("inmemory")
        speedup = b["seconds"] / c["seconds"] if b else None
        peak_rss = max(c["peak_rss"], row["analyze"]["peak_rss"])
        peak_pss = max(c["peak_pss"], row["analyze"]["peak_pss"])
        lines.append(
            f"| {n:,} | {c['seconds']:.1f} | {n / c['seconds']:,.0f} "
            f"| {row['analyze']['seconds']:.1f} "
            f"| {peak_rss / MB:,.0f} | {peak_pss / MB:,.0f} "
            f"| {row['read']['seconds']:.1f} ({row['read']['peak_rss'] / MB:,.0f} MB) "
            f"| {row['read_nocache']['seconds']:.1f} "
            f"({row['read_nocache']['peak_rss'] / MB:,.0f} MB) "
            f"| {c['seconds'] / io:.1f} "
            + (f"| {b['seconds']:.1f} | {b['peak_rss'] / MB:,.0f} | {speedup:.1f}x "
               if b else f"| skipped (~{row['inmemory_estimate'] / GB:.0f} GB) | - | - ")
            + f"| {mark(peak_rss < TARGET_RSS)} "
            f"| {mark(c['seconds'] / io <= TARGET_VS_READ)} "
            f"| {mark(speedup >= TARGET_VS_INMEMORY) if speedup else '-'} "
            + (f"| {inprocess_read(row):.2f} | {row['inprocess']['analyze']:.2f} "
               f"| {inprocess_ratio(row):.1f} "
               f"| {mark(inprocess_ratio(row) <= TARGET_VS_READ)} "
               if "inprocess" in row else "| - | - | - | - ")
            + (f"| {row['analyze_cold']['seconds']:.1f} | {row['read_cold']['seconds']:.1f} "
               f"| {cold_ratio(row):.1f} | {mark(cold_ratio(row) <= TARGET_VS_READ)} |"
               if "analyze_cold" in row else "| - | - | - | - |"))
    return "\n".join(lines)


def interpretation(rows: list[dict], disk: float | None,
                   capped: dict | None = None) -> tuple[str, dict]:
    ns = [r["n"] for r in rows]
    c_int, c_slope = fit(ns, [r["analyze_nofig"]["seconds"] for r in rows])
    f_int, f_slope = fit(ns, [r["analyze"]["seconds"] for r in rows])
    a_int, a_slope = fit(ns, [io_seconds(r) for r in rows])
    marginal = [(b["analyze_nofig"]["seconds"] - a["analyze_nofig"]["seconds"])
                / (b["n"] - a["n"]) * 1e9 for a, b in zip(rows, rows[1:], strict=False)]
    if len(marginal) < 2 or max(marginal) <= 1.3 * min(marginal):
        verdict = "linear in N (target met)"
    elif marginal[-1] < marginal[0]:
        verdict = ("no worse than linear in N (target met; the cost per added filter falls "
                   "from step to step, and single timings on the shared machine vary by tens "
                   "of percent)")
    else:
        verdict = "growing faster than linear in N (target missed)"
    sentences = [
        f"Time of (c) fits {c_int:.1f} s + {c_slope * 1e9:,.0f} s per billion filters "
        f"({c_slope * 1e9:.0f} ns per filter; with the figures {f_int:.1f} s + "
        f"{f_slope * 1e9:,.0f} s per billion); the marginal cost between consecutive sizes "
        "is " + ", ".join(f"{m:,.0f}" for m in marginal)
        + f" s per billion, so time is {verdict}. The intercept is interpreter start, "
        "imports and the tables."]
    rss = [max(r["analyze"]["peak_rss"], r["analyze_nofig"]["peak_rss"]) for r in rows]
    sentences.append(
        f"Peak RSS of the analysis tree is {min(rss) / MB:,.0f} to {max(rss) / MB:,.0f} MB, "
        f"{'below' if max(rss) < TARGET_RSS else 'NOT below'} 1 GB at every size and flat "
        "in N.")
    ratios = [r["analyze_nofig"]["seconds"] / io_seconds(r) for r in rows]
    reads = ", ".join(f"{r['n'] / io_seconds(r) / 1e6:.0f} M" for r in rows)
    sentences.append(
        f"The plain read (a) delivers {reads} filters/s (page cache, faster variant); "
        f"(c) takes {min(ratios):.1f}x to {max(ratios):.1f}x its time "
        f"({'within' if max(ratios) <= TARGET_VS_READ else 'NOT within'} the 3x target).")
    warm = [r for r in rows if "inprocess" in r]
    if warm:
        ratios_warm = [inprocess_ratio(r) for r in warm]
        setups = [r["inprocess"]["setup_seconds"] for r in warm]
        met = max(ratios_warm) <= TARGET_VS_READ
        sentences.append(
            "Measured in process (one warm interpreter per size: imports done and the "
            f"kernels loaded first, {min(setups):.1f} to {max(setups):.1f} s, not timed; "
            "then per round the same h5py read loops and the same analysis "
            "through the Python API, writing the same files; best of "
            f"{len(warm[0]['inprocess']['rounds']['analyze'])} rounds), (c) takes "
            f"{min(ratios_warm):.1f}x to {max(ratios_warm):.1f}x the time of (a) "
            f"({'within' if met else 'NOT within'} the 3x target"
            + ("; the subprocess figures above include interpreter start and imports, "
               "which the analysis pays once per command and the plain read mostly does not"
               if met and max(ratios) > TARGET_VS_READ else "") + ").")
    cold = [r for r in rows if "analyze_cold" in r]
    if cold:
        ratios_cold = [cold_ratio(r) for r in cold]
        sentences.append(
            "From a cold page cache (every shard evicted with `posix_fadvise(DONTNEED)` "
            "before the run; (a) with the chunk cache off), (c) takes "
            f"{min(ratios_cold):.1f}x to {max(ratios_cold):.1f}x the time of (a) "
            f"({'within' if max(ratios_cold) <= TARGET_VS_READ else 'NOT within'} 3x; one "
            "round each; the first pass reads from the disk, the later ones find the "
            "shards in the page cache when they fit in the RAM).")
    defaults = [r["read"]["seconds"] / r["read_nocache"]["seconds"] for r in rows]
    sentences.append(
        "Note that h5py's default chunk cache makes reads of the virtual /filters "
        f"{min(defaults):.1f}x to {max(defaults):.1f}x slower and grows their memory with "
        "the number of shards (the RSS in brackets); opened with `rdcc_nbytes=0` the "
        "same loop is the I/O limit.")
    measured_b = [r for r in rows if r.get("inmemory")]
    skipped_b = [r for r in rows if not r.get("inmemory")]
    if measured_b:
        speedups = [r["inmemory"]["seconds"] / r["analyze_nofig"]["seconds"]
                    for r in measured_b]
        memory = [r["inmemory"]["peak_rss"] / r["analyze_nofig"]["peak_rss"] for r in measured_b]
        sentences.append(
            "The published in-memory approach (b) ran at "
            + ", ".join(label(r["n"]) for r in measured_b)
            + f": it takes {min(speedups):.1f}x to {max(speedups):.1f}x the time of (c) "
            f"({'meets' if min(speedups) >= TARGET_VS_INMEMORY else 'misses'} the 3x target)"
            f" and {min(memory):.0f}x to {max(memory):.0f}x its memory.")
    if skipped_b:
        sentences.append(
            "(b) was skipped at " + ", ".join(
                f"{label(r['n'])} (estimated {r['inmemory_estimate'] / GB:.1f} GB)"
                for r in skipped_b)
            + f": it holds about {INMEMORY_BYTES} bytes per filter (the float16 array plus "
            "the float64 copies sklearn makes of the input, the centred data and the "
            "projections), over the 12 GB allowed on this 23 GB machine; the published "
            f"1.46 billion filters would need about {PUBLISHED * INMEMORY_BYTES / GB:,.0f} GB.")
    published_c = c_int + c_slope * PUBLISHED
    published_a = a_int + a_slope * PUBLISHED
    filters_gb = PUBLISHED * 36 / GB
    text = (f"Extrapolated linearly to the published 1,464,797,156 filters, on this "
            f"machine: (c) about {published_c / 60:.0f} min ({published_c:,.0f} s) in "
            f"under 1 GB, and one plain read about {published_a / 60:.1f} min, if the "
            "filters came at page-cache speed.")
    if disk:
        cold = filters_gb * GB / disk
        text += (f" They are {filters_gb:.1f} GB, more than the RAM, so one plain read "
                 f"comes from the disk: O_DIRECT reads of the shards run at "
                 f"{disk / MB:,.0f} MB/s here, {cold / 60:.1f} min")
        if capped and "analyze" in capped:
            ratio = capped["analyze"]["seconds"] / capped["read"]["seconds"]
            text += (f"; with the page cache holding the same share of the filters, (c) "
                     f"took {ratio:.1f}x the time of (a) above, so about "
                     f"{max(ratio * cold, published_c) / 60:.0f} min")
        else:
            io = ANALYZE_PASSES * cold
            text += (f" per pass of the analysis, {io / 60:.1f} min for its {ANALYZE_PASSES} "
                     "passes if none of them found the filters in the page cache")
    sentences.append(text + ".")
    facts = {"analyze_intercept_s": c_int, "analyze_s_per_filter": c_slope,
             "analyze_figures_intercept_s": f_int, "analyze_figures_s_per_filter": f_slope,
             "read_intercept_s": a_int, "read_s_per_filter": a_slope,
             "published_analyze_s": published_c, "published_read_s": published_a,
             "disk_bytes_per_s": disk}
    return " ".join(sentences), facts


def run_benchmark(args) -> None:
    out = args.out.resolve()
    folder = out / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sorted(parse_count(s) for s in args.sizes.split(","))
    python = sys.executable
    info = machine()
    # The analysis code may change while the benchmark runs: measure a copy of src/.
    args.src = folder / "src-snapshot"
    shutil.rmtree(args.src, ignore_errors=True)
    shutil.copytree(ROOT / "src", args.src, ignore=shutil.ignore_patterns("__pycache__"))
    # byte-compiled, as an installed package is: where PYTHONDONTWRITEBYTECODE is set
    # (as on this machine) every run would otherwise compile the filterdb modules anew
    compileall.compile_dir(args.src, quiet=1)
    info["src_digest"] = _tree_digest(args.src)
    print(f"disk: {shutil.disk_usage(folder).free / GB:.1f} GB free in {folder}; sizes "
          + ", ".join(label(n) for n in sizes), flush=True)
    databases = {n: ensure_db(folder, n, args.seed, python) for n in sizes}
    wait_for_analyze(args.wait_minutes * 60)
    load_before = os.getloadavg()
    rows = []
    for n in sizes:
        load = os.getloadavg()[0]
        rows.append(run_size(n, args, folder, python))
        rows[-1]["load"] = [load, os.getloadavg()[0]]
    capped = run_capped(sizes[-1], args, folder, python)
    load_after = os.getloadavg()
    data = {
        "command": shlex.join([".venv/bin/python", "benchmarks/bench_analysis.py",
                               *sys.argv[1:]]),
        "machine": info, "seed": args.seed, "repeat": args.repeat, "quick": args.quick,
        "rows": rows, "capped": capped,
        "disk_bytes_per_s": disk_read_speed(databases[sizes[-1]][0]),
        "load": [load_before, load_after]}
    stem = "analysis-quick" if args.quick else "analysis"
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str))
    report(data, out)


def report(data: dict, out: Path) -> None:
    """Write OUT/analysis.md (and, unless quick, the BENCHMARKS.md section) from the data."""
    rows, info = data["rows"], data["machine"]
    markdown = table(rows)
    text, facts = interpretation(rows, data["disk_bytes_per_s"], data.get("capped"))
    synth = "; ".join(
        f"{label(r['n'])}: {r['synth']['seconds']:.1f} s "
        f"({r['n'] / r['synth']['seconds'] / 1e6:.0f} M filters/s, peak RSS "
        f"{r['synth']['peak_rss'] / MB:,.0f} MB, {r['bytes'] / GB:.2f} GB on disk)"
        for r in rows)
    phases = "; ".join(
        f"{label(r['n'])}: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in r["inmemory"]["child"].get("phases", {}).items())
        for r in rows if r.get("inmemory"))
    rounds = "; ".join(
        f"{label(r['n'])}: (c) " + ", ".join(f"{t:.1f}" for t in r["analyze"]["rounds"])
        + ", --no-figures " + ", ".join(f"{t:.1f}" for t in r["analyze_nofig"]["rounds"])
        + (f", load {r['load'][0]:.1f} / {r['load'][1]:.1f}" if "load" in r else "")
        for r in rows)
    load_before, load_after = data["load"]
    notes = (
        f"Databases written by `filterdb synth --filters N --seed {data['seed']}` "
        f"(default model count, one per 500,000 filters): {synth}; the synth time includes "
        "the fsync of every shard at the commit. Before the runs of a size every shard is "
        "read once, so (a), (b) and (c) all read the filters from the page cache. "
        "Seconds are the wall time of the whole subprocess (interpreter start included)"
        + (f", best of {data['repeat']} rounds for (a) and (c)" if data["repeat"] > 1 else "")
        + "; peaks are RSS and PSS summed over the process tree, sampled every 50 ms "
        "(MB = 2^20 bytes). (a): h5py, `/filters[i:i + 2**20]` until the end, nothing "
        "else, with the default chunk cache and with `rdcc_nbytes=0`; (c) / (a) uses the "
        "faster. (c) with figures: the same analysis plus the PNG and SVG figures. "
        "(b): the whole of /filters as one float16 array, `x /= |x|.max(axis=1)`, "
        "`sklearn.decomposition.PCA(9).fit(x)` and `.transform(x)`, then per grouping, "
        "group and component `np.histogram(coef[codes == g, i], 70, range)` and the drift "
        "matrices" + (f" (phases: {phases})" if phases else "") + ". "
        f"Seconds per round and 1-minute load average before/after each size: {rounds}. "
        f"Load average before/after the benchmark: {load_before[0]:.2f} / "
        f"{load_after[0]:.2f}; other jobs shared the 2 cores, so single timings carry "
        "noise of tens of percent.")
    section = (
        f"{SECTION}\n\n"
        f"Command (from the repository root):\n\n```\n{data['command']}\n```\n\n"
        f"which runs, per size, `filterdb analyze DB --by Task --by \"Visual Category\" "
        f"--by depth --no-figures -o OUT` as (c), the full analysis (PCA and three "
        f"groupings, the issue's measure; (b) draws no figures either), and the same "
        f"command without `--no-figures` (PNG and SVG figures too) as (c) with figures.\n\n"
        f"Machine: {info['cpus']} cores ({info['cpu']}), {info['ram_gb']} GB RAM, "
        f"Python {info['python']}, {info['platform']}; filterdb at commit "
        f"{info['commit']} (working tree copied and byte-compiled, as an installed package is, "
        f"before the runs; sha256 of its .py files "
        f"{info['src_digest']}).\n\n"
        f"{markdown}\n\n"
        "Targets: (c) at least 3x faster than (b), within 3x of (a), peak RSS below 1 GB "
        f"at every N, time linear in N. {notes}\n\n{capped_report(data.get('capped'))}"
        f"{text}\n")
    stem = "analysis-quick" if data["quick"] else "analysis"
    (out / f"{stem}.md").write_text(section)
    (out / f"{stem}-facts.json").write_text(json.dumps(facts, indent=1))
    print()
    print(section)
    if not data["quick"]:
        print(f"wrote {out / 'analysis.md'} and {replace_section(section)}")
    else:
        print(f"wrote {out / 'analysis-quick.md'} (--quick: BENCHMARKS.md left alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--sizes", default="10M,30M,100M",
                        help="filter counts, comma-separated (default 10M,30M,100M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of (a) and (c) per size (best time, highest peak)")
    parser.add_argument("--inmemory-limit-gb", type=float, default=12.0,
                        help="skip (b) where its estimated memory exceeds this")
    parser.add_argument("--wait-minutes", type=float, default=90,
                        help="how long to wait for filterdb analyze to exist")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1M and 3M")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from OUT/analysis.json without measuring")
    parser.add_argument("--read-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--read-nocache-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inmemory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inprocess-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess_child:
        database, out, rounds = args.inprocess_child
        child_inprocess(Path(database), Path(out), int(rounds))
        return
    if args.read_child or args.read_nocache_child:
        child_read(args.read_child or args.read_nocache_child, cache=bool(args.read_child))
        return
    if args.inmemory_child:
        child_inmemory(args.inmemory_child)
        return
    if args.quick:
        args.sizes = "1M,3M"
    if args.report_only:
        out = args.out.resolve()
        stem = "analysis-quick" if args.quick else "analysis"
        data = json.loads((out / f"{stem}.json").read_text())
        data.setdefault("repeat", 2)
        data.setdefault("seed", 0)
        data.setdefault("quick", args.quick)
        data.setdefault("disk_bytes_per_s", data.get("facts", {}).get("disk_bytes_per_s"))
        report(data, out)
        return
    run_benchmark(args)


if __name__ == "__main__":
    main()
