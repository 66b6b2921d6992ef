"""Long fuzz run of the model readers: mutated real and generated model files.

Each input is a valid file (the three rapidocr ONNX models, and generated PyTorch,
safetensors, Keras and TFLite files) with 1 to 4 random byte-level edits, read with
``open_model``. A reader may return a record or raise ModelReadError; anything else
is a crash, saved under ``--crashes`` for reproduction. Prints and writes (``--out``)
the figures RELIABILITY.md quotes.

Run from the repository root::

    PYTHONPATH=src nice -n 10 python scripts/fuzz_readers.py --inputs 12000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the sample writers live with the tests

from tests.reliability import hostile  # noqa: E402
from tests.reliability.fuzzing import OPERATIONS, Mutation, mutate, read_mutant  # noqa: E402


def samples(folder: Path, onnx_dir: Path) -> dict[str, Path]:
    """Name -> valid file to mutate."""
    found = {p.stem: p for p in sorted(onnx_dir.glob("*.onnx"))}
    if not found:
        sys.exit(f"no ONNX models in {onnx_dir}: run scripts/fetch_test_models.py first")
    for name in ("pt", "safetensors", "keras", "tflite"):
        found[name] = hostile.SAMPLES[name](folder)
    return found


def random_mutations(rng: np.random.Generator) -> list[Mutation]:
    edits = []
    for _ in range(rng.integers(1, 5)):
        # Half the edits near either end, where headers, tables and footers live.
        where = float(rng.choice([rng.uniform(0, 1), rng.uniform(0, 0.02),
                                  rng.uniform(0.98, 1)], p=[0.5, 0.25, 0.25]))
        edits.append(Mutation(str(rng.choice(OPERATIONS)), where, int(rng.integers(0, 2**16))))
    return edits


def _normalise(reason: str) -> str:
    """A refusal reason with numbers and quoted names blanked: its kind of message."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", reason))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=12000, help="total mutated inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--onnx-dir", type=Path, default=REPO / ".cache/models/rapidocr")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = samples(folder, args.onnx_dir)
        per_sample = -(-args.inputs // len(files))
        figures = {"inputs": 0, "read": 0, "refused": 0, "crashes": 0, "seed": args.seed,
                   "max_seconds": 0.0, "per_sample": {}, "distinct_reasons": 0}
        reasons: Counter = Counter()
        started = time.monotonic()
        for name, path in files.items():
            data = path.read_bytes()
            target = folder / f"mutant{path.suffix}"
            counts = Counter()
            for number in range(per_sample):
                mutant = mutate(data, random_mutations(rng))
                began = time.monotonic()
                try:
                    outcome = read_mutant(mutant, target)
                except Exception:  # a crash: anything but ModelReadError
                    args.crashes.mkdir(parents=True, exist_ok=True)
                    saved = args.crashes / f"{name}-{number}{path.suffix}"
                    saved.write_bytes(mutant)
                    print(f"CRASH {saved}:\n{traceback.format_exc()}", file=sys.stderr)
                    counts["crashes"] += 1
                    continue
                finally:
                    figures["max_seconds"] = max(figures["max_seconds"],
                                                 time.monotonic() - began)
                if outcome == "read":
                    counts["read"] += 1
                else:
                    counts["refused"] += 1
                    reasons[_normalise(outcome)] += 1
            figures["per_sample"][name] = dict(counts)
            for key in ("read", "refused", "crashes"):
                figures[key] += counts[key]
            figures["inputs"] += per_sample
            print(f"{name}: {dict(counts)}", flush=True)
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["max_seconds"] = round(figures["max_seconds"], 3)
        figures["distinct_reasons"] = len(reasons)
        figures["top_reasons"] = reasons.most_common(15)
    text = json.dumps(figures, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if figures["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
