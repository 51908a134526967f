"""Progress displays: the bar of one long loop, and that of a batch of cells.

:func:`progress_bar` is every training and optimisation loop's bar (epochs, steps, bytes).
On a terminal it is tqdm's bar; where stderr is a file (a background job, a cluster job's
log) tqdm shows nothing, unless ``SPLITLEAK_PROGRESS=log`` (or ``log:SECONDS``) asks for one
plain line per minute (or per ``SECONDS``) — enough to follow an hour-long decoder fit with
``tail -f`` without filling the log. ``SPLITLEAK_PROGRESS=off`` hides the bars everywhere.

:class:`CellProgress` counts cells across every worker of an executor: the driver calls
:meth:`~CellProgress.running` when a cell starts (on any worker) and
:meth:`~CellProgress.advance` when its result is stored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tqdm.auto import tqdm

from splitleak.errors import SplitleakError

PROGRESS_ENV = "SPLITLEAK_PROGRESS"
LOG_INTERVAL_S = 60.0


def progress_mode() -> tuple[str, float]:
    """``$SPLITLEAK_PROGRESS`` parsed: (``auto`` | ``log`` | ``off``, seconds between lines)."""
    value = os.environ.get(PROGRESS_ENV, "").strip() or "auto"
    mode, _, seconds = value.partition(":")
    if mode in ("auto", "off") and not seconds:
        return mode, LOG_INTERVAL_S
    if mode == "log":
        try:
            interval = float(seconds) if seconds else LOG_INTERVAL_S
        except ValueError:
            interval = -1.0
        if interval > 0:
            return mode, interval
    raise SplitleakError(
        f"{PROGRESS_ENV}={value!r}: expected auto, off, log or log:SECONDS (e.g. log:30)"
    )


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into one line per update."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one, with ``total=``), shown as described above.

    ``progress=False`` hides it whatever the environment says; ``kwargs`` go to tqdm.
    """
    if not progress:
        return tqdm(iterable, disable=True, **kwargs)
    mode, interval = progress_mode()
    if mode == "off":
        return tqdm(iterable, disable=True, **kwargs)
    if mode == "log" and not sys.stderr.isatty():
        kwargs = {**kwargs, "leave": True}
        return tqdm(
            iterable, file=_Lines(sys.stderr), mininterval=interval, maxinterval=interval,
            ascii=True, dynamic_ncols=False, ncols=100, disable=False, **kwargs,
        )  # fmt: skip
    return tqdm(iterable, disable=None, **kwargs)


class CellProgress:
    """A rich progress bar weighted by each cell's estimated cost.

    The bar advances by a cell's estimate (``estimate_s``; equal weights where cells have
    none) when it finishes, so the time-remaining column extrapolates from the cost done per
    second of wall time — with several workers, from all of them together.
    """

    def __init__(self, console: Console | None = None, *, noun: str = "audit grid") -> None:
        self.console = console or Console(stderr=True)
        self.noun = noun
        self.progress = Progress(
            TextColumn("[bold]{task.fields[done]}/{task.fields[cells]}[/] cells"),
            TextColumn("{task.fields[running]}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.cells: list[Any] = []
        self.done: set[str] = set()
        self.active: dict[str, str] = {}

    @staticmethod
    def _weight(cell: Any) -> float:
        return max(float(getattr(cell, "estimate_s", 0.0) or 0.0), 0.01)

    def start(self, cells: list[Any], *, done: set[str]) -> None:
        """Show the bar for ``cells`` (objects with ``key``, ``label``, ``estimate_s``)."""
        self.cells = list({c.key: c for c in cells}.values())
        pending = [c for c in self.cells if c.key not in done]
        total = sum(self._weight(c) for c in pending)
        estimated = any(getattr(c, "estimate_s", 0.0) for c in pending)
        left = f", about {total / 60:.1f} min of work left (estimate)" if estimated else ""
        self.console.print(
            f"{self.noun}: {len(self.cells)} cells, {len(self.cells) - len(pending)} already "
            f"stored{left}"
        )
        self.progress.start()
        self.done = {c.key for c in self.cells if c.key in done}
        self.task = self.progress.add_task(
            "", total=total, cells=len(self.cells), done=len(self.done), running=""
        )
        self._describe()

    def _describe(self) -> None:
        if self.active:
            labels = list(self.active.values())
            text = labels[0] + (f" (+{len(labels) - 1} more)" if len(labels) > 1 else "")
        else:
            nxt = next((c for c in self.cells if c.key not in self.done), None)
            text = nxt.label if nxt else "report"
        running = f"{len(self.active)} running" if len(self.active) > 1 else ""
        self.progress.update(self.task, description=text, running=running)

    def running(self, cell: Any) -> None:
        """A cell started (on any worker)."""
        self.active[cell.key] = cell.label
        self._describe()

    def advance(self, cell: Any) -> None:
        """A cell's result is stored."""
        self.active.pop(cell.key, None)
        if cell.key not in self.done:
            self.done.add(cell.key)
            self.progress.update(self.task, advance=self._weight(cell), done=len(self.done))
        self._describe()

    def failed(self, cell: Any) -> None:
        """A cell kept failing (reported at the end); it no longer runs."""
        self.active.pop(cell.key, None)
        self._describe()

    def stop(self) -> None:
        self.progress.stop()


AuditProgress = CellProgress  # the name the audit command used first
