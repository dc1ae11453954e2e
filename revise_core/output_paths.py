"""Checks on the paths a run writes, made before any model is loaded: the output can be created, and it is
not one of the inputs (a source video is often the user's only copy)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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
