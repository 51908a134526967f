"""Submit cells: skip the stored ones, order the rest, run them, store each result at once.

This is the one path from a list of cell specs to a store, used by the sweeps and studies,
the audit and the benchmarks. The driver (the caller) is the only writer of the store:
workers return records and tensor bytes, and :func:`submit_cells` writes them the moment
they arrive, so an interrupted run loses only the cells in flight and a rerun continues.
Cells that train or reuse the same decoder, shadow or trained defense
(:meth:`AttackCell.shared_models`)
are chained — the first trains it, the others wait and read it — so no two workers ever
train the same model.

The recognisability evaluator (one per dataset) is the exception: every attack cell needs
it, but only to score its reconstructions at the very end. Rather than hold every cell back
until one task has trained it, a parallel executor's workers leave the scoring out
(``defer_scoring``) and the driver trains the evaluator in a thread of its own while they
attack, then scores each cell as it arrives (:func:`splitleak.cells.score_cell`), before
storing it. The numbers are those of a serial run, which scores inside each cell.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from splitleak.cells import (
    AccuracyCell,
    AttackCell,
    CellOutput,
    VictimId,
    register_victim,
    score_cell,
    train_evaluator,
)
from splitleak.compute import using_threads
from splitleak.config import ComputeSettings, VictimConfig
from splitleak.errors import SplitleakError
from splitleak.executor.artifacts import install, pack_folder
from splitleak.executor.base import Executor, Task
from splitleak.executor.serial import SerialExecutor
from splitleak.executor.worker import Reply
from splitleak.experiment import Victim, default_cache_dir, load_victim
from splitleak.records import stable_hash
from splitleak.store import ResultStore

CELL_FUNCTION = "splitleak.cells:compute_cell"
VICTIM_FUNCTION = "splitleak.cells:train_victim"
Spec = AttackCell | AccuracyCell


class CellsFailedError(SplitleakError):
    """Some cells kept failing; the others are stored, and a rerun retries the failed ones."""


@dataclass
class SubmitOutcome:
    """Keys computed now (in completion order), reused from the store, and failed (-> why)."""

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`CellsFailedError` naming the failed cells, if any."""
        if not self.failed:
            return
        first = "; ".join(f"{self.labels.get(k, k)}: {m}" for k, m in list(self.failed.items())[:3])
        more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
        raise CellsFailedError(
            f"{len(self.failed)} cell(s) failed — {first}{more}; the other cells are stored, "
            "rerun the same command to retry the failed ones"
        )


def unique_cells(cells: Iterable[Spec]) -> list[Spec]:
    """``cells`` without repeated keys, in first-seen order."""
    seen: dict[str, Spec] = {}
    for spec in cells:
        seen.setdefault(spec.key, spec)
    return list(seen.values())


def plan_tasks(
    cells: Sequence[Spec],
    victim_refs: Mapping[VictimId, str],
    *,
    function: str = CELL_FUNCTION,
    progress: bool = False,
    estimates: Mapping[str, float] | None = None,
    defer_scoring: bool = False,
) -> list[Task]:
    """One task per cell; a cell that reuses another's learned model depends on it.

    ``defer_scoring``: the workers leave the recognisability measures to the driver.
    """
    producers: dict[str, str] = {}
    tasks = []
    for spec in cells:
        if spec.victim_id not in victim_refs:
            raise SplitleakError(
                f"cell {spec.label!r} needs victim {spec.victim_id.checkpoint}, "
                "which was not given to submit_cells"
            )
        deps = tuple(dict.fromkeys(producers[g] for g in spec.shared_models() if g in producers))
        for group in spec.shared_models():
            producers.setdefault(group, spec.key)
        payload = {
            "cell": spec.model_dump(mode="json"),
            "victim": victim_refs[spec.victim_id],
            "progress": progress,
            "defer_scoring": defer_scoring and isinstance(spec, AttackCell),
        }
        estimate = (estimates or {}).get(spec.key, 0.0)
        tasks.append(Task(spec.key, function, payload, deps, spec.label, estimate))
    return tasks


def submit_cells(
    cells: Iterable[Spec],
    store: ResultStore,
    *,
    victims: Iterable[Victim],
    executor: Executor | None = None,
    mirror: ResultStore | None = None,
    estimates: Mapping[str, float] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[str], None] | None = None,
    on_failed: Callable[[str, str], None] | None = None,
    progress: bool = False,
    function: str = CELL_FUNCTION,
) -> SubmitOutcome:
    """Compute every cell not yet in ``store`` and store it; returns what was done.

    Args:
        victims: the trained victims the cells name (loaded in the driver).
        executor: where cells run (default: a :class:`SerialExecutor`, closed afterwards).
        mirror: a second store that gets every cell of this call (an audit folder whose
            cells live in a shared store: hard links, so the folder is self-contained).
        on_start, on_done: called with a key when its cell starts and when it is stored;
            ``on_failed`` with the key and the reason when a cell is given up.
        progress: training bars inside cells (the serial executor only).
        function: the worker function (``module:name``; tests instrument it).
    """
    unique = unique_cells(cells)
    outcome = SubmitOutcome(labels={s.key: s.label for s in unique})
    outcome.reused = [s.key for s in unique if store.has(s.key)]
    for key in outcome.reused:
        if mirror is not None:
            store.link(key, mirror)
    pending = [s for s in unique if not store.has(s.key)]
    if not pending:
        return outcome
    owned = executor is None
    ex = executor if executor is not None else SerialExecutor()
    victims = list(victims)
    scorer: _Scorer | None = None
    report = None

    def put(key: str, out: CellOutput, reply: Reply) -> None:
        runner = {"executor": ex.name, "host": reply.host}
        store.put_bytes(key, {**out.record, "runner": runner}, out.tensors)
        if mirror is not None:
            store.link(key, mirror)
        outcome.computed.append(key)
        if on_done is not None:
            on_done(key)

    try:
        if not isinstance(ex, SerialExecutor):
            scorer = _Scorer(victims, pending, ex.threads)
        refs = _victim_refs(victims, ex)
        tasks = plan_tasks(
            pending, refs, function=function, progress=progress and ex.name == "serial",
            estimates=estimates, defer_scoring=scorer is not None,
        )  # fmt: skip
        by_key = {s.key: s for s in pending}

        def drain(*, wait: bool) -> None:
            assert scorer is not None
            done, failed = scorer.scored(wait=wait)
            for key, out, reply in done:
                put(key, out, reply)
            for key, why in failed:
                outcome.failed[key] = why
                if on_failed is not None:
                    on_failed(key, why)

        def stored(task: Task, reply: Reply) -> None:
            if reply.artifacts:  # the driver's own model cache gets every shipped model
                install(default_cache_dir(), reply.artifacts)
            if scorer is None:
                put(task.key, reply.value, reply)
                return
            # Never block the scheduling loop on the evaluator: a cell that arrives before
            # it is trained waits in the scorer's backlog, and the loop starts the next task.
            scorer.add(task.key, by_key[task.key], reply)
            drain(wait=False)

        report = ex.run(
            tasks,
            on_start=(lambda t: on_start(t.key)) if on_start is not None else None,
            on_result=stored,
            on_failure=(lambda t, why: on_failed(t.key, why)) if on_failed is not None else None,
        )
        if scorer is not None:
            drain(wait=True)
    finally:
        if scorer is not None and report is None:  # interrupted: keep what can be scored now
            with contextlib.suppress(Exception):
                for key, out, reply in scorer.scored(wait=False)[0]:
                    put(key, out, reply)
        if owned:
            ex.close()
    outcome.failed.update(report.failed)
    return outcome


class _Scorer:
    """The driver's side of deferred scoring: evaluators trained in a thread, cells scored.

    Every dataset among the pending attack cells gets its evaluator trained (or read from
    the cache) in one background daemon thread (it never holds up the end of the command),
    with the executor's thread count per task — what its workers compute with. Computed cells
    wait in a backlog (:meth:`add`) until their evaluator is ready (:meth:`scored`), so that
    the driver keeps starting tasks meanwhile; a cell in the backlog is, like a running one,
    not yet stored.
    """

    def __init__(self, victims: list[Victim], pending: Sequence[Spec], threads: int | None):
        self.victims = {VictimId.of(v): v for v in victims}
        self.threads = threads
        self._ready: dict[str | None, Future[None]] = {}
        self._backlog: list[tuple[str, Spec, Reply]] = []
        jobs = []
        for spec in pending:
            if isinstance(spec, AttackCell) and spec.victim_id.data not in self._ready:
                self._ready[spec.victim_id.data] = Future()
                jobs.append((self._ready[spec.victim_id.data], spec))
        thread = threading.Thread(
            target=self._train_all, args=(jobs,), name="splitleak-evaluator", daemon=True
        )
        thread.start()

    def _threads(self) -> contextlib.AbstractContextManager[object]:
        return using_threads(self.threads) if self.threads else contextlib.nullcontext()

    def _train_all(self, jobs: list[tuple[Future[None], AttackCell]]) -> None:
        for future, spec in jobs:
            try:
                with self._threads():
                    train_evaluator(self.victims[spec.victim_id], spec.victim.cache_dir)
                future.set_result(None)
            except Exception as err:  # reported with the cells that need it
                future.set_exception(err)

    def add(self, key: str, spec: Spec, reply: Reply) -> None:
        """A computed cell, to be scored once its evaluator is ready."""
        self._backlog.append((key, spec, reply))

    def scored(
        self, *, wait: bool = False
    ) -> tuple[list[tuple[str, CellOutput, Reply]], list[tuple[str, str]]]:
        """The backlog's cells whose evaluator is ready (``wait``: all), scored, and the
        cells whose evaluator could not be trained (key, reason); the rest stay."""
        done: list[tuple[str, CellOutput, Reply]] = []
        failed: list[tuple[str, str]] = []
        left: list[tuple[str, Spec, Reply]] = []
        for key, spec, reply in self._backlog:
            out: CellOutput = reply.value
            if out.unscored is None or not isinstance(spec, AttackCell):
                done.append((key, out, reply))
                continue
            ready = self._ready[spec.victim_id.data]
            if not (wait or ready.done()):
                left.append((key, spec, reply))
                continue
            if ready.exception() is not None:
                failed.append((key, f"the recognisability evaluator could not be trained: "
                               f"{ready.exception()}"))  # fmt: skip
                continue
            with self._threads():
                out = score_cell(out, self.victims[spec.victim_id], spec.victim.cache_dir)
            done.append((key, out, reply))
        self._backlog = left
        return done, failed


def _victim_refs(victims: Iterable[Victim], executor: Executor) -> dict[VictimId, str]:
    refs = {}
    for victim in victims:
        refs[VictimId.of(victim)] = register_victim(victim)
        if executor.ships_artifacts and victim.checkpoint is not None:
            name = f"models/{victim.checkpoint.name}"
            executor.share(name, pack_folder(victim.checkpoint, name))
    return refs


def provide_victim(
    config: VictimConfig,
    executor: Executor | None = None,
    *,
    progress: bool = False,
    compute: ComputeSettings | None = None,
) -> Victim:
    """The victim, trained once: in this process (serial), else as a task of ``executor``.

    ``compute``: where a victim not yet cached is trained (default: the CPU in fp32). A
    victim trained by a worker lands in the model cache (shipped back from another
    machine), and the driver then loads it from there.
    """
    # Resolved here, once, so that a worker trains the checkpoint the driver then looks for.
    resolved = compute.resolve() if compute is not None else None
    if executor is None or isinstance(executor, SerialExecutor) or config.checkpoint:
        return load_victim(config, progress=progress, compute=resolved)
    settings = (
        None
        if resolved is None
        else {"device": str(resolved.device), "precision": resolved.precision}
    )
    payload = {
        "victim": config.model_dump(mode="json"),
        "ship": executor.ships_artifacts,
        "compute": settings,
    }
    key = f"victim-{stable_hash(payload['victim'])}"
    replies: list[Reply] = []
    report = executor.run(
        [Task(key, VICTIM_FUNCTION, payload, label="train the victim")],
        on_result=lambda _, reply: replies.append(reply),
    )
    if report.failed:
        raise SplitleakError(f"the victim could not be trained: {report.failed[key]}")
    bundle = replies[0].value.get("bundle")
    if bundle:
        install(config.cache_dir or default_cache_dir(), bundle)
    return load_victim(config, progress=False, compute=resolved)
