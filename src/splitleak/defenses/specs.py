"""Defense spec strings: ``family:location:level[:flag[=value]]...`` -> a defense object.

The three original families keep their syntax and objects (``gaussian``, ``laplace``,
``dropout`` with ``relative`` / ``rescale``). Flags may now carry values, and the new
families are reached the same way:

=============  ==========================================================================
family         flags (besides the fine-tuning flags below)
=============  ==========================================================================
gaussian       ``relative``; ``clip=C|median``, ``delta=δ`` (clipped: reports an ε)
laplace        ``relative``; ``clip=C|median`` (clipped: reports an ε)
dropout        ``rescale``
dp-gaussian    level = ε; ``clip=C|median`` (default median), ``delta=δ`` (1e-5),
               ``calib=analytic|classic``
dp-laplace     level = ε; ``clip=C|median`` (default median)
learned        level = σ of the reference; ``weight``, ``epochs``, ``lr``, ``images``, ``seed``
nopeek         level = alpha; ``epochs``, ``lr``, ``images``, ``seed``, ``scratch``
=============  ==========================================================================

Every family but nopeek also takes ``finetune`` or ``finetune=EPOCHS``, ``ft_lr=η`` and
``ft_images=N``: the cloud part is then fine-tuned under the defenses (see
:mod:`splitleak.defenses.finetune`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from splitleak.defenses.base import Defense
from splitleak.defenses.dp import ClippedNoise
from splitleak.defenses.dropout import Dropout
from splitleak.defenses.finetune import FineTuned
from splitleak.defenses.learned_noise import LearnedNoise
from splitleak.defenses.noise import GaussianNoise, LaplaceNoise
from splitleak.defenses.nopeek import NoPeek
from splitleak.errors import SplitleakError, unknown_name

BARE_FLAGS = {"relative", "rescale", "scratch", "finetune"}
_FINETUNE = {"finetune", "ft_lr", "ft_images"}
FLAGS: dict[str, set[str]] = {
    "gaussian": {"relative", "clip", "delta", *_FINETUNE},
    "laplace": {"relative", "clip", *_FINETUNE},
    "dropout": {"rescale", *_FINETUNE},
    "dp-gaussian": {"clip", "delta", "calib", *_FINETUNE},
    "dp-laplace": {"clip", *_FINETUNE},
    "learned": {"weight", "epochs", "lr", "images", "seed", *_FINETUNE},
    "nopeek": {"epochs", "lr", "images", "seed", "scratch"},
}
FAMILY_NAMES = tuple(FLAGS)
SYNTAX = "family:input|features:level[:flag[=value]...]"


def parse_flags(family: str, items: list[str]) -> dict[str, str | None]:
    """``["rescale", "clip=5"]`` -> ``{"rescale": None, "clip": "5"}``, checked per family."""
    flags: dict[str, str | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name not in FLAGS[family]:
            raise unknown_name(f"{family} flag", name, sorted(FLAGS[family]))
        if not sep and name not in BARE_FLAGS:
            raise SplitleakError(f"{family} flag {name!r} needs a value, e.g. {name}=1")
        if sep and name in BARE_FLAGS - {"finetune"}:
            raise SplitleakError(f"{family} flag {name!r} takes no value; write :{name}")
        flags[name] = value if sep else None
    return flags


def _number(flags: dict[str, str | None], name: str, cast: Callable[[str], Any] = float) -> Any:
    text = flags.get(name)
    try:
        return None if text is None else cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise SplitleakError(f"defense flag {name}={text!r}: expected {kind}") from None


def _clip(flags: dict[str, str | None], *, default: str | None) -> float | str | None:
    text = flags.get("clip", default)
    if text is None or text == "median":
        return text
    return _number({"clip": text}, "clip")


def _options(
    flags: dict[str, str | None], names: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    return {key: _number(flags, key, cast) for key, cast in names.items() if key in flags}


def build_defense(family: str, location: str, level: float, items: list[str]) -> Defense:
    """Build the defense a parsed spec names (``family`` and ``location`` already checked)."""
    if not math.isfinite(level):
        raise SplitleakError(f"{family} level must be a finite number, got {level}")
    flags = parse_flags(family, items)
    inner = _build_inner(family, location, level, flags)
    if "finetune" not in flags:
        if flags.keys() & {"ft_lr", "ft_images"}:
            raise SplitleakError("ft_lr and ft_images need the finetune flag")
        return inner
    epochs = _number(flags, "finetune", int) if flags["finetune"] is not None else 2
    extra = _options(flags, {"ft_lr": float, "ft_images": int})
    return FineTuned(
        inner, epochs=epochs, lr=extra.get("ft_lr", 5e-4), images=extra.get("ft_images")
    )


def _build_inner(family: str, location: Any, level: float, flags: dict[str, str | None]) -> Defense:
    if family in ("dp-gaussian", "dp-laplace"):
        return _clipped(family[3:], location, level, flags, calibrated=True)
    if family == "gaussian" and "delta" in flags and "clip" not in flags:
        raise SplitleakError("gaussian: delta only means something with clip=C (an epsilon)")
    if family in ("gaussian", "laplace") and "clip" in flags:
        if "relative" in flags:
            raise SplitleakError(f"{family}: clip and relative exclude each other")
        return _clipped(family, location, level, flags, calibrated=False)
    if family == "learned":
        names = {"weight": float, "epochs": int, "lr": float, "images": int, "seed": int}
        return LearnedNoise(level, location=location, **_options(flags, names))
    if family == "nopeek":
        names = {"epochs": int, "lr": float, "images": int, "seed": int}
        return NoPeek(
            level, location=location, scratch="scratch" in flags, **_options(flags, names)
        )
    if family == "dropout":
        if not 0 <= level < 1:
            raise SplitleakError(f"dropout rate must be in [0, 1), got {level:g}")
        return Dropout(level, location=location, rescale="rescale" in flags)
    if level < 0:
        raise SplitleakError(f"{family} noise level must be >= 0, got {level:g}")
    cls = GaussianNoise if family == "gaussian" else LaplaceNoise
    noise: Defense = cls(level, location=location, relative="relative" in flags)
    return noise


def _clipped(
    mechanism: str, location: Any, level: float, flags: dict[str, str | None], *, calibrated: bool
) -> ClippedNoise:
    clip = _clip(flags, default="median" if calibrated else None)
    calibration = flags.get("calib", "analytic")
    if calibration not in ("analytic", "classic"):
        raise unknown_name("calibration", str(calibration), ["analytic", "classic"])
    return ClippedNoise(
        level,
        mechanism=mechanism,  # type: ignore[arg-type]
        location=location,
        clip=None if clip == "median" else clip,  # type: ignore[arg-type]
        delta=_number(flags, "delta") if "delta" in flags else 1e-5,
        calibrated=calibrated,
        calibration=calibration,  # type: ignore[arg-type]
    )
