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
from pathlib import Path

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


def writable_output(path: str | os.PathLike, *, what: str = "output") -> Path:
    """Check before any model is loaded that `path` (a file to write) can be created: its folder exists or
    can be made and accepts files. Raises OSError naming the path."""
    path = Path(path)
    folder = path.parent if path.suffix else path
    if path.suffix and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"the {what} path is a folder", str(path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise NotADirectoryError(errno.ENOTDIR, f"the {what} folder is a file", str(folder)) from error
    probe = folder / f".revise-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)
    return path


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


def refuse_overwriting_inputs(output: str | os.PathLike, inputs, *, what: str = "--out") -> None:
    """Refuse, before anything is loaded or written, an output path that is one of the input files: the same
    file however it is spelled (a relative path, `..`, a symlink, a hard link). A source video is often the
    user's only copy. Folder inputs count by every file inside them (a model folder's weights)."""
    output = Path(output)
    target = output.resolve()
    for item in inputs:
        if item is None:
            continue
        item = Path(item)
        files = [p for p in item.rglob("*") if p.is_file()] if item.is_dir() else [item]
        for path in files:
            same = path.exists() and (path.resolve() == target or (output.exists() and os.path.samefile(path, output)))
            if same:
                raise ValueError(f"{what} {output} is the input file {path}: writing there would destroy it; "
                                 "choose another output path (nothing was written)")
