"""Run directories: one directory per run, written atomically, read back by reports.

Layout::

    <run>/config.json     resolved configuration
    <run>/metrics.json    summary (mean ± 95 % CI), per-image values, timings, queries
    <run>/provenance.json seed, versions, checkpoint, data fingerprints
    <run>/grid.png        reference row over reconstruction row

The directory is assembled under a temporary name and renamed into place, so a killed
process never leaves a run directory that looks complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
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
