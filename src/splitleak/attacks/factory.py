"""Build the attack a configuration names, with its profile's settings for the split point."""

from __future__ import annotations

from typing import Any

from splitleak.attacks import settings as presets
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.config import AttackConfig
from splitleak.errors import SplitleakError

# Which access each attack's threat model grants (SPEC §2).
THREAT_MODELS: dict[str, str] = {
    "whitebox": "white-box",
    "inverse-network": "black-box",
    "model-reconstruction": "black-box",
    "shadow": "query-free",
}


def whitebox_settings(cfg: AttackConfig, *, architecture: str) -> dict[str, Any]:
    """The white-box settings: profile preset for this split, then the user's overrides."""
    settings = presets.resolve(cfg.profile, architecture=architecture, split=cfg.split)
    settings.update(cfg.overrides)
    return settings


def build_attack(cfg: AttackConfig, *, architecture: str, progress: bool = False) -> Any:
    """Instantiate the configured attack (hyperparameters only; fitting comes later)."""
    if cfg.attack == "whitebox":
        settings = whitebox_settings(cfg, architecture=architecture)
        try:
            return WhiteBoxInversion(**settings, progress=progress)
        except TypeError as err:
            raise SplitleakError(f"bad white-box setting: {err}") from None
    raise SplitleakError(f"attack {cfg.attack!r} is not implemented yet")
