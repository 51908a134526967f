"""Provenance and safe writing: versions, stable hashes, atomic files.

Every result splitleak writes goes through these helpers, so that a killed process never
leaves a file that looks complete and every number carries the versions that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    from splitleak import __version__

    return {
        "splitleak": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }


def stable_hash(obj: Any, *, length: int = 16) -> str:
    """A hash of a JSON-serialisable object that does not depend on key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it into place only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield Path(tmp)
        # On disk before the rename: after a power loss the name holds the old file or the
        # whole new one, never an empty one (a resumable run trusts what it finds).
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(dest: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. NaN is refused (it is not valid JSON)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str, allow_nan=False)
    with atomic_path(dest) as tmp:
        tmp.write_text(text + "\n")


def write_text(dest: Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())
