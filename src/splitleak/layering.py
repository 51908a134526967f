"""Layered configuration, resolved in one place.

defaults (the pydantic models) < profile presets (inside the attack's settings) <
``--config FILE`` (TOML or JSON, e.g. a run's saved ``config.json``) < ``--set
dotted.key=value`` < explicit command-line flags. The result is one strict
:class:`~splitleak.config.AttackConfig`: unknown keys are errors that list the valid ones.

``--set`` keys are paths into the configuration (``victim.train.epochs=3``,
``attack_epochs=5``); a key that is not a configuration field is an attack hyperparameter
(``steps=2000``, ``training.lr=1e-4``) and is checked against the attack's typed spec.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from splitleak.config import AttackConfig
from splitleak.errors import SplitleakError


def read_config_file(path: Path) -> dict[str, Any]:
    """A configuration file as a dict (``.toml`` or ``.json``), with one-line errors."""
    if not path.is_file():
        raise SplitleakError(f"config file {path} not found")
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise SplitleakError(f"config file {path} is not valid {path.suffix[1:]}: {err}") from None
    if not isinstance(data, dict):
        raise SplitleakError(f"config file {path} must hold a table of settings")
    return data


def parse_value(text: str) -> Any:
    """``--set`` values: JSON where it parses (numbers, true/false, lists), else the string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in {"nan", "inf", "+inf", "-inf", "infinity", "-infinity"}:
            return float(lowered.replace("infinity", "inf"))
        return text
    return value


def parse_sets(items: list[str], model: type[BaseModel] = AttackConfig) -> dict[str, Any]:
    """``["a.b=1", "steps=5"]`` → a nested dict; non-field keys go under ``overrides``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SplitleakError(f"--set expects KEY=VALUE, got {item!r}")
        path = key.split(".")
        if path[0] not in model.model_fields:
            path = ["overrides", *path]
        value = parse_value(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise SplitleakError(f"--set {item}: expected a finite number for {key}")
        _put(out, path, value, item)
    return out


def _put(tree: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SplitleakError(f"--set {item}: {part} is a value, not a table")
        node = child
    node[path[-1]] = value


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, any other value of ``overlay`` replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flags_tree(flags: dict[str, Any]) -> dict[str, Any]:
    """``{"victim.model": "x", "split": None}`` → nested, skipping flags not given (None)."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is not None:
            _put(out, key.split("."), value, key)
    return out


def resolve_attack_config(
    *,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> AttackConfig:
    """The one place an :class:`AttackConfig` is assembled from its layers."""
    layers: dict[str, Any] = {}
    if config_file is not None:
        layers = merge(layers, read_config_file(config_file))
    layers = merge(layers, parse_sets(sets or []))
    layers = merge(layers, flags_tree(flags or {}))
    return validate_config(AttackConfig, layers, source=str(config_file or "the command line"))


def validate_config(model: type[BaseModel], data: dict[str, Any], *, source: str) -> Any:
    """Validate ``data`` against ``model`` with a one-line error naming the key."""
    _refuse_non_finite(data, source)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            parent = _model_at(model, first["loc"][:-1])
            valid = ", ".join(parent.model_fields) if parent else "see --help"
            raise SplitleakError(f"{source}: unknown setting {key!r}; valid: {valid}") from None
        raise SplitleakError(
            f"{source}: invalid {key} = {first.get('input')!r}: {first['msg']}"
        ) from None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = getattr(field, "annotation", None) if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return model


def _refuse_non_finite(data: Any, source: str, path: str = "") -> None:
    # NaN and inf are never meaningful settings; say which key held one.
    if isinstance(data, dict):
        for key, value in data.items():
            _refuse_non_finite(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(data, float) and not math.isfinite(data):
        raise SplitleakError(f"{source}: invalid {path} = {data}: expected a finite number")
