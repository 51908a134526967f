"""Edge-side defenses: noise, dropout, DP, learned noise, fine-tuning, NoPeek; deployment."""

from __future__ import annotations

from splitleak.defenses.base import DefendedEdge, Defense, Location, describe
from splitleak.defenses.dropout import Dropout
from splitleak.defenses.noise import GaussianNoise, LaplaceNoise
from splitleak.errors import SplitleakError, unknown_name

FAMILIES: dict[str, type] = {"gaussian": GaussianNoise, "laplace": LaplaceNoise, "dropout": Dropout}


def make_defense(
    family: str,
    level: float,
    *,
    location: Location = "features",
    relative: bool = False,
    rescale: bool = False,
) -> Defense:
    """Build a defense by family name (``gaussian``, ``laplace``, ``dropout``)."""
    if family not in FAMILIES:
        raise unknown_name("defense", family, list(FAMILIES))
    if family == "dropout":
        if not 0 <= level < 1:
            raise SplitleakError(f"dropout rate must be in [0, 1), got {level:g}")
        return Dropout(level, location=location, rescale=rescale)
    if level < 0:
        raise SplitleakError(f"{family} noise level must be >= 0, got {level:g}")
    noise: Defense = FAMILIES[family](level, location=location, relative=relative)
    return noise


def parse_defense(text: str) -> Defense:
    """Parse ``family:location:level[:flag[=value]...]``, e.g. ``dropout:features:0.5``.

    Families and their flags: :mod:`splitleak.defenses.specs` (and docs/defenses.md).
    """
    from splitleak.defenses.specs import FAMILY_NAMES, SYNTAX, build_defense

    parts = text.split(":")
    if len(parts) < 3 or parts[1] not in ("input", "features"):
        raise unknown_name("defense spec", text, [SYNTAX])
    if parts[0] not in FAMILY_NAMES:
        raise unknown_name("defense", parts[0], list(FAMILY_NAMES))
    try:
        level = float(parts[2])
    except ValueError:
        raise unknown_name("defense level", parts[2], ["a number"]) from None
    return build_defense(parts[0], parts[1], level, parts[3:])


__all__ = [
    "FAMILIES",
    "DefendedEdge",
    "Defense",
    "Dropout",
    "GaussianNoise",
    "LaplaceNoise",
    "Location",
    "describe",
    "make_defense",
    "parse_defense",
]
