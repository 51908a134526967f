"""Build the attack a configuration names, with its profile's typed settings for the split.

Settings are layered: the spec's defaults < the profile's preset for the architecture's
split point < the configuration's ``overrides`` (``--set``, ``--config``). Each layer is
validated against the attack's typed spec (:mod:`splitleak.attacks.specs`), so a bad preset
is blamed on the preset and a bad override on the override.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from splitleak.attacks import settings as presets
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.hybrid import HybridInversion
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.model_reconstruction import ModelReconstruction
from splitleak.attacks.registry import ATTACKS, get_attack
from splitleak.attacks.shadow import ShadowModelInversion
from splitleak.attacks.shadow_nets import build_shadow
from splitleak.attacks.specs import InversionSpec, Spec, TrainingSpec, validate_spec
from splitleak.attacks.tuning import TunedAttack, TuningSpec
from splitleak.attacks.unsplit import DataFreeSpec, UnSplit
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.compute import CPU_FP32, Compute
from splitleak.errors import SplitleakError

if TYPE_CHECKING:
    from splitleak.config import AttackConfig

# Which access each attack's threat model grants (SPEC §2), from the registry.
THREAT_MODELS: dict[str, str] = {name: entry.threat_model for name, entry in ATTACKS.items()}
SPECS: dict[str, type[Spec]] = {
    "inversion": InversionSpec,
    "training": TrainingSpec,
    "tuning": TuningSpec,
    "data_free": DataFreeSpec,
}
# The presets file of each section other than ``inversion`` (whose file is the attack's own).
_SECTION_TABLES = {"training": "training", "tuning": "tuning", "data_free": "unsplit"}


def attack_settings(cfg: AttackConfig, *, architecture: str) -> dict[str, dict[str, Any]]:
    """The validated settings of every section the attack takes (``inversion``/``training``).

    Raises:
        SplitleakError: an unknown or invalid key, naming the key, the value and the rule.
    """
    entry = get_attack(cfg.attack)
    flat = {k: v for k, v in cfg.overrides.items() if k not in SPECS}
    nested = {k: v for k, v in cfg.overrides.items() if k in SPECS}
    for section, value in nested.items():
        if section not in entry.sections:
            raise SplitleakError(
                f"--set {section}.*: the {cfg.attack} attack has no {section} settings; "
                f"it takes: {', '.join(entry.sections)}"
            )
        if not isinstance(value, dict):
            raise SplitleakError(f"--set {section}: expected {section}.KEY=VALUE, got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for i, section in enumerate(entry.sections):
        base = _preset(cfg, entry.inversion_table, section, architecture)
        validate_spec(SPECS[section], base, where=f"profile {cfg.profile!r} ({section} preset)")
        given = {**(flat if i == 0 else {}), **nested.get(section, {})}
        where = f"--set for the {cfg.attack} attack ({section} settings)"
        spec = validate_spec(SPECS[section], {**base, **given}, where=where)
        out[section] = spec.model_dump()
    return out


def applicable_overrides(overrides: dict[str, Any], attack: str) -> dict[str, Any]:
    """The part of a study's shared ``overrides`` that applies to ``attack``.

    A study runs several attacks from one base configuration; ``steps=2000`` then means
    "for the attacks that invert", not "for the inverse network too". Bare keys are kept
    when they are a field of the attack's primary section, sections when it has them.
    Use :func:`check_study_overrides` to refuse keys that no attack of the study takes.
    """
    entry = get_attack(attack)
    primary = SPECS[entry.sections[0]].model_fields
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in SPECS:
            if key in entry.sections:
                out[key] = value
        elif key in primary:
            out[key] = value
    return out


def for_attack(base: AttackConfig, attack: str, **update: Any) -> AttackConfig:
    """``base`` for another attack, keeping only the overrides that attack takes."""
    overrides = update.pop("overrides", base.overrides)
    return base.model_copy(
        update={"attack": attack, "overrides": applicable_overrides(overrides, attack), **update}
    )


def check_study_overrides(overrides: dict[str, Any], attacks: list[str]) -> None:
    """Every override must be a setting of at least one of the study's attacks."""
    for key, value in overrides.items():
        takers = [a for a in attacks if key in applicable_overrides({key: value}, a)]
        if not takers:
            raise SplitleakError(
                f"--set {key}: none of the attacks {', '.join(attacks)} has this setting"
            )


def _preset(
    cfg: AttackConfig, table: str | None, section: str, architecture: str
) -> dict[str, Any]:
    name = table if section == "inversion" else _SECTION_TABLES[section]
    assert name is not None
    if section == "inversion" and cfg.attack != "whitebox" and cfg.surrogate_inversion:
        name = cfg.surrogate_inversion
    return presets.resolve(cfg.profile, architecture=architecture, split=cfg.split, attack=name)


def inversion_settings(cfg: AttackConfig, *, architecture: str) -> dict[str, Any]:
    """rMLE settings alone (kept for callers that only estimate costs)."""
    return attack_settings(cfg, architecture=architecture).get("inversion", {})


def build_attack(
    cfg: AttackConfig,
    *,
    architecture: str,
    structure: Callable[[], nn.Module],
    image_shape: tuple[int, int, int],
    feature_shape: tuple[int, ...],
    cache: ModuleCache | None = None,
    progress: bool = False,
    compute: Compute = CPU_FP32,
) -> Any:
    """Instantiate the configured attack (hyperparameters only; fitting comes later).

    Args:
        structure: builds the victim's architecture with fresh weights — used only for
            ``same`` shadows, whose threat model grants knowledge of f1's structure.
        compute: where it runs; rMLE always runs in fp32 (see :meth:`Compute.exact`).

    A positive ``tuning.budget`` (the ``tuned`` profile) wraps the attack in a
    :class:`~splitleak.attacks.tuning.TunedAttack`, which searches its settings on the
    attacker's own data inside ``fit``.
    """
    settings = attack_settings(cfg, architecture=architecture)
    kwargs: dict[str, Any] = {
        "architecture": architecture,
        "structure": structure,
        "image_shape": image_shape,
        "feature_shape": feature_shape,
        "cache": cache,
        "progress": progress,
        "compute": compute,
    }
    tuning = TuningSpec(**settings.get("tuning", {}))
    if not tuning.budget:
        return _build_plain(cfg, settings, **kwargs)
    search: Literal["inversion", "training"] = (
        "training" if "inversion" not in settings else "inversion"
    )

    def build(change: dict[str, Any]) -> Any:
        # A candidate of the search: the profile's settings with ``change`` applied.
        if search == "inversion":
            return _build_plain(cfg, settings, **kwargs)
        training = {**settings["training"]}
        if "training_lr" in change:
            training["lr"] = change["training_lr"]
        variant = cfg.model_copy(update={"decoder": change.get("decoder", cfg.decoder)})
        return _build_plain(variant, {**settings, "training": training}, **kwargs)

    base = (
        settings["inversion"]
        if search == "inversion"
        else {**settings["training"], "decoder": cfg.decoder}
    )
    return TunedAttack(
        build=build,
        search=search,
        tuning=tuning,
        base=base,
        hold_out=cfg.attack != "whitebox",
        name=cfg.attack,
        seed=cfg.seed,
    )


def _build_plain(
    cfg: AttackConfig,
    settings: dict[str, dict[str, Any]],
    *,
    architecture: str,
    structure: Callable[[], nn.Module],
    image_shape: tuple[int, int, int],
    feature_shape: tuple[int, ...],
    cache: ModuleCache | None,
    progress: bool,
    compute: Compute,
) -> Any:
    if cfg.attack == "whitebox":
        return WhiteBoxInversion(**settings["inversion"], progress=progress, compute=compute)
    if cfg.attack == "unsplit":
        return UnSplit(**settings["data_free"], seed=cfg.seed, progress=progress, compute=compute)
    training = dict(settings["training"])
    batch = training.pop("batch_size")
    explicit_batch = "attack_batch_size" in cfg.model_fields_set
    common: dict[str, Any] = {
        **training,
        "epochs": cfg.attack_epochs,
        "batch_size": cfg.attack_batch_size if explicit_batch or batch is None else batch,
        "cache": cache,
        "seed": cfg.seed,
        "progress": progress,
        "compute": compute,
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
    if cfg.attack in ("hybrid-whitebox", "hybrid-blackbox"):
        runtime = ("cache", "seed", "progress", "compute")
        training_only = {k: v for k, v in common.items() if k not in runtime}
        return HybridInversion(
            inversion=settings["inversion"],
            decoder=cfg.decoder,
            architecture=architecture,
            split=cfg.split,
            shadow=shadow if cfg.attack == "hybrid-blackbox" else None,
            shadow_kind=cfg.shadow_arch,
            training=training_only,
            cache=cache,
            seed=cfg.seed,
            progress=progress,
            compute=compute,
        )
    cls = ModelReconstruction if cfg.attack == "model-reconstruction" else ShadowModelInversion
    return cls(
        shadow=shadow, shadow_kind=cfg.shadow_arch, inversion=settings["inversion"], **common
    )
