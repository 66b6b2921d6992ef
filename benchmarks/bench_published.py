"""Published-file benchmark (issue 9): ``info`` and ``select`` do not read the filters.

Usage::

    .venv/bin/python benchmarks/bench_published.py [--large 140M] [--small 2M] [--tmp /tmp]

Writes two files in the published layout under ``--tmp`` (``/filters`` float16
(N, 9) written in chunks, the pandas ``/meta`` table) with the same 647 models and
2,910 conv depths, so only N differs: a small one and a multi-GB one. On each it runs,
as subprocesses timed by wall clock (interpreter start included, median of
``--repeats``) with peak RSS sampled over the process tree (``bench_build.measure``):

- ``filterdb info FILE``;
- ``select``: open, ``select(Task="Classification", conv_depth_norm=(0, 0.5))``, its
  length and ranges, then the first 1,000 selected filters.

Each run also reports ``rchar`` from ``/proc/self/io`` (bytes the process read by
read calls, page cache hits included): what it read of the file. Flat time, RSS and
bytes read while N (and the file) grows by the ratio ``large / small`` show that
neither command reads the filters. The files are deleted at the end. The figures
replace the section "## Published files (issue 9)" of BENCHMARKS.md. MB = 2**20 bytes.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import MB, ROOT, machine, measure  # noqa: E402
from benchmarks_md import replace_section  # noqa: E402

SECTION = "## Published files (issue 9)"
MODELS = 647
#: Run a CLI command, then print the bytes this process read (rchar) to stderr.
WITH_RCHAR = ("import sys; from filterdb.cli import main; code = main(sys.argv[1:]); "
              "io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines()); "
              "print('rchar', io['rchar'], file=sys.stderr); sys.exit(code)")
SELECT = ("import sys, filterdb; db = filterdb.open(sys.argv[1]); "
          "s = db.select(Task='Classification', conv_depth_norm=(0, 0.5)); "
          "first = next(s.iter_chunks(1000)); print(len(s), len(s.ranges), first.shape); "
          "io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines()); "
          "print('rchar', io['rchar'], file=sys.stderr)")


def count(text: str) -> int:
    """``"140M"`` -> 140_000_000."""
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1].upper(), 1)
    return int(float(text.rstrip("kKmMgG")) * scale)


def write(path: Path, n: int) -> tuple[float, int]:
    from filterdb.synthetic_published import published_meta, write_published

    started = time.perf_counter()
    meta = published_meta(n, MODELS)
    write_published(path, meta, n)
    return time.perf_counter() - started, len(meta)


def run(name: str, command: list[str], log: Path, repeats: int) -> dict:
    runs = [measure(name, command, log, src=ROOT / "src") for _ in range(repeats)]
    rchar = max(int(line.split()[1]) for line in log.read_text().splitlines()
                if line.startswith("rchar "))
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss": max(r["peak_rss"] for r in runs), "rchar": rchar,
            "output": log.read_text()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", default="140M", help="filters of the large file")
    parser.add_argument("--small", default="2M", help="filters of the small file")
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write-md", action="store_true")
    args = parser.parse_args()
    sizes = {"small": count(args.small), "large": count(args.large)}
    folder = args.tmp / "filterdb-bench-published"
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for label, n in sizes.items():
            path = folder / f"{label}.h5"
            seconds, depths = write(path, n)
            size = path.stat().st_size
            print(f"{label}: wrote {n:,} filters, {size / MB:,.0f} MB in {seconds:.0f} s",
                  file=sys.stderr)
            python = sys.executable
            results[label] = {
                "n": n, "bytes": size, "depths": depths,
                "info": run("info", [python, "-c", WITH_RCHAR, "info", str(path)],
                            folder / f"{label}-info.log", args.repeats),
                "select": run("select", [python, "-c", SELECT, str(path)],
                              folder / f"{label}-select.log", args.repeats),
            }
            path.unlink()
            for key in ("info", "select"):
                r = results[label][key]
                print(f"  {key}: {r['seconds']:.2f} s, {r['peak_rss'] / MB:.0f} MB RSS, "
                      f"read {r['rchar'] / MB:.1f} MB", file=sys.stderr)
    finally:
        for leftover in folder.glob("*.h5"):
            leftover.unlink()
    section = report(results, args)
    print(section)
    if not args.no_write_md:
        print(f"wrote {replace_section(section)}", file=sys.stderr)
    return 0


def report(results: dict, args) -> str:
    small, large = results["small"], results["large"]
    rows = []
    for key in ("info", "select"):
        a, b = small[key], large[key]
        rows.append(f"| {key} | {a['seconds']:.2f} | {b['seconds']:.2f} | "
                    f"{b['seconds'] / a['seconds']:.2f} | {a['peak_rss'] / MB:.0f} | "
                    f"{b['peak_rss'] / MB:.0f} | {b['peak_rss'] / a['peak_rss']:.2f} | "
                    f"{a['rchar'] / MB:.1f} | {b['rchar'] / MB:.1f} |")
    info = machine()
    command = shlex.join(["benchmarks/bench_published.py", "--large", args.large,
                          "--small", args.small, "--repeats", str(args.repeats)])
    selected = large["select"]["output"].splitlines()[0]
    header = ("| command | s (small) | s (large) | ratio | RSS MB (small) | RSS MB (large) "
              "| ratio | read MB (small) | read MB (large) |")
    growth = large["bytes"] / small["bytes"]
    return f"""{SECTION}

`.venv/bin/python {command}` (commit {info['commit']}; {info['cpus']} CPUs, {info['cpu']},
{info['ram_gb']} GB RAM; machine shared with other jobs).

Two files in the published layout (`/filters` float16 (N, 9), pandas `/meta` of the same
{MODELS} models and {small['depths']:,} conv depths): N = {small['n']:,}
({small['bytes'] / MB:,.0f} MB) and N = {large['n']:,} ({large['bytes'] / MB:,.0f} MB),
ratio {large['n'] / small['n']:.0f}. Each command is a fresh process (interpreter start
included; median of {args.repeats} runs, peak RSS the largest). "read" is `rchar` of
`/proc/self/io`: bytes the process read, page cache included. `select` is
`select(Task="Classification", conv_depth_norm=(0, 0.5))`, its length and ranges, and the
first 1,000 filters (on the large file: `{selected}`).

{header}
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Time, memory and bytes read stay flat while the file grows {growth:.0f}-fold:
neither command reads `/filters` beyond the 1,000 filters asked for; the tables come
from `/meta` alone.
"""


if __name__ == "__main__":
    raise SystemExit(main())
