"""The child process of a verification run (``python -m filterdb.readers.run_child``).

Reads a JSON request on stdin, caps its own address space, calls the reader module's
``run`` and prints the :class:`~filterdb.records.RunResult` as one JSON line after
:data:`~filterdb.readers.running.MARKER`. Kept apart from ``running`` so that the
module run as ``__main__`` is not also imported by the package.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
from dataclasses import asdict
from pathlib import Path

from ..records import RUNS_NO, RunResult
from .running import MARKER, failure, memory_text


def main() -> None:
    request = json.loads(sys.stdin.read())
    memory = request["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        result = importlib.import_module(request["module"]).run(
            Path(request["path"]), request["input_shapes"], request["seed"])
    except MemoryError as error:
        result = RunResult(RUNS_NO, f"exceeded the memory limit of {memory_text(memory)} "
                                    f"({type(error).__name__})")
    except Exception as error:  # a runtime's error is the model's failure, not the child's
        result = failure("the run", error)
    print(MARKER + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
