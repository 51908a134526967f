"""The processes executor: a local pool of worker processes, one torch thread each.

Workers are started with the ``spawn`` method (a clean interpreter, no state copied from
the driver, safe with torch's own threads) by :class:`concurrent.futures.ProcessPoolExecutor`.
Each keeps the victims it loaded, so a victim is read from its checkpoint once per worker,
and all share the model cache on disk, where the first cell of a group trains the decoder or
shadow that the others then read. A worker that dies breaks the pool: the pool is rebuilt
and the tasks it held are retried (see :mod:`splitleak.executor.base`).
"""

from __future__ import annotations

import multiprocessing
import os
import re
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from splitleak.compute import available_cores
from splitleak.executor.base import Executor, ExecutorError, Failure, Task, describe_error
from splitleak.executor.worker import Reply, WorkerContext, run_task, warm_up

_START_TIMEOUT_S = 300  # a spawned worker imports torch: seconds on a busy machine


class ProcessesExecutor(Executor):
    """Runs tasks in ``workers`` local processes.

    Args:
        workers: processes (default: the cores this process may use).
        threads: torch threads per worker (1: the workers do not compete for cores).
        max_attempts: tries per task.
    """

    name = "processes"

    def __init__(
        self, *, workers: int | None = None, threads: int | None = 1, max_attempts: int = 3
    ) -> None:
        super().__init__(
            workers=workers or available_cores(), threads=threads, max_attempts=max_attempts
        )
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def start(self) -> None:
        if self._pool is None:
            self._pool = self._first_pool()

    def _first_pool(self) -> ProcessPoolExecutor:
        """A new pool whose workers are known to start (else a one-line error)."""
        pool = self._new_pool()
        try:
            for future in [pool.submit(warm_up) for _ in range(self.workers)]:
                future.result(timeout=_START_TIMEOUT_S)
        except (BrokenProcessPool, TimeoutError) as err:
            pool.shutdown(wait=False, cancel_futures=True)
            raise ExecutorError(
                f"the worker processes do not start ({type(err).__name__}); in a script, "
                "call splitleak under `if __name__ == '__main__':` (spawned workers re-import "
                "it), or use --executor serial"
            ) from None
        return pool

    def _submit(self, task: Task, context: WorkerContext, bundles: list[Any]) -> Any:
        self.start()
        assert self._pool is not None
        try:
            return self._pool.submit(run_task, task.function, task.payload, context, *bundles)
        except BrokenProcessPool:  # a worker died: start a fresh pool for what follows
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(run_task, task.function, task.payload, context, *bundles)

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Reply | Failure]]:
        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        out: list[tuple[Any, Reply | Failure]] = []
        for future in finished:
            out.append((future, _outcome(future)))
        return out

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # to stop running cells
        pool.shutdown(wait=False, cancel_futures=True)  # idle workers exit by themselves
        for proc in processes:
            proc.join(timeout=2)
        for proc in processes:  # a worker still busy after an interruption is stopped
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def _outcome(future: Future[Reply]) -> Reply | Failure:
    err = future.exception()
    if err is None:
        return future.result()
    if isinstance(err, BrokenProcessPool):
        return Failure(f"its worker process died ({err})", crashed=True)
    return Failure(describe_error(err) + _remote_frame(err))


def _remote_frame(err: BaseException) -> str:
    """`` (file:line in function)`` of the worker's innermost frame, from its traceback text."""
    text = str(getattr(err.__cause__, "tb", ""))
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    if not frames:
        return ""
    path, line, name = frames[-1]
    return f" ({os.path.basename(path)}:{line} in {name})"
