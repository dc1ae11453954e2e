"""One training run per output folder: an OS lock on `<output_dir>/run.lock` that dies with its holder.

The lock is the operating system's (flock on POSIX, msvcrt.locking on Windows), so a run killed with kill -9
leaves no stale lock behind: the next run simply takes it. The file records who holds it (pid and host), which
the refusal names. Under torchrun only rank 0 takes it.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import weakref
from pathlib import Path

LOCK_FILE = "run.lock"


class RunLockedError(ValueError):
    """Another process is training into the same output folder (an expected error: one line on the command line)."""


class RunLock:
    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.path = Path(output_dir) / LOCK_FILE
        self._fd: int | None = None
        self._finalizer = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                _lock(fd)
            except OSError:
                if _holder_pid(fd) != os.getpid():
                    raise
                # Held by this process: a trainer dropped without cleanup (after an error, or a Python caller
                # that trains and resumes in one session) whose reference cycle the garbage collector has not
                # reclaimed yet; collecting releases its lock. A trainer still in use keeps it.
                gc.collect()
                _lock(fd)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another training run ({holder}); wait for it to end, or choose "
                "another output folder") from error
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd
        # Released with the object too (a run abandoned by an exception in a long-lived ComfyUI process).
        self._finalizer = weakref.finalize(self, _release, fd)
        return self

    def release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer, self._fd = None, None


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _release(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _holder_data(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}") if hasattr(os, "pread") else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder_pid(fd: int) -> int | None:
    data = _holder_data(fd)
    return data.get("pid") if data.get("host") == socket.gethostname() else None


def _holder(fd: int) -> str:
    data = _holder_data(fd)
    if "pid" not in data:
        return "a process that has not written its name yet"
    return f"pid {data['pid']} on {data.get('host', 'an unknown host')}"
