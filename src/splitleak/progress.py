"""The progress display of a batch of cells: cells done, cells running, and time left.

It counts cells across every worker of an executor: the driver calls :meth:`running` when a
cell starts (on any worker) and :meth:`advance` when its result is stored.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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
