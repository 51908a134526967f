"""A result store: one record per finished cell, written the moment the cell finishes.

Why files and not a database: a cell is written as ``<key>.json`` (and its
reconstructions as ``<key>.safetensors``) through a temporary file and an atomic rename,
so a killed process loses at most the cell in progress and never leaves a half-written
record; records are plain JSON that a person can read, diff and copy; and two audits never
contend for a lock. The key hashes the cell's full configuration, so rerunning the same
grid finds every finished cell and computes only the missing ones.

One store can serve many commands: ``--store DIR`` (or ``SPLITLEAK_STORE``) points an
audit, a study and a benchmark at the same cells, so each reuses what the others computed.
Only the driver of a run writes a store (workers return their results to it); an audit
folder whose cells live in a shared store gets hard links to them (:meth:`ResultStore.link`),
so the folder alone still re-renders its report.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file, save_file

from splitleak.errors import SplitleakError
from splitleak.records import atomic_path, stable_hash, write_json

STORE_ENV = "SPLITLEAK_STORE"


def cell_key(kind: str, config: dict[str, Any]) -> str:
    """A stable identifier of a cell: its kind and the hash of its configuration."""
    return f"{kind}-{stable_hash(config, length=20)}"


def store_dir(explicit: Path | None, default: Path) -> Path:
    """Where a command keeps its cells: ``--store``, else ``$SPLITLEAK_STORE``, else ``default``."""
    env = os.environ.get(STORE_ENV)
    if explicit is None and not env:
        return default
    from splitleak.preflight import check_output_dir

    chosen = explicit if explicit is not None else Path(env or "")
    # A store that is a file, lies under one or cannot be written: one line, before any work.
    check_output_dir(
        chosen, must_not_exist=False, option="--store" if explicit else f"${STORE_ENV}"
    )
    return chosen


class ResultStore:
    """Cells under ``root/cells``; ``None`` root keeps them in memory only."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}
        if root is not None:
            (root / "cells").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / "cells" / f"{key}{suffix}"

    def has(self, key: str) -> bool:
        if self.root is None:
            return key in self._memory
        return self._path(key, ".json").is_file()

    def put(self, key: str, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Store a finished cell: tensors first, the JSON record last (it marks completion)."""
        if self.root is None:
            self._memory[key] = ({**record, "key": key}, tensors)
            return
        if tensors:
            with atomic_path(self._path(key, ".safetensors")) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        write_json(self._path(key, ".json"), {**record, "key": key})

    def put_bytes(self, key: str, record: dict[str, Any], tensors: bytes | None) -> None:
        """Store a finished cell whose tensors arrive already serialised (safetensors bytes).

        This is what a driver does with a worker's result: the bytes are written as they
        came, so every executor stores byte-identical tensor files.
        """
        if self.root is None:
            self._memory[key] = ({**record, "key": key}, dict(load(tensors)) if tensors else {})
            return
        if tensors:
            with atomic_path(self._path(key, ".safetensors")) as tmp:
                tmp.write_bytes(tensors)
        write_json(self._path(key, ".json"), {**record, "key": key})

    def link(self, key: str, other: ResultStore) -> None:
        """Make ``other`` hold this store's cell ``key`` (a hard link, else a copy).

        The tensors go first and the record last, as in :meth:`put`. Nothing is done when
        ``other`` already has the cell or is this very store.
        """
        if other is self or other.has(key):
            return
        if self.root is None or other.root is None:
            other.put(key, self.get(key), self.tensors(key))
            return
        if self.root.resolve() == other.root.resolve():
            return
        for suffix in (".safetensors", ".json"):
            src = self._path(key, suffix)
            if src.is_file():
                _link_or_copy(src, other._path(key, suffix))

    def get(self, key: str) -> dict[str, Any]:
        if self.root is None:
            return self._memory[key][0]
        try:
            return dict(json.loads(self._path(key, ".json").read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SplitleakError(
                f"result record {key} is unreadable ({err}); delete it and rerun"
            ) from None

    def tensors(self, key: str) -> dict[str, torch.Tensor]:
        if self.root is None:
            return self._memory[key][1]
        path = self._path(key, ".safetensors")
        return load_file(str(path)) if path.is_file() else {}

    def keys(self) -> Iterator[str]:
        if self.root is None:
            yield from self._memory
            return
        for path in sorted((self.root / "cells").glob("*.json")):
            yield path.stem


def _link_or_copy(src: Path, dest: Path) -> None:
    """Publish ``src`` at ``dest`` atomically: a hard link where possible, else a copy."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, tmp)
