"""Executors: run cells one after another, on a local process pool, or on a Ray cluster.

Every measured number is a cell (:mod:`splitleak.cells`); :func:`submit_cells` turns cells
into tasks, orders the ones that share a trained model, hands them to an executor and
stores each result the moment it arrives. The three backends share one interface and one
scheduling loop, so a cell gives the same stored numbers whichever runs it:

- :class:`SerialExecutor` (``serial``, the default): in this process.
- :class:`ProcessesExecutor` (``processes``): a local pool, one torch thread per worker.
- :class:`RayExecutor` (``ray``): Ray tasks, on ``--address`` / ``RAY_ADDRESS`` or a local
  cluster (``pip install "splitleak[ray]"``).

Example::

    with make_executor("processes", workers=2) as executor:
        outcome = submit_cells(specs, ResultStore(Path("store")), executor=executor,
                               victims=[victim])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from splitleak.executor.base import (
    ExecutionReport,
    Executor,
    ExecutorError,
    Failure,
    Task,
)
from splitleak.executor.processes import ProcessesExecutor
from splitleak.executor.serial import SerialExecutor
from splitleak.executor.worker import Reply

if TYPE_CHECKING:
    from splitleak.executor.submit import (
        CellsFailedError,
        SubmitOutcome,
        provide_victim,
        submit_cells,
    )

# Imported on first use: they pull in the whole attack pipeline, which the CLI's option
# parsing does not need.
_LAZY = ("CellsFailedError", "SubmitOutcome", "provide_victim", "submit_cells")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from splitleak.executor import submit

        return getattr(submit, name)
    raise AttributeError(f"module 'splitleak.executor' has no attribute {name!r}")


ExecutorName = Literal["serial", "processes", "ray"]
EXECUTORS: tuple[str, ...] = ("serial", "processes", "ray")

__all__ = [
    "EXECUTORS",
    "CellsFailedError",
    "ExecutionReport",
    "Executor",
    "ExecutorError",
    "ExecutorName",
    "Failure",
    "ProcessesExecutor",
    "Reply",
    "SerialExecutor",
    "SubmitOutcome",
    "Task",
    "check_executor_options",
    "make_executor",
    "provide_victim",
    "submit_cells",
]


def check_executor_options(
    name: str, *, workers: int | None = None, address: str | None = None
) -> None:
    """Refuse an unknown executor or a bad combination of options, starting nothing."""
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers must be at least 1, got {workers}")
    if name == "serial" and (workers not in (None, 1) or address):
        raise ExecutorError("--workers and --address need --executor processes or ray")
    if name == "processes" and address:
        raise ExecutorError("--address is for --executor ray")
    if name == "ray":
        from splitleak.executor.ray_cluster import _import_ray

        _import_ray()


def make_executor(
    name: str = "serial",
    *,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    max_attempts: int = 3,
) -> Executor:
    """An executor by name; the CLI's ``--executor``, ``--workers`` and ``--address``.

    ``threads`` defaults to the process's setting for ``serial`` and to 1 per worker for
    the others (identical numbers need the same thread count everywhere).
    """
    check_executor_options(name, workers=workers, address=address)
    if name == "serial":
        return SerialExecutor(threads=threads, max_attempts=max_attempts)
    if name == "processes":
        return ProcessesExecutor(workers=workers, threads=threads or 1, max_attempts=max_attempts)
    from splitleak.executor.ray_cluster import RayExecutor

    return RayExecutor(
        address=address, workers=workers, threads=threads or 1, max_attempts=max_attempts
    )
