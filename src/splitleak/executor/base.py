"""The executor interface and the one scheduling loop every backend shares.

A :class:`Task` is one unit of work (a cell, or a victim to train) named by a key, with the
keys it depends on. :meth:`Executor.run` keeps up to :attr:`Executor.workers` tasks in
flight, starts a task only once its dependencies have finished, hands each result to the
driver's callback the moment it arrives, and retries a task whose worker raised or died:

- a task that raised is retried up to ``max_attempts`` times in all;
- when a worker process dies (killed, out of memory), every task in flight on the broken
  pool is suspect; suspects are retried one at a time, alone, so a task that kills its
  worker again is found out and the innocent ones finish;
- a task that keeps failing is reported in :attr:`ExecutionReport.failed`, never lost, and
  the tasks that depend on it are reported as not run.

Backends (:mod:`.serial`, :mod:`.processes`, :mod:`.ray_cluster`) only start tasks and
wait for them; only the driver (the caller of :meth:`run`) writes results anywhere.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from splitleak.errors import SplitleakError
from splitleak.executor.artifacts import Bundle
from splitleak.executor.worker import Reply, WorkerContext

# Variables that say where splitleak reads and writes; forwarded to workers on this machine.
FORWARDED_ENV_PREFIX = "SPLITLEAK_"


class ExecutorError(SplitleakError):
    """An executor cannot start (a bad name, a missing extra, an unreachable cluster)."""


@dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes:
        key: unique within a run (a cell's store key).
        function: ``"module:name"`` of a function ``payload -> value`` (run by a worker).
        payload: the function's JSON-serialisable argument.
        deps: keys that must finish first (keys not in the run count as finished).
        label: what the progress display shows.
        estimate_s: expected seconds (the progress display's weights).
    """

    key: str
    function: str
    payload: dict[str, Any]
    deps: tuple[str, ...] = ()
    label: str = ""
    estimate_s: float = 0.0


@dataclass(frozen=True)
class Failure:
    """Why one attempt failed; ``crashed``: the worker process died rather than raised."""

    message: str
    crashed: bool = False


@dataclass
class ExecutionReport:
    """What a run did: finished keys, failures (key -> last error) and attempts per key."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)


def describe_error(err: BaseException) -> str:
    """``Type: message (file:line in function)`` for the innermost frame of ``err``."""
    import traceback

    text = " ".join(f"{type(err).__name__}: {err}".split())
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    if not frames:
        return text
    last = frames[-1]
    return f"{text} ({os.path.basename(last.filename)}:{last.lineno} in {last.name})"


OnStart = Callable[[Task], None]
OnResult = Callable[[Task, Reply], None]
OnFailure = Callable[[Task, str], None]


class Executor(ABC):
    """Runs tasks, serially or in parallel; a context manager (workers stop on exit).

    Args:
        workers: tasks in flight at once.
        threads: torch threads per task (None: leave the process's setting).
        max_attempts: tries per task before it is reported as failed.
    """

    name = "executor"
    ships_artifacts = False  # return trained models to the driver (workers on other machines)

    def __init__(self, *, workers: int = 1, threads: int | None = 1, max_attempts: int = 3):
        if workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {workers}")
        if max_attempts < 1:
            raise ExecutorError(f"max_attempts must be at least 1, got {max_attempts}")
        self.workers, self.threads, self.max_attempts = workers, threads, max_attempts
        self._shared: dict[str, Any] = {}  # bundles every task installs (e.g. the victims)
        self._bundles: dict[str, Any] = {}  # task key -> its created models (as shipped)

    # -- what a backend implements ---------------------------------------------------------

    @abstractmethod
    def _submit(self, task: Task, context: WorkerContext, bundles: list[Any]) -> Any:
        """Start ``task``; returns a handle."""

    @abstractmethod
    def _wait(self, handles: list[Any]) -> list[tuple[Any, Reply | Failure]]:
        """Block until at least one handle finished; returns the finished ones."""

    def _put_bundle(self, bundle: Bundle) -> Any:
        """How a bundle travels to tasks (Ray: an object reference)."""
        return bundle

    def start(self) -> None:  # noqa: B027 - a backend without workers has nothing to start
        """Start the workers now rather than with the first task (benchmarks time them)."""

    def close(self) -> None:  # noqa: B027 - a backend without workers has nothing to stop
        """Stop the workers (running tasks are abandoned)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "threads": self.threads}

    # -- the shared loop -------------------------------------------------------------------

    def context(self) -> WorkerContext:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
        return WorkerContext(
            threads=self.threads,
            env=env,
            sys_path=tuple(p for p in sys.path if p),
            ship_artifacts=self.ships_artifacts,
        )

    def share(self, name: str, bundle: Bundle) -> None:
        """Give every later task the models of ``bundle`` (installed before it starts)."""
        if self.ships_artifacts and bundle and name not in self._shared:
            self._shared[name] = self._put_bundle(bundle)

    def run(
        self,
        tasks: Sequence[Task],
        *,
        on_start: OnStart | None = None,
        on_result: OnResult | None = None,
        on_failure: OnFailure | None = None,
    ) -> ExecutionReport:
        """Run ``tasks`` respecting their dependencies; results go to ``on_result`` at once."""
        run = _Run(self, list(tasks), on_start, on_result, on_failure)
        return run.execute()

    def _bundles_for(self, task: Task, by_key: dict[str, Task]) -> list[Any]:
        if not self.ships_artifacts:
            return []
        seen, stack, found = set(), list(task.deps), []
        while stack:  # every ancestor's models: a victim's and a shared decoder's
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            if key in self._bundles:
                found.append(self._bundles[key])
            stack.extend(by_key[key].deps if key in by_key else ())
        return [*self._shared.values(), *found]


class _Run:
    """The state of one :meth:`Executor.run` call."""

    def __init__(
        self,
        executor: Executor,
        tasks: list[Task],
        on_start: OnStart | None,
        on_result: OnResult | None,
        on_failure: OnFailure | None,
    ) -> None:
        self.ex, self.order = executor, {t.key: i for i, t in enumerate(tasks)}
        self.by_key = {t.key: t for t in tasks}
        if len(self.by_key) != len(tasks):
            raise ExecutorError("two tasks share a key; deduplicate cells before running them")
        self.on_start, self.on_result, self.on_failure = on_start, on_result, on_failure
        self.waiting = [t.key for t in tasks]
        self.inflight: dict[Any, Task] = {}
        self.suspects: set[str] = set()
        self.report = ExecutionReport()
        self.done: set[str] = set()

    def _ready(self, key: str) -> bool:
        return all(d in self.done or d not in self.by_key for d in self.by_key[key].deps)

    def _fail(self, key: str, message: str) -> None:
        self.report.failed[key] = message
        if self.on_failure is not None:
            self.on_failure(self.by_key[key], message)

    def _drop_orphans(self) -> None:
        """Tasks whose dependency failed are reported, not run."""
        changed = True
        while changed:
            changed = False
            for key in list(self.waiting):
                bad = [d for d in self.by_key[key].deps if d in self.report.failed]
                if bad:
                    self.waiting.remove(key)
                    self._fail(key, f"not run: the cell it needs ({bad[0]}) failed")
                    changed = True

    def _fill(self) -> None:
        context = self.ex.context()
        for key in [k for k in self.waiting if self._ready(k)]:
            if len(self.inflight) >= self.ex.workers:
                return
            if any(t.key in self.suspects for t in self.inflight.values()):
                return  # a suspect runs alone
            if key in self.suspects and self.inflight:
                return  # wait for the others to finish, then run it alone
            task = self.by_key[key]
            self.waiting.remove(key)
            handle = self.ex._submit(task, context, self.ex._bundles_for(task, self.by_key))
            self.inflight[handle] = task
            if self.on_start is not None:
                self.on_start(task)
            if key in self.suspects:
                return

    def _finish(self, task: Task, outcome: Reply | Failure) -> None:
        self.report.attempts[task.key] += 1
        if isinstance(outcome, Reply):
            self.done.add(task.key)
            self.report.done.append(task.key)
            if outcome.artifacts:
                self.ex._bundles[task.key] = self.ex._put_bundle(outcome.artifacts)
            if self.on_result is not None:
                self.on_result(task, outcome)
            return
        if outcome.crashed:
            self.suspects.add(task.key)
        if self.report.attempts[task.key] < self.ex.max_attempts:
            self.waiting.append(task.key)
            self.waiting.sort(key=self.order.__getitem__)
        else:
            tries = self.report.attempts[task.key]
            self._fail(task.key, f"failed {tries} times; last: {outcome.message}")

    def execute(self) -> ExecutionReport:
        while self.waiting or self.inflight:
            self._drop_orphans()
            self._fill()
            if not self.inflight:
                for key in list(self.waiting):  # nothing can start: a dependency cycle
                    self.waiting.remove(key)
                    self._fail(key, "not run: its dependencies never finished")
                break
            for handle, outcome in self.ex._wait(list(self.inflight)):
                self._finish(self.inflight.pop(handle), outcome)
        return self.report
