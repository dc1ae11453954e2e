"""Where Toy-RVE's tasks run: spawned one-thread worker processes, or this process (workers=1) with the same
thread count, so that where a task runs changes no number."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor

import torch


class _InProcess:
    """The executor interface, each task run at once in this process (workers=1)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args, **kwargs) -> Future:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a worker: one thread count, so where a task runs changes no number
        try:
            result = fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        future: Future = Future()
        future.set_result(result)
        return future


def executor(workers: int):
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return _InProcess()
    # spawn, not fork: a forked child of a process that has already run OpenMP threads can hang in them
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def _init_worker() -> None:
    torch.set_num_threads(1)  # the toy's tensors are too small for a second thread to help; a second process does
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
