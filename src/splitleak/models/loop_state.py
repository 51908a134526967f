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

import copy
import json
import math
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


class DivergedError(RuntimeError):
    """A training loop's loss stopped being a finite number."""


def check_finite(loss: float, *, epoch: int, desc: str) -> None:
    """Raise :class:`DivergedError` for a NaN or infinite epoch loss, before it is saved.

    A state holding a diverged epoch would be resumed by every later run, each failing
    again one epoch on; a loop stops at the first non-finite loss instead.
    """
    if not math.isfinite(loss):
        raise DivergedError(
            f"{desc}: the training loss became {loss} at epoch {epoch + 1}; the run diverged "
            "(try a lower learning rate or fp32 precision)"
        )


def _identity(model: nn.Module, settings: dict[str, Any]) -> dict[str, Any]:
    # The device type belongs to a loop's identity: a fit started on the CPU is not finished
    # on a GPU (the random streams of a defended edge differ per device).
    device = next((p.device.type for p in model.parameters()), "cpu")
    return json.loads(json.dumps({**settings, "device": device}))


def _random_streams(model: nn.Module) -> dict[str, Any]:
    # Submodules with random streams of their own (a defended edge's noise) expose
    # random_state() / set_random_state(); a resumed loop must continue their draws too.
    return {
        name: m
        for name, m in model.named_modules()
        if callable(getattr(m, "random_state", None))
        and callable(getattr(m, "set_random_state", None))
    }


def save_loop_state(
    directory: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    state: LoopState,
    settings: dict[str, Any],
) -> None:
    """Write the loop's state after an epoch; ``settings`` identify the loop (checked on load)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, entries in opt_state["state"].items():
        for key, value in entries.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["generator"] = generator.get_state()
    for name, module in _random_streams(model).items():
        for key, value in module.random_state().items():
            tensors[f"rng/{name}/{key}"] = value
    meta = {
        "epoch": state.epoch,
        "history": state.history,
        "test_history": state.test_history,
        "epoch_seconds": state.epoch_seconds,
        "param_groups": opt_state["param_groups"],
        "scheduler": sched.state_dict(),
        "config": _identity(model, settings),
        "weights_sha": stable_hash(sorted((k, v.shape) for k, v in tensors.items())),
    }
    directory.mkdir(parents=True, exist_ok=True)
    # One file holds the whole state (the JSON rides in the safetensors header), so a run
    # killed while saving leaves either the previous epoch's state or this one, never a mix;
    # state.json beside it is a readable copy.
    with atomic_path(directory / STATE_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    write_json(directory / STATE_META, meta)


def _read(
    directory: Path, identity: dict[str, Any], steps_per_epoch: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The saved metadata and tensors, or None where they are missing, damaged or foreign."""
    path = directory / STATE_WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(META_KEY)
        # States written before the header held the JSON have it only in state.json.
        meta = json.loads(header) if header else read_json(directory / STATE_META)
        tensors = load_file(str(path))
    except (OSError, ValueError, SafetensorError):
        return None
    if meta.get("weights_sha") != stable_hash(sorted((k, v.shape) for k, v in tensors.items())):
        return None
    # Another loop's state (other settings, another device, or settings of another version
    # with keys added or dropped) is not resumed.
    if meta.get("config") != identity:
        return None
    # The optimiser's step count must match the epoch (it would not where an older-format
    # state.json lags its weights file by an epoch).
    if steps_per_epoch is not None:
        steps = {int(v) for k, v in tensors.items() if k.startswith("opt.") and k.endswith(".step")}
        if steps and steps != {int(meta.get("epoch", -1)) * steps_per_epoch}:
            return None
    return meta, tensors


def load_loop_state(
    directory: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    generator: torch.Generator,
    settings: dict[str, Any],
    *,
    steps_per_epoch: int | None = None,
) -> LoopState | None:
    """Restore a saved loop state; None (start afresh, nothing changed) if there is none.

    A state is not restored when it is unreadable, when it was saved with other
    ``settings`` (they must have the same keys and values) or on another device type, or
    when ``steps_per_epoch`` (optimiser steps per epoch) disagrees with its epoch count.
    ``model`` and ``opt`` must already be on the loop's device: the weights are copied into
    the existing parameters and the optimiser's moments are made like their parameters
    (device, dtype, memory layout), as a fresh run makes them.
    """
    found = _read(directory, _identity(model, settings), steps_per_epoch)
    if found is None:
        return None
    meta, tensors = found
    streams = _random_streams(model)
    before = (
        {k: v.clone() for k, v in model.state_dict().items()},
        copy.deepcopy(opt.state_dict()),
        sched.state_dict(),
        generator.get_state(),
        {name: m.random_state() for name, m in streams.items()},
    )
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = value
        opt.load_state_dict(opt_state)
        sched.load_state_dict(meta["scheduler"])
        generator.set_state(tensors["generator"])
        for name, module in streams.items():
            prefix = f"rng/{name}/"
            module.set_random_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        state = LoopState(
            epoch=int(meta["epoch"]),
            history=list(meta["history"]),
            test_history=list(meta["test_history"]),
            epoch_seconds=list(meta["epoch_seconds"]),
        )
    except (ValueError, KeyError, RuntimeError, TypeError):
        weights, opt_before, sched_before, gen_before, rng_before = before
        model.load_state_dict(weights)
        opt.load_state_dict(opt_before)
        sched.load_state_dict(sched_before)
        generator.set_state(gen_before)
        for name, module in streams.items():
            module.set_random_state(rng_before[name])
        return None
    for group in opt.param_groups:
        for param in group["params"]:
            for key, value in opt.state.get(param, {}).items():
                if torch.is_tensor(value) and key != "step" and value.shape == param.shape:
                    like = torch.empty_like(param, memory_format=torch.preserve_format)
                    opt.state[param][key] = like.copy_(value)
    return state
