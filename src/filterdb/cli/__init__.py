"""Command-line interface: ``filterdb COMMAND ...``; one module per command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from .._version import __version__
from ..errors import BuildInterrupted, FilterDBError, one_line
from . import (
    analyze,
    build,
    check,
    convert,
    datasheet,
    demo,
    describe,
    export_meta,
    info,
    layers,
    release,
    remove,
    report,
    synth,
    verify,
)

COMMANDS = (build, info, layers, check, demo, synth, analyze, report, verify, describe,
            release, remove, datasheet, export_meta, convert)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="filterdb",
        description="Build, inspect and analyse databases of trained convolution filters.")
    top.add_argument("--version", action="version", version=f"filterdb {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return top


def _keep_last_line() -> None:
    """A Ctrl-C that lands while PyTables opens or closes a temporary master leaves
    that (already removed) file to PyTables' exit hook, which would warn after the
    line saying what happened; the hook still closes it. A file PyTables registered
    but had not opened yet (no root group) would make the hook fail with a traceback:
    it is taken out of PyTables' registry."""
    warnings.filterwarnings("ignore", message="Closing remaining open file")
    pytables = sys.modules.get("tables.file")
    registry = getattr(pytables, "_open_files", None)
    for handle in list(getattr(registry, "handlers", ())):
        if not hasattr(handle, "root"):
            registry.remove(handle)
    # A node of that file which the interrupted code still held fails to close in its
    # destructor once the file is closed ("Problems closing the Group"): Python prints
    # such errors as "Exception ignored", traceback and all. They are not the user's.
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not type(unraisable.exc_value).__module__.startswith("tables"):
            default(unraisable)

    sys.unraisablehook = hook


def _second_interrupt_ends() -> None:
    """After Ctrl-C, a second one ends the process at once (no traceback from the
    shutdown it interrupts)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; known errors become one line on stderr and exit status 2 (130 when
    interrupted by Ctrl-C)."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BuildInterrupted as error:  # Ctrl-C: the conventional 128 + SIGINT
        _keep_last_line()
        _second_interrupt_ends()
        print(f"filterdb: {one_line(str(error))}", file=sys.stderr)
        return 130
    except FilterDBError as error:
        print(f"filterdb: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _keep_last_line()
        _second_interrupt_ends()
        print("filterdb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # an output folder that is read-only, missing, a file, ...
        where = f"{error.filename}: " if error.filename else ""
        print(f"filterdb: error: {where}{error.strerror or one_line(str(error))}",
              file=sys.stderr)
        return 2
