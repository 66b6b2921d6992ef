"""Benchmark ``filterdb demo``: a cold run (empty folder: trains the whole zoo) and a warm
run (the same folder: every model comes from the cache), each as a subprocess.

Reports wall seconds per run and per phase (training, build, analysis, from the demo's
own log lines), the peak RSS summed over the process tree (sampled every 50 ms with
psutil), and what the demo found (quality verdicts by role, over-parameterised models
beside their twins, mean drift of the depth bins). Target: cold run <= 300 s on 2 cores.

    .venv/bin/python benchmarks/bench_demo.py --out bench-out/demo [--write]

``--write`` replaces the "## Demo (issue 6)" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import MB, ROOT, machine, measure  # noqa: E402
from benchmarks_md import replace_section  # noqa: E402

SECTION = "## Demo (issue 6)"
TARGET_SECONDS = 300


def measure_demo(name: str, command: list[str], log: Path) -> dict:
    """One demo run (time and tree memory as every benchmark measures them) and its
    phases, read from the demo's own log lines."""
    result = measure(name, command, log)
    text = log.read_text()

    def phase(pattern: str) -> float | None:
        match = re.search(pattern, text)
        return float(match[1]) if match else None

    return {"run": name, "seconds": result["seconds"], "peak_rss_mb": result["peak_rss"] / MB,
            "processes": result["processes"],
            "zoo": phase(r"demo: zoo ready in ([0-9.]+) s"),
            "trained": phase(r"\(([0-9]+) trained, [0-9]+ from the cache"),
            "build": phase(r"demo: database built in ([0-9.]+) s"),
            "analysis": phase(r"demo: analysis written in ([0-9.]+) s"),
            "log": str(log)}


def findings(database: Path) -> list[str]:
    """What the demo zoo shows, measured on the database the cold run built."""
    import filterdb
    from filterdb.analysis.engine import analyze

    db = filterdb.open(database)
    models = db.models
    lines = ["| role | models | looks untrained | has degenerated layers | ok | "
             "random-like share (max) | degenerated share (mean) |",
             "|---|---|---|---|---|---|---|"]
    for role, group in models.groupby("role"):
        verdicts = group["quality_verdict"].value_counts()
        lines.append(f"| {role} | {len(group)} | {verdicts.get('looks untrained', 0)} | "
                     f"{verdicts.get('has degenerated layers', 0)} | {verdicts.get('ok', 0)} | "
                     f"{group['random_like_share'].max():.2f} | "
                     f"{group['degenerated_share'].mean():.2f} |")
    lines += ["", "| over-parameterised model | samples | degenerated share | mean sparsity | "
              "twin | samples | degenerated share | mean sparsity |",
              "|---|---|---|---|---|---|---|---|"]
    by_name = models.set_index("model")
    layers = db.layers
    for row in models[models["role"] == "over-parameterised"].itertuples():
        twin = by_name.loc[row.twin]
        mine = layers.loc[layers["model_id"] == row.model_id, "sparsity"].mean()
        theirs = layers.loc[layers["model_id"] == twin["model_id"], "sparsity"].mean()
        lines.append(f"| {row.model} | {row.train_samples} | {row.degenerated_share:.2f} | "
                     f"{mine:.2f} | {row.twin} | {twin['train_samples']} | "
                     f"{twin['degenerated_share']:.2f} | {theirs:.2f} |")
    depth = analyze(db, by=["depth"]).groupings["depth"]
    drift = depth.drift
    mean = (drift.sum(axis=1) / (len(drift) - 1)).reindex(sorted(drift.index))
    counts = depth.counts.set_index("group")["models"]
    lines += ["", "Mean drift of each depth bin to the other bins (models in the bin):", "",
              "| " + " | ".join(mean.index) + " |", "|" + "---|" * len(mean),
              "| " + " | ".join(f"{v:.3f} ({counts[k]})" for k, v in mean.items()) + " |"]
    filled = [g for g in drift.index if counts[g] >= 2]
    sub = drift.loc[filled, filled]
    mean_filled = sub.sum(axis=1) / (len(sub) - 1)
    first, second, deepest = "0.0-0.1", "0.1-0.2", "0.9-1.0"
    lines += ["", f"The deepest bin's mean drift ({mean[deepest]:.3f}) is above the first "
              f"bin's ({mean[first]:.3f}) and the second's ({mean[second]:.3f}); without the "
              f"bins holding a single model it is {mean_filled[deepest]:.3f} against "
              f"{mean_filled[first]:.3f} and {mean_filled[second]:.3f}. Drift from the first "
              f"bin grows to its largest at the deepest bin ({drift.loc[first, deepest]:.3f}; "
              f"first to second bin {drift.loc[first, second]:.3f}). Both ends differ from the "
              "middle mostly in the first PCA component (the filter's mean): first layers on "
              "one standardised channel learn zero-mean edge filters, the last convs before "
              "global average pooling learn same-sign blobs."]
    return lines


def describe_machine() -> str:
    import torch

    info = machine()
    return (f"{info['cpus']} cores ({info['cpu']}), {info['ram_gb']} GB RAM, Python "
            f"{info['python']}, torch {torch.__version__}; filterdb at commit {info['commit']}")


def section(results: list[dict], found: list[str], load: tuple, command: str) -> str:
    rows = ["| run | seconds | training s | models trained | build s | analysis s | "
            f"peak RSS tree MB | processes | target cold <= {TARGET_SECONDS} s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        target = ("pass" if r["seconds"] <= TARGET_SECONDS else "**fail**") \
            if r["run"] == "cold" else "-"
        rows.append(f"| {r['run']} | {r['seconds']:.1f} | {r['zoo']:.1f} | {r['trained']:.0f} | "
                    f"{r['build']:.1f} | {r['analysis']:.1f} | {r['peak_rss_mb']:.0f} | "
                    f"{r['processes']} | {target} |")
    return "\n".join([
        SECTION, "", "Command (from the repository root):", "", "```", command, "```", "",
        f"Machine: {describe_machine()}. Load average (1 min) before/after: {load[0]:.2f} / "
        f"{load[1]:.2f} (other jobs may share the machine).", "",
        *rows, "",
        "Both runs are `filterdb demo -o OUT` as a subprocess (default 2 workers), stdout "
        "and stderr to a log file; seconds are wall time of the whole process, interpreter "
        "start included. The cold run starts from an empty OUT and trains all 41 models; the "
        "warm run repeats it on the same OUT, where every model comes from `OUT/cache` and no "
        "model file is rewritten; both rebuild the database, rerun the analysis and write "
        "the HTML report (the time between the analysis and the end of the run). Phase "
        "times come from the demo's log lines; peak RSS is the sum over the process tree "
        "(training and build workers included), sampled every 50 ms.", "",
        "What the cold run's database shows (quality verdicts of the build; drift from "
        "`filterdb.analysis.engine.analyze(db, by=['depth'])`):", "",
        *found, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "demo")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    demo = out / "demo"
    command = [sys.executable, "-m", "filterdb", "demo", "-o", str(demo)]
    load_before = os.getloadavg()[0]
    results = []
    for name in ("cold", "warm"):
        print(f"bench_demo: {name} run ...", file=sys.stderr, flush=True)
        results.append(measure_demo(name, command, out / f"{name}.log"))
        r = results[-1]
        print(f"bench_demo: {name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    found = findings(demo / "filters.h5")
    display = ".venv/bin/python benchmarks/bench_demo.py --out bench-out/demo --write"
    text = section(results, found, (load_before, load_after), display)
    print(text)
    if args.write:
        print(f"bench_demo: wrote {replace_section(text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
