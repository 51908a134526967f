"""Image grids assembled from stored cells: a reference row, then one row per cell."""

from __future__ import annotations

from pathlib import Path

from splitleak.report.grids import save_image_grid
from splitleak.store import ResultStore


def grid_from_cells(store: ResultStore, rows: list[tuple[str, str]], dest: Path) -> Path:
    """Write a grid: the first cell's inputs, then each ``(label, key)`` cell's reconstructions."""
    images = [(label, store.tensors(key)) for label, key in rows]
    reference = images[0][1]["x"].float() / 255
    grid = [("input", reference)] + [(label, t["x_hat"].float() / 255) for label, t in images]
    captions: list[list[str]] = [[]] + [
        [f"{p:.1f}" for p in store.get(key)["per_image"]["psnr"]] for _, key in rows
    ]
    return save_image_grid(grid, dest, captions=captions)
