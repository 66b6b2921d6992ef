"""Replace one benchmark's section of BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def replace_section(section: str) -> Path:
    """Put ``section`` (whose first line is its ``## title``) in place of the section of
    that title, or append it; returns the file's path."""
    title = section.splitlines()[0].strip()
    lines = PATH.read_text().splitlines(keepends=True) if PATH.exists() else ["# Benchmarks\n"]
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        text = "".join(lines).rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                    len(lines))
        text = "".join(lines[:start]) + section.rstrip("\n") + "\n" + (
            "\n" + "".join(lines[stop:]) if stop < len(lines) else "")
    PATH.write_text(text)
    return PATH
