"""Conventions every `python -m` command of the project follows.

Expected errors (a bad or missing file, an empty instruction, a manifest problem, an unwritable output
folder, a full disk) print one line that names the file or field and exit with status 2, without a
traceback; `--debug` shows the traceback. Anything else is a bug and keeps its traceback. Ctrl-C exits
with 130. `main(argv)` functions themselves raise, so that they stay testable and usable from Python.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
# ValueError covers our own input errors (CheckpointError, VideoError, ManifestError, CriticError, VLMError,
# ResumeError, ...); OSError covers missing, unreadable and unwritable files and a full disk.
EXPECTED = (ValueError, OSError)
MAX_JOINED_LINES = 25


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call `main(argv)` with the error conventions above; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED as error:
        if debug:
            raise
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_ERROR


def describe(error: BaseException) -> str:
    """One line: the message (its first line for long library messages), with the file for OS errors."""
    if isinstance(error, OSError) and error.errno is not None:
        reason = error.strerror or os.strerror(error.errno)
        if error.errno == errno.ENOSPC:
            reason += " (free some space or choose another output folder)"
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{reason}"
    lines = [" ".join(line.split()) for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    # A list of problems (a manifest's) stays complete, on one line; a page-long library message is cut.
    shown = lines[:MAX_JOINED_LINES] + ([f"... {len(lines) - MAX_JOINED_LINES} more"] if len(lines) > MAX_JOINED_LINES
                                          else [])
    return shown[0] + (" " + "; ".join(shown[1:]) if len(shown) > 1 else "")


def add_placement_flags(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """The placement plan's flags (revise_core/placement.py), with what each choice costs."""
    from . import placement as plan

    group = parser.add_argument_group("memory placement")
    group.add_argument("--placement", choices=plan.PLACEMENTS, default=default, help=plan.PLACEMENT_HELP)
    group.add_argument("--encoders", choices=plan.ENCODER_STORAGES, default="compute", help=plan.ENCODER_HELP)
    group.add_argument("--dit-storage", choices=plan.DIT_STORAGES, default="compute", help=plan.DIT_STORAGE_HELP)
    group.add_argument("--host", choices=plan.HOSTS, default="ram", help=plan.HOST_HELP)
    group.add_argument("--offload-dir", default="", help="--host disk: folder for the offloaded weights (default: a "
                                                         "temporary folder, removed at exit)")
    group.add_argument("--device-budget", type=float, default=0.0, metavar="GIB",
                       help="GiB of device memory the models may take (default: the device's free memory); e.g. 10 "
                            "on a 12 GiB card that also drives the display")


def placement_config(args: argparse.Namespace):
    """A PlacementConfig from the flags of add_placement_flags."""
    from .placement import PlacementConfig

    return PlacementConfig(placement=args.placement, host=args.host, offload_dir=args.offload_dir,
                           encoders=args.encoders, dit_storage=args.dit_storage,
                           device_budget_gib=args.device_budget)
