"""Build the attack a configuration names, with its profile's settings for the split point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from splitleak.attacks import settings as presets
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.model_reconstruction import ModelReconstruction
from splitleak.attacks.shadow import ShadowModelInversion
from splitleak.attacks.shadow_nets import build_shadow
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


def inversion_settings(cfg: AttackConfig, *, architecture: str, table: str) -> dict[str, Any]:
    """rMLE settings: the profile's preset (``whitebox`` or ``surrogate`` table) + overrides."""
    settings = presets.resolve(
        cfg.profile, architecture=architecture, split=cfg.split, attack=table
    )
    settings.update(cfg.overrides)
    try:
        WhiteBoxInversion(**settings)
    except TypeError as err:
        raise SplitleakError(f"bad inversion setting in --set or profile: {err}") from None
    return settings


def build_attack(
    cfg: AttackConfig,
    *,
    architecture: str,
    structure: Callable[[], nn.Module],
    image_shape: tuple[int, int, int],
    feature_shape: tuple[int, ...],
    cache: ModuleCache | None = None,
    progress: bool = False,
) -> Any:
    """Instantiate the configured attack (hyperparameters only; fitting comes later).

    Args:
        structure: builds the victim's architecture with fresh weights — used only for
            ``same`` shadows, whose threat model grants knowledge of f1's structure.
    """
    if cfg.attack == "whitebox":
        return WhiteBoxInversion(
            **inversion_settings(cfg, architecture=architecture, table="whitebox"),
            progress=progress,
        )
    common: dict[str, Any] = {
        "epochs": cfg.attack_epochs,
        "batch_size": cfg.attack_batch_size,
        "cache": cache,
        "seed": cfg.seed,
        "progress": progress,
    }
    if cfg.attack == "inverse-network":
        return InverseNetwork(
            decoder=cfg.decoder, architecture=architecture, split=cfg.split, **common
        )
    shadow = build_shadow(
        cfg.shadow_arch,
        architecture=architecture,
        split=cfg.split,
        structure=structure,
        image_shape=image_shape,
        feature_shape=feature_shape,
        seed=cfg.seed,
    )
    default_table = "whitebox" if cfg.attack == "model-reconstruction" else "surrogate"
    inversion = inversion_settings(
        cfg, architecture=architecture, table=cfg.surrogate_inversion or default_table
    )
    cls = ModelReconstruction if cfg.attack == "model-reconstruction" else ShadowModelInversion
    return cls(shadow=shadow, shadow_kind=cfg.shadow_arch, inversion=inversion, **common)
