"""Build progress on stderr: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from ..errors import one_line
from ..worker import ADDED


class BuildProgress:
    def __init__(self):
        self.bar = None
        self.filters = 0
        self.started = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, outcome, report) -> None:
        self.filters += sum(outcome.filters.values()) if outcome.status == ADDED else 0
        if sys.stderr.isatty():
            if self.bar is None:
                self.bar = tqdm(total=report.planned, unit="model", file=sys.stderr,
                                dynamic_ncols=True)
            self.bar.update(1)
            rate = self.filters / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.filters:,} filters, {rate:,.0f}/s")
        else:
            detail = (", ".join(f"{n:,} {s}" for s, n in outcome.filters.items())
                      if outcome.status == ADDED else outcome.reason)
            line = one_line(f"{outcome.model} ({detail})")
            print(f"{outcome.status}: {line}", file=sys.stderr, flush=True)
