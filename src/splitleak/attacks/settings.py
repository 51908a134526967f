"""Per-profile, per-split attack settings, stored as data in ``presets/*.toml``."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

from splitleak.errors import unknown_name


@cache
def _load(attack: str) -> dict[str, Any]:
    text = resources.files("splitleak.attacks.presets").joinpath(f"{attack}.toml").read_text()
    return tomllib.loads(text)


def profiles(attack: str = "whitebox") -> list[str]:
    """Names of the settings profiles shipped for ``attack``."""
    return list(_load(attack))


def profile_description(profile: str, attack: str = "whitebox") -> str:
    return str(_table(attack, profile).get("description", ""))


def _table(attack: str, profile: str) -> dict[str, Any]:
    table = _load(attack)
    if profile not in table:
        raise unknown_name(f"{attack} profile", profile, list(table))
    return table[profile]


def resolve(
    profile: str, *, architecture: str, split: str, attack: str = "whitebox"
) -> dict[str, Any]:
    """Hyperparameters for ``attack`` under ``profile`` at ``architecture``'s ``split`` point."""
    table = _table(attack, profile)
    settings = dict(table.get("defaults", {}))
    settings.update(table.get(architecture, {}).get(split, {}))
    return settings
