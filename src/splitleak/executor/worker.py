"""What runs on a worker: one task, with the driver's thread count, environment and models.

:func:`run_task` is the only function an executor sends to a worker process or a Ray task.
It applies the :class:`WorkerContext` (torch threads; the driver's ``SPLITLEAK_*``
variables on a local cluster; import paths), installs the trained models the task depends
on, calls the task's function by its ``module:name`` and returns a :class:`Reply` — the
value plus, where the executor ships models, the cache folders the task created.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from splitleak.executor.artifacts import Bundle, complete_folders, install, pack


@dataclass(frozen=True)
class WorkerContext:
    """How a worker must be set up before a task runs.

    Attributes:
        threads: torch intra-op threads (None: leave as is).
        env: environment variables to set first (the model cache and data folders).
        sys_path: import paths to add (so that a task function outside the package imports).
        ship_artifacts: return the cache folders the task created (for other machines).
    """

    threads: int | None = 1
    env: dict[str, str] = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()
    ship_artifacts: bool = False


@dataclass(frozen=True)
class Reply:
    """A task's value, where and how long it ran, and the models it created (if shipped)."""

    value: Any
    seconds: float
    host: str
    pid: int
    artifacts: Bundle | None = None


def resolve(function: str) -> Callable[[dict[str, Any]], Any]:
    """``"package.module:name"`` -> the function."""
    module, _, name = function.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"task function {function!r} is not callable")
    return fn  # type: ignore[no-any-return]


def apply_context(context: WorkerContext) -> None:
    """Set threads, environment and import paths in this (worker) process."""
    os.environ.update(context.env)
    for path in context.sys_path:
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)
    if context.threads is not None:
        import torch

        if torch.get_num_threads() != context.threads:
            torch.set_num_threads(context.threads)


def _cache_root() -> Any:
    from splitleak.experiment import default_cache_dir

    return default_cache_dir()


def run_task(
    function: str, payload: dict[str, Any], context: WorkerContext, *bundles: Bundle
) -> Reply:
    """Run one task in a worker (see module docstring); ``bundles``: models to install first."""
    apply_context(context)
    root = _cache_root()
    for bundle in bundles:
        install(root, bundle)
    before = complete_folders(root) if context.ship_artifacts else set()
    started = time.perf_counter()
    value = resolve(function)(payload)
    seconds = time.perf_counter() - started
    created = complete_folders(root) - before if context.ship_artifacts else set()
    return Reply(
        value=value,
        seconds=round(seconds, 3),
        host=socket.gethostname(),
        pid=os.getpid(),
        artifacts=pack(root, created) if created else None,
    )


def warm_up() -> int:
    """Import what a cell needs (torch, splitleak), so that a started worker is ready."""
    importlib.import_module("splitleak.cells")
    return os.getpid()


def run_in_driver(function: str, payload: dict[str, Any]) -> Reply:
    """Run a task in this process, unchanged (the serial executor)."""
    started = time.perf_counter()
    value = resolve(function)(payload)
    return Reply(value, round(time.perf_counter() - started, 3), socket.gethostname(), os.getpid())
