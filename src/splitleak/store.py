"""A result store: one record per finished cell, written the moment the cell finishes.

Why files and not a database: a cell is written as ``<key>.json`` (and its
reconstructions as ``<key>.safetensors``) through a temporary file and an atomic rename,
so a killed process loses at most the cell in progress and never leaves a half-written
record; records are plain JSON that a person can read, diff and copy; and two audits never
contend for a lock. The key hashes the cell's full configuration, so rerunning the same
grid finds every finished cell and computes only the missing ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from splitleak.errors import SplitleakError
from splitleak.records import atomic_path, stable_hash, write_json


def cell_key(kind: str, config: dict[str, Any]) -> str:
    """A stable identifier of a cell: its kind and the hash of its configuration."""
    return f"{kind}-{stable_hash(config, length=20)}"


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
            self._memory[key] = (record, tensors)
            return
        if tensors:
            with atomic_path(self._path(key, ".safetensors")) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        write_json(self._path(key, ".json"), {**record, "key": key})

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
