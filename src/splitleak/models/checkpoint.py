"""Checkpoints: weights as safetensors plus a JSON of metadata, never pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from splitleak.errors import CheckpointError
from splitleak.records import atomic_path, write_json

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


def save_checkpoint(directory: Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (weights first).

    The metadata is written last, so a directory with ``model.json`` is always complete.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / META_FILE, meta)
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """Read a checkpoint's metadata, with a one-line error if it is missing or corrupt."""
    path = directory / META_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {directory} ({META_FILE} missing); train one first"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint metadata {path} is corrupt ({err}); delete it") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata {path} is not a JSON object; delete it")
    return meta


def load_checkpoint(directory: Path, model: nn.Module, *, architecture: str) -> dict[str, Any]:
    """Load weights into ``model`` in place and return the metadata.

    Raises:
        CheckpointError: missing or corrupt files, a different architecture, or weights
            whose names or shapes do not fit ``model``.
    """
    meta = read_meta(directory)
    if meta.get("architecture") != architecture:
        raise CheckpointError(
            f"checkpoint {directory} is for architecture {meta.get('architecture')!r}, "
            f"not {architecture!r}; pass the matching --model or retrain"
        )
    load_weights(directory / WEIGHTS_FILE, model)
    return meta


def load_weights(path: Path, model: nn.Module) -> None:
    """Load a safetensors file into ``model``, checking every name and shape."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read weights {path}: {err}; delete it and retrain") from None
    expected = model.state_dict()
    if set(tensors) != set(expected):
        missing = sorted(set(expected) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(expected))[:3]
        raise CheckpointError(
            f"weights {path} do not fit the model (missing {missing}, unexpected {extra}); "
            "is it a checkpoint of another network?"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"weights {path}: {name} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}; is it a checkpoint of another network?"
            )
    with torch.no_grad():
        model.load_state_dict(tensors)
