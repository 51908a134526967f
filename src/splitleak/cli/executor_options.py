"""``--executor``, ``--workers``, ``--address`` and ``--store``: where cells run and live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from splitleak.executor import EXECUTORS

T = TypeVar("T")

ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help=f"where cells run: {', '.join(EXECUTORS)} (ray: pip install 'splitleak\\[ray]')",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(help="cells in flight (processes: default the usable cores; ray: its CPUs)"),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster to join (auto, host:6379, ray://host:10001; or RAY_ADDRESS)"),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        help="cell store shared by commands and benchmarks (or SPLITLEAK_STORE); "
        "default: the output folder"
    ),
]


def check_executor(name: str, workers: int | None, address: str | None) -> None:
    """Refuse a bad executor choice before any work (nothing is started)."""
    from splitleak.executor import check_executor_options

    check_executor_options(name, workers=workers, address=address)


def open_executor(name: str, workers: int | None, address: str | None) -> Any:
    """The executor the options name (a one-line error for a bad combination)."""
    from splitleak.executor import make_executor

    return make_executor(name, workers=workers, address=address)


def run_study(
    study: Callable[..., T],
    *args: Any,
    executor: str,
    workers: int | None,
    address: str | None,
    store: Path | None,
    out: Path,
    noun: str,
    **kwargs: Any,
) -> T:
    """Call a study of :mod:`splitleak.studies` with its executor, store and progress bar.

    A parallel executor gets one progress bar over the cells; the serial one keeps the
    cells' own training bars.
    """
    from splitleak.progress import CellProgress
    from splitleak.store import ResultStore, store_dir

    runner = open_executor(executor, workers, address)
    display = None if runner.name == "serial" else CellProgress(noun=noun)
    try:
        with runner:
            return study(
                *args,
                store=ResultStore(store_dir(store, out)),
                executor=runner,
                display=display,
                progress=display is None,
                **kwargs,
            )
    finally:
        if display is not None:
            display.stop()
