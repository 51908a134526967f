"""The serial executor: one task after another in this process (the default; CI and tests).

Cells run in the driver itself, so they use the victims it already holds in memory and
show their own progress bars; a task that raises is retried like anywhere else, and
Ctrl-C stops at once (finished cells are already stored).
"""

from __future__ import annotations

import contextlib
from typing import Any

from splitleak.compute import using_threads
from splitleak.executor.base import Executor, Failure, Task, describe_error
from splitleak.executor.worker import Reply, WorkerContext, run_in_driver


class SerialExecutor(Executor):
    """Runs each task in the calling process, in dependency order.

    Args:
        threads: torch threads while a task runs (None: the process's current setting).
        max_attempts: tries per task.
    """

    name = "serial"

    def __init__(self, *, threads: int | None = None, max_attempts: int = 3) -> None:
        super().__init__(workers=1, threads=threads, max_attempts=max_attempts)

    def _submit(self, task: Task, context: WorkerContext, bundles: list[Any]) -> Any:
        del context, bundles  # same process: same environment, same model cache
        return _Pending(task)

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Reply | Failure]]:
        handle: _Pending = handles[0]
        task = handle.task
        threads = using_threads(self.threads) if self.threads else contextlib.nullcontext()
        try:
            with threads:
                return [(handle, run_in_driver(task.function, task.payload))]
        except Exception as err:  # any error of a cell is retried, then reported
            return [(handle, Failure(describe_error(err)))]


class _Pending:
    """A task submitted but not yet run (hashable by identity, unlike the task)."""

    def __init__(self, task: Task) -> None:
        self.task = task
