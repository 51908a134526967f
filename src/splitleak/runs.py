"""Run directories: one directory per run, written atomically, read back by reports.

Layout::

    <run>/config.json     resolved configuration
    <run>/metrics.json    summary (mean ± 95 % CI), per-image values, timings, queries
    <run>/provenance.json seed, versions, checkpoint, data fingerprints
    <run>/grid.png        reference row over reconstruction row

The directory is assembled under a temporary name and renamed into place, so a killed
process never leaves a run directory that looks complete.

:func:`attack_run` makes the ``attack`` command a cell like any other: with a store, the
run is read from it when the same configuration was computed before (by an audit, a study
or a benchmark), and stored there otherwise; the run directory is written from the record.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from splitleak.errors import SplitleakError
from splitleak.records import write_json


def default_run_dir(root: Path, *parts: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return root / "-".join([*parts, stamp])


def write_run(
    dest: Path, files: dict[str, Any], *, extra: Callable[[Path], None] | None = None
) -> Path:
    """Write JSON ``files`` (name -> object) and whatever ``extra`` writes, then publish ``dest``.

    Raises:
        SplitleakError: ``dest`` already exists (runs are never overwritten).
    """
    if dest.exists():
        raise SplitleakError(f"run directory {dest} already exists; choose another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name, obj in files.items():
            write_json(tmp / name, obj)
        if extra is not None:
            extra(tmp)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


@dataclass(frozen=True)
class StoredRun:
    """An attack run read back from its cell record (what the ``attack`` command prints)."""

    config: Any
    summary: dict[str, Any]
    per_image: dict[str, list[float]]
    timings: dict[str, float]
    queries_used: int
    provenance: dict[str, Any]
    key: str
    directory: Path | None = None


def attack_run(
    cfg: Any,
    *,
    victim: Any,
    store: Any = None,
    out: Path | None = None,
    executor: Any = None,
    progress: bool = True,
) -> StoredRun:
    """One attack as a cell: reuse it from ``store`` (or compute and store it), then write
    its run directory at ``out`` from the stored record alone.

    ``store`` None keeps the cell in memory only (a plain ``attack`` without ``--store``).
    """
    from splitleak.cells import attack_spec
    from splitleak.executor import submit_cells
    from splitleak.store import ResultStore

    store = store if store is not None else ResultStore(None)
    spec = attack_spec(cfg, victim)
    submit_cells([spec], store, victims=[victim], executor=executor, progress=progress).check()
    record = store.get(spec.key)
    run = StoredRun(
        config=cfg,
        summary=record["summary"],
        per_image=record["per_image"],
        timings=record["timings"],
        queries_used=record["queries_used"],
        provenance=record["provenance"],
        key=spec.key,
    )
    if out is None:
        return run
    directory = write_cell_run(out, record, store.tensors(spec.key))
    return StoredRun(**{**run.__dict__, "directory": directory})


def write_cell_run(dest: Path, record: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """A run directory (config, metrics, provenance, grid) from a stored attack cell."""
    from splitleak.report.grids import save_image_grid

    metrics = {
        "summary": record["summary"],
        "per_image": record["per_image"],
        "timings": record["timings"],
        "queries_used": record["queries_used"],
        "cell": record.get("key"),
    }
    config = record["config"]

    def grid(tmp: Path) -> None:
        save_image_grid(
            [
                ("input", tensors["x"].float() / 255),
                (f"{config['attack']}\n{config['split']}", tensors["x_hat"].float() / 255),
            ],
            tmp / "grid.png",
            captions=[[], [f"{p:.1f} dB" for p in record["per_image"]["psnr"]]],
        )

    return write_run(
        dest,
        {"config.json": config, "metrics.json": metrics, "provenance.json": record["provenance"]},
        extra=grid,
    )
