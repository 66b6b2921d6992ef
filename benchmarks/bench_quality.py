"""Layer-quality benchmark (issue 3): filterdb against torchconvquality, same layers, same run.

Usage::

    .venv/bin/python benchmarks/bench_quality.py [--repeat 5] [--no-write]

Layer sets:

* real 3x3: every 3x3 conv layer of the rapidocr-onnxruntime 1.4.4 ONNX models and the
  facenet-pytorch 2.6.0 MTCNN state dicts (31 layers, depthwise included).
* ResNet-50 shapes: the 53 conv layers of a torchvision ResNet-50 (7x7 stem, then the
  1x1 / 3x3 / 1x1 bottlenecks and 1x1 downsamples of its four stages), shapes written
  out below, filled with seeded Gaussian weights (kaiming scale, float32).

Implementations, timed on weights already in memory (float32 numpy arrays for filterdb,
torch tensors for the reference):

* ``filterdb.layer_quality.layer_metrics(weights)``: one call for the whole set.
* ``torchconvquality.measure_conv_weight_quality(w)`` for each layer, with
  ``torch.set_num_threads(1)`` and ``(2)``.

Scenarios: "idle", then "under load": the same while a subprocess pinned to the second
core spins a busy loop. Seconds are the best of ``--repeat`` rounds (wall clock);
the speed-up divides the reference's best setting in the same scenario by filterdb.
Targets: idle, at least 5x the reference's best setting (part 8 of the issue); under
load, no collapse (part 2): filterdb at most ``COLLAPSE`` times its idle time.
Before timing, the results are compared (max absolute difference per metric).

Writes the section "## Layer quality (issue 3)" of BENCHMARKS.md (other sections are
left as they are) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from filterdb.layer_quality import layer_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_thresholds import real_layers  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # torchconvquality imports distutils
    from torchconvquality import measure_conv_weight_quality

ROOT = Path(__file__).resolve().parents[1]
from benchmarks_md import replace_section  # noqa: E402

SECTION = "## Layer quality (issue 3)"
TARGET = 5.0
#: Part 2 of the issue: threads must not collapse under load. With one of the two cores
#: taken, at most half the CPU is lost (2x); 25 % on top for this VM's timing noise.
#: The published tool went from 0.38 s to over 20 s.
COLLAPSE = 2.5
#: Calls per timed round, for sets that take milliseconds.
PASSES = {"real 3x3": 20}
TIGHT = ("sparsity", "variance_entropy", "variance_entropy_norm", "variance_entropy_clean",
         "variance_entropy_clean_norm")


def resnet50_shapes() -> list[tuple[int, int, int, int]]:
    """(c_out, c_in, kh, kw) of every conv layer of ResNet-50, in order."""
    shapes = [(64, 3, 7, 7)]
    c_in = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out = 4 * width
        for block in range(blocks):
            shapes += [(width, c_in, 1, 1), (width, width, 3, 3), (out, width, 1, 1)]
            if block == 0:
                shapes.append((out, c_in, 1, 1))   # downsample of the first block
            c_in = out
    assert len(shapes) == 53
    return shapes


def resnet50_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape, dtype=np.float32)
             * np.float32(np.sqrt(2 / (shape[0] * shape[2] * shape[3]))))
            for shape in resnet50_shapes()]


def reference(tensors: list[torch.Tensor]) -> list[dict]:
    return [measure_conv_weight_quality(t) for t in tensors]


def best_of(function, repeat: int, passes: int) -> tuple[float, list[float]]:
    """Best and all of ``repeat`` rounds; a round is ``passes`` calls, in seconds per call."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(passes):
            function()
        rounds.append((time.perf_counter() - started) / passes)
    return min(rounds), rounds


def compare(ours: list[dict], theirs: list[dict], weights: list[np.ndarray]) -> dict:
    """Max |difference| per metric; normalised entropies on 3x3 layers only (other kernel
    sizes divide by another random-entropy model by design)."""
    worst: dict[str, float] = {}
    for a, b, w in zip(ours, theirs, weights, strict=True):
        for key in (*TIGHT, "orthogonality"):
            if key.endswith("_norm") and w.shape[2:] != (3, 3):
                continue
            worst[key] = max(worst.get(key, 0.0), abs(float(a[key]) - float(b[key])))
    return worst


class Burner:
    """A subprocess spinning a busy loop on the last core."""

    def __enter__(self):
        code = ("import os\n"
                f"os.sched_setaffinity(0, {{{os.cpu_count() - 1}}})\n"
                "while True:\n    pass\n")
        self.process = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def run_scenario(sets: dict, repeat: int) -> dict:
    results = {}
    for name, (weights, tensors) in sets.items():
        row = {}
        passes = PASSES.get(name, 1)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row[f"reference {threads}"] = best_of(lambda t=tensors: reference(t), repeat, passes)
        torch.set_num_threads(2)
        row["filterdb"] = best_of(lambda w=weights: layer_metrics(w), repeat, passes)
        results[name] = row
        print(f"  {name}: " + ", ".join(f"{k} {v[0]:.3f} s" for k, v in row.items()),
              file=sys.stderr, flush=True)
    return results


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}; {blas_kernels()}; "
            f"filterdb at commit {commit}{' (src modified)' if dirty else ''}")


def blas_kernels() -> str:
    """Which kernels numpy's OpenBLAS uses: the Gram products run at their speed."""
    from threadpoolctl import threadpool_info

    names = sorted({info.get("architecture") or "?" for info in threadpool_info()
                    if info.get("internal_api") == "openblas"})
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"OpenBLAS kernels {', '.join(names) or 'none'}"
            + (f" (OPENBLAS_CORETYPE={forced} set in the environment)" if forced else ""))


def render(timings: dict, agreement: dict, counts: dict, command: str, repeat: int,
           load: float) -> str:
    lines = [SECTION, "", "Command (from the repository root):", "", "```", command, "```", "",
             f"Machine: {machine()}. Load average (1 min) before the run: {load:.2f}.", "",
             "| scenario | layer set | layers | reference 1 thread s | reference 2 threads s "
             "| filterdb s | speed-up vs reference best | target |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario, results in timings.items():
        for name, row in results.items():
            best = min(row["reference 1"][0], row["reference 2"][0])
            speedup = best / row["filterdb"][0]
            if scenario == "idle":
                verdict = f"{'pass' if speedup >= TARGET else '**fail**'} (>= {TARGET:.0f}x)"
            else:
                slowdown = row["filterdb"][0] / timings["idle"][name]["filterdb"][0]
                verdict = (f"{'pass' if slowdown <= COLLAPSE else '**fail**'} (no collapse: "
                           f"{slowdown:.2f}x its idle time, <= {COLLAPSE}x)")
            lines.append(
                f"| {scenario} | {name} | {counts[name]} | {row['reference 1'][0]:.3f} | "
                f"{row['reference 2'][0]:.3f} | {row['filterdb'][0]:.3f} | {speedup:.1f}x | "
                f"{verdict} |")
    lines += ["", "Under load / idle (seconds ratio, same implementation):", "",
              "| layer set | reference 1 thread | reference 2 threads | filterdb |",
              "|---|---|---|---|"]
    for name in timings["idle"]:
        idle, load = timings["idle"][name], timings["under load"][name]
        lines.append(f"| {name} | " + " | ".join(
            f"{load[k][0] / idle[k][0]:.2f}x" for k in ("reference 1", "reference 2",
                                                         "filterdb")) + " |")
    lines += ["", f"Seconds are the best of {repeat} rounds, wall clock, per pass over the "
              f"set (a round of the real 3x3 set is {PASSES['real 3x3']} passes), weights "
              "already in "
              "memory (float32 numpy arrays for filterdb, torch tensors for torchconvquality "
              "0.3.0, which is called once per layer). filterdb computes a whole set in one "
              "`layer_metrics` call with BLAS limited to one thread. \"Under load\": a "
              "subprocess spinning a busy loop pinned to the last core, started 1 s before "
              "the timings. All rounds (s):", ""]
    for scenario, results in timings.items():
        for name, row in results.items():
            lines.append(f"- {scenario}, {name}: " + "; ".join(
                f"{k} " + ", ".join(f"{s:.3f}" for s in v[1]) for k, v in row.items()))
    speedups = {name: min(row["reference 1"][0], row["reference 2"][0]) / row["filterdb"][0]
                for name, row in timings["idle"].items()}
    loaded = {name: min(row["reference 1"][0], row["reference 2"][0]) / row["filterdb"][0]
              for name, row in timings["under load"].items()}
    slow = {name: timings["under load"][name]["reference 2"][0]
            / timings["idle"][name]["reference 2"][0] for name in timings["idle"]}
    own = {name: timings["under load"][name]["filterdb"][0]
           / timings["idle"][name]["filterdb"][0] for name in timings["idle"]}
    lines += ["", f"Idle, filterdb is {min(speedups.values()):.1f}x to "
              f"{max(speedups.values()):.1f}x faster than the reference's best thread setting "
              f"({'meets' if min(speedups.values()) >= TARGET else 'misses'} the issue's "
              f"{TARGET:.0f}x target, which names no load). Under load the reference with 2 "
              "threads takes " + " and ".join(f"{v:.1f}x ({k})" for k, v in slow.items())
              + " its idle time, filterdb " + " and ".join(f"{v:.2f}x" for v in own.values())
              + f" ({'no collapse' if max(own.values()) <= COLLAPSE else 'COLLAPSE'}: with one "
              "of two cores taken it can lose at most half its CPU, 2x; the bound allows "
              f"{COLLAPSE}x for this VM's noise). Under load filterdb is still "
              + " and ".join(f"{v:.1f}x" for v in loaded.values())
              + " faster than the reference's best setting under the same load: the reference "
              "with 1 thread keeps the free core to itself, filterdb shares the busy one."]
    lines += ["", "Agreement in the same run (max |filterdb - torchconvquality|; normalised "
              "entropies compared on 3x3 layers only):", ""]
    for name, worst in agreement.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/bench_quality.py" + (
        f" --repeat {args.repeat}" if args.repeat != 5 else "")

    real = [weight for group in real_layers().values() for _, weight, _ in group
            if weight.shape[2:] == (3, 3)]
    sets = {}
    for name, weights in (("real 3x3", real), ("ResNet-50 shapes", resnet50_weights())):
        weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
        sets[name] = (weights, [torch.from_numpy(w.copy()) for w in weights])
    counts = {name: len(weights) for name, (weights, _) in sets.items()}
    load = os.getloadavg()[0]
    assert counts["real 3x3"] == 31, counts

    agreement = {name: compare(layer_metrics(w), reference(t), w)
                 for name, (w, t) in sets.items()}
    timings = {}
    print("idle", file=sys.stderr)
    timings["idle"] = run_scenario(sets, args.repeat)
    print("under load", file=sys.stderr)
    with Burner():
        timings["under load"] = run_scenario(sets, args.repeat)
    section = render(timings, agreement, counts, command, args.repeat, load)
    print(section)
    if not args.no_write:
        replace_section(section)
        print(f"wrote {SECTION!r} in {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
