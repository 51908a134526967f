"""The audit's progress display: grid size, current cell, and time left from estimates."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class AuditProgress:
    """A rich progress bar weighted by each cell's estimated cost.

    The bar advances by a cell's estimate when it finishes, so the time-remaining column
    extrapolates from cost actually done rather than from the number of cells.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[done]}/{task.fields[cells]}[/] cells"),
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

    def start(self, cells: list[Any], *, done: set[str]) -> None:
        self.cells = cells
        pending = [c for c in cells if c.key not in done]
        total = sum(max(c.estimate_s, 0.01) for c in pending)
        self.console.print(
            f"audit grid: {len(cells)} cells, {len(cells) - len(pending)} already "
            f"stored, about {total / 60:.1f} min of work left (estimate)"
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "", total=total, cells=len(cells), done=len(cells) - len(pending)
        )
        self.done = set(done)
        self._describe_next()

    def _describe_next(self) -> None:
        nxt = next((c for c in self.cells if c.key not in self.done), None)
        self.progress.update(self.task, description=nxt.label if nxt else "report")

    def advance(self, cell: Any) -> None:
        if cell.key not in self.done:
            self.done.add(cell.key)
            self.progress.update(self.task, advance=max(cell.estimate_s, 0.01), done=len(self.done))
        self._describe_next()

    def stop(self) -> None:
        self.progress.stop()
