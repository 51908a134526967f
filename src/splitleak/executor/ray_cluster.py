"""The Ray executor: one Ray task per cell, on an existing cluster or a local one.

``pip install "splitleak[ray]"``. With ``--address`` (or ``RAY_ADDRESS``) the executor
connects to a running cluster; otherwise it starts a local one on this machine, bound to
127.0.0.1 only, without the dashboard and with usage statistics off, and stops it at the
end. Each task reserves ``threads`` CPUs and runs with that many torch threads.

Trained models travel through Ray's object store: every model a task creates (the victim,
a decoder, a shadow) comes back with its result, and the tasks that depend on it install
it before they start — so nodes need no shared disk and nothing is trained twice. Ray's
own task retries are off: the driver retries (see :mod:`splitleak.executor.base`), so a
killed worker's cell is retried once for every executor in the same way.
"""

from __future__ import annotations

import os
from typing import Any

from splitleak.compute import available_cores
from splitleak.executor.artifacts import Bundle
from splitleak.executor.base import Executor, ExecutorError, Failure, Task, describe_error
from splitleak.executor.worker import Reply, WorkerContext, run_task, warm_up

# Ray resolves "127.0.0.1" to the machine's address unless multi-node mode is off; with it
# off, every Ray server of a local cluster listens on the loopback interface only.
_LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            'the ray executor needs Ray: pip install "splitleak[ray]" (or use --executor processes)'
        ) from None
    return ray


def start_local_cluster(*, num_cpus: int) -> None:
    """Start a Ray cluster in this process: loopback only, no dashboard, no usage statistics."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault(_LOOPBACK_ONLY, "0")
    ray = _import_ray()
    try:  # already imported before the variable was set: apply it to the loaded constant
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = os.environ[_LOOPBACK_ONLY].lower() not in (
            "0",
            "false",
        )
    except (ImportError, AttributeError):  # pragma: no cover - another Ray layout
        pass
    ray.init(
        address="local",
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        configure_logging=False,
        log_to_driver=False,
    )


class RayExecutor(Executor):
    """Runs tasks as Ray tasks.

    Args:
        address: a cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); None:
            ``RAY_ADDRESS``, else the Ray runtime this process already started, else a new
            local cluster with ``workers`` CPUs.
        workers: tasks in flight (default: the cluster's CPUs divided by ``threads``).
        threads: CPUs each task reserves, and its torch threads.
        max_attempts: tries per task.
    """

    name = "ray"
    ships_artifacts = True

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        threads: int = 1,
        max_attempts: int = 3,
    ) -> None:
        ray = _import_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            if self.address is None:
                start_local_cluster(num_cpus=(workers or available_cores()) * threads)
                self._started = True
            else:
                try:
                    ray.init(address=self.address, configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as err:
                    raise ExecutorError(
                        f"cannot join the Ray cluster at {self.address}: {err}; "
                        "check --address / RAY_ADDRESS (or omit it for a local cluster)"
                    ) from None
        # Workers on other machines get the models their tasks need and return those they
        # train; without an address the cluster runs on this machine and shares its disk
        # (as in :meth:`context`).
        self.ships_artifacts = self.address is not None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        super().__init__(
            workers=workers or max(cpus // threads, 1), threads=threads, max_attempts=max_attempts
        )
        self._ray = ray
        self._remote = ray.remote(num_cpus=threads, max_retries=0)(run_task)
        self._running: set[Any] = set()

    def start(self) -> None:
        """Have ``workers`` tasks import splitleak (Ray starts idle workers bare)."""
        warm = self._ray.remote(num_cpus=self.threads, max_retries=0)(warm_up)
        self._ray.get([warm.remote() for _ in range(self.workers)])

    def context(self) -> WorkerContext:
        context = super().context()
        if self.address is None:  # a cluster on this machine: same folders, same paths
            return context
        return WorkerContext(threads=context.threads, ship_artifacts=True)

    def _put_bundle(self, bundle: Bundle) -> Any:
        return self._ray.put(bundle)

    def _submit(self, task: Task, context: WorkerContext, bundles: list[Any]) -> Any:
        ref = self._remote.remote(task.function, task.payload, context, *bundles)
        self._running.add(ref)
        return ref

    def _wait(self, handles: list[Any]) -> list[tuple[Any, Reply | Failure]]:
        ready, rest = self._ray.wait(handles, num_returns=1)
        if rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out: list[tuple[Any, Reply | Failure]] = []
        for ref in ready:
            self._running.discard(ref)
            out.append((ref, self._outcome(ref)))
        return out

    def _outcome(self, ref: Any) -> Reply | Failure:
        exceptions = self._ray.exceptions
        try:
            reply: Reply = self._ray.get(ref)
            return reply
        except exceptions.RayTaskError as err:  # the cell raised
            return Failure(describe_error(getattr(err, "cause", None) or err))
        except exceptions.RayError as err:  # the worker or its node died
            return Failure(f"its Ray worker died ({type(err).__name__})", crashed=True)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "address": self.address or "local"}

    def close(self) -> None:
        for ref in list(self._running):  # abandoned by an interruption
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False
