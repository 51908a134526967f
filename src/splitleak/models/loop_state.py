"""The state of an epoch loop on disk, so that a long training run survives an interruption.

After every epoch a loop writes its module's weights, the optimiser's moments, the
scheduler, the random generator and its histories into one safetensors file (written
atomically, the JSON in its header, a readable copy beside it); an identical later run loads
them and continues with the same random stream, so a resumed run ends with the same weights
as an uninterrupted one. Victim training (:func:`~splitleak.models.train.train_classifier`)
and the learned attacks' decoders and shadows (:func:`~splitleak.attacks.fitting.fit_module`)
both use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from splitleak.records import atomic_path, read_json, stable_hash, write_json

STATE_WEIGHTS = "state.safetensors"
STATE_META = "state.json"
META_KEY = "splitleak.loop_state"


@dataclass
class LoopState:
    """Where an epoch loop stands: the epochs finished and what each recorded."""

    epoch: int = 0
    history: list[float] = field(default_factory=list)
    test_history: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def save_loop_state(
    directory: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    state: LoopState,
    settings: dict[str, Any],
) -> None:
    """Write the loop's state after an epoch; ``settings`` are recorded beside it."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, entries in opt_state["state"].items():
        for key, value in entries.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["generator"] = generator.get_state()
    meta = {
        "epoch": state.epoch,
        "history": state.history,
        "test_history": state.test_history,
        "epoch_seconds": state.epoch_seconds,
        "param_groups": opt_state["param_groups"],
        "scheduler": sched.state_dict(),
        "config": settings,
        "weights_sha": stable_hash(sorted((k, v.shape) for k, v in tensors.items())),
    }
    directory.mkdir(parents=True, exist_ok=True)
    # One file holds the whole state (the JSON rides in the safetensors header), so a run
    # killed while saving leaves either the previous epoch's state or this one, never a mix;
    # state.json beside it is a readable copy.
    with atomic_path(directory / STATE_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    write_json(directory / STATE_META, meta)


def load_loop_state(
    directory: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
) -> LoopState | None:
    """Restore a saved loop state; None (start afresh) if there is none or it is unreadable.

    ``model`` and ``opt`` must already be on the loop's device: the weights are copied into
    the existing parameters (keeping their memory layout) and the optimiser's moments are
    moved there.
    """
    try:
        path = directory / STATE_WEIGHTS
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(META_KEY)
        # States written before the header held the JSON have it only in state.json.
        meta = json.loads(header) if header else read_json(directory / STATE_META)
        tensors = load_file(str(path))
        if meta.get("weights_sha") != stable_hash(sorted((k, v.shape) for k, v in tensors.items())):
            return None  # the weights file is from another epoch than the metadata
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = value
        opt.load_state_dict(opt_state)
        sched.load_state_dict(meta["scheduler"])
        generator.set_state(tensors["generator"])
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None
    device = next(model.parameters()).device
    for entries in opt.state.values():
        for key, value in entries.items():
            if torch.is_tensor(value) and key != "step":
                entries[key] = value.to(device)
    return LoopState(
        epoch=int(meta["epoch"]),
        history=list(meta["history"]),
        test_history=list(meta["test_history"]),
        epoch_seconds=list(meta["epoch_seconds"]),
    )
