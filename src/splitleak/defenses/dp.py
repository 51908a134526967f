"""Calibrated differential privacy on the edge: clip each example, then add noise.

Each example's tensor (its features, or its input) is scaled down to norm at most C — the
L2 norm for Gaussian noise, the L1 norm for Laplace noise — and noise is added. Any two
inputs are neighbours (local DP: the cloud must not tell *which* input was sent), so the
sensitivity is the diameter of the clipping ball, Δ = 2C. The noise scale then follows
from the requested (ε, δ) by :mod:`splitleak.defenses.dp_calibration` (analytic Gaussian
mechanism by default), or, for the plain Gaussian/Laplace families given a clipping norm,
ε follows from their σ or b. ``privacy(defense)`` reports the ε of any defense: a number
where one is defined, None with the reason where it is not.

Specs (ε is the level; flags optional):

* ``dp-gaussian:features:EPS[:delta=1e-5][:clip=C|median][:calib=analytic|classic]``
* ``dp-laplace:features:EPS[:clip=C|median]``
* ``gaussian:features:SIGMA:clip=C[:delta=1e-5]`` and ``laplace:features:B:clip=C`` — the
  existing families with clipping, which gives them an ε.

``clip=median`` (the default of the dp-* families) sets C to the median norm of the
training set's tensors at that location, measured once when the defense is deployed —
from the defender's training data, never from the inputs being protected.

Shapes: apply (N, ...) -> same.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from splitleak.defenses.base import Defense, Location
from splitleak.defenses.deploy import DefenseContext, Prepared
from splitleak.defenses.dp_calibration import (
    Calibration,
    gaussian_epsilon,
    gaussian_sigma,
    laplace_epsilon,
    laplace_scale,
)
from splitleak.defenses.noise import GaussianNoise, LaplaceNoise
from splitleak.errors import NotFittedError, SplitleakError

Mechanism = Literal["gaussian", "laplace"]
_NORM = {"gaussian": 2, "laplace": 1}  # L2 clipping for Gaussian noise, L1 for Laplace
_MEDIAN_IMAGES = 10_000  # training images used to measure the median norm


def clip_per_example(t: torch.Tensor, norm: float, *, p: int) -> torch.Tensor:
    """Scale each example (first dimension) to Lp norm at most ``norm``.

    Shapes: (N, ...) -> (N, ...).
    """
    flat = t.flatten(1)
    lengths = flat.norm(p=p, dim=1).clamp_min(1e-12)
    factor = (norm / lengths).clamp(max=1.0)
    return t * factor.view(-1, *([1] * (t.dim() - 1)))


@dataclass(frozen=True)
class ClippedNoise:
    """Clip to norm C, add Gaussian or Laplace noise; ``level`` is ε (dp-*) or the scale.

    Args:
        level: ε for the ``dp-*`` families (``calibrated=True``), else σ or b.
        mechanism: ``gaussian`` (L2 clipping) or ``laplace`` (L1 clipping).
        clip: C, or None until a ``median`` clip is measured at deployment.
        delta: δ of the Gaussian mechanism (Laplace is pure ε-DP, δ = 0).
        calibrated: the level is ε and the scale is derived from it.
        calibration: ``analytic`` (Balle and Wang) or ``classic`` (ε < 1 only).
    """

    level: float
    mechanism: Mechanism = "gaussian"
    location: Location = "features"
    clip: float | None = None
    delta: float = 1e-5
    calibrated: bool = True
    calibration: Calibration = "analytic"
    stochastic = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.level):
            raise SplitleakError(
                f"{self.family}: the level must be a finite number, got {self.level}"
            )
        if self.level < 0 or (self.calibrated and self.level == 0):
            what = "epsilon must be > 0" if self.calibrated else "noise level must be >= 0"
            raise SplitleakError(f"{self.family}: {what}, got {self.level:g}")
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise SplitleakError(f"{self.family}: clip must be > 0, got {self.clip:g}")
        # An impossible (ε, δ) fails at parse time, also before a median clip is measured
        # (σ scales with the clip, so a unit clip checks the same rules).
        if self.calibrated and self.clip is not None:
            self.scale  # noqa: B018
        elif self.calibrated and self.mechanism == "gaussian":
            gaussian_sigma(self.level, self.delta, 1.0, calibration=self.calibration)

    @property
    def family(self) -> str:
        return f"dp-{self.mechanism}" if self.calibrated else self.mechanism

    @property
    def stage(self) -> int | None:
        return 1 if self.clip is None else None  # a median clip is measured at deployment

    @property
    def sensitivity(self) -> float:
        if self.clip is None:
            raise NotFittedError(f"{self.family}: the median clipping norm is not measured yet")
        return 2 * self.clip

    @cached_property
    def scale(self) -> float:
        """σ (Gaussian) or b (Laplace) of the added noise."""
        if not self.calibrated:
            return self.level
        if self.mechanism == "laplace":
            return laplace_scale(self.level, self.sensitivity)
        return gaussian_sigma(
            self.level, self.delta, self.sensitivity, calibration=self.calibration
        )

    @property
    def epsilon(self) -> float:
        if self.calibrated:
            return self.level
        if self.level == 0:
            return math.inf
        if self.mechanism == "laplace":
            return laplace_epsilon(self.level, self.sensitivity)
        return gaussian_epsilon(self.level, self.delta, self.sensitivity)

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.clip is None:
            self.sensitivity  # noqa: B018  (raises: not deployed)
        assert self.clip is not None
        clipped = clip_per_example(t, self.clip, p=_NORM[self.mechanism])
        noise = GaussianNoise if self.mechanism == "gaussian" else LaplaceNoise
        return noise(self.scale, location=self.location).apply(clipped, generator)

    def describe(self) -> dict[str, object]:
        out: dict[str, Any] = {
            "family": self.family,
            "location": self.location,
            "level": self.level,
            "clip": self.clip if self.clip is not None else "median",
            "symbol": "ε" if self.calibrated else ("σ" if self.mechanism == "gaussian" else "b"),
        }
        if self.mechanism == "gaussian":
            out.update(delta=self.delta, calibration=self.calibration)
        if self.clip is not None:
            out.update(scale=self.scale, privacy=privacy(self))
        return out

    def prepare(self, context: DefenseContext) -> Prepared:
        """Measure the median clipping norm on the training set (no cache: one pass)."""
        data = context.data()
        x = data.inputs[:_MEDIAN_IMAGES]
        with torch.no_grad():
            t = x if self.location == "input" else context.parts.edge(x)
        norms = t.flatten(1).norm(p=_NORM[self.mechanism], dim=1)
        clip = float(norms.median())
        return Prepared(dataclasses.replace(self, clip=clip))


def privacy(defense: Defense) -> dict[str, Any]:
    """The (ε, δ) of a defense, or ε None with the reason it has none.

    Returns:
        ``{"epsilon", "delta", "sensitivity", "note"}``; ε is None where no finite one is
        defined (unclipped noise, relative noise, dropout, trained defenses).
    """
    if isinstance(defense, ClippedNoise) and defense.clip is not None:
        eps = defense.epsilon
        return {
            "epsilon": None if math.isinf(eps) else eps,
            "delta": defense.delta if defense.mechanism == "gaussian" else 0.0,
            "sensitivity": defense.sensitivity,
            "note": f"clipped to L{_NORM[defense.mechanism]} norm {defense.clip:.4g}",
        }
    if isinstance(defense, ClippedNoise) and defense.calibrated:  # ε is the request itself
        return {
            "epsilon": defense.level,
            "delta": defense.delta if defense.mechanism == "gaussian" else 0.0,
            "sensitivity": None,
            "note": "clipping norm: the training median, measured when deployed",
        }
    family = getattr(defense, "family", "?")
    inner = getattr(defense, "inner", None)
    if inner is not None:  # fine-tuning changes the cloud, not the mechanism
        return privacy(inner)
    if family in ("gaussian", "laplace"):
        note = (
            "noise relative to the batch's spread: data-dependent scale, no epsilon"
            if getattr(defense, "relative", False)
            else "no clipping: the sensitivity is unbounded; add :clip=C for an epsilon"
        )
    elif isinstance(defense, ClippedNoise):
        note = "median clipping norm not measured yet: deploy the defense to get its epsilon"
    else:
        note = f"{family} is not a differential-privacy mechanism"
    return {"epsilon": None, "delta": None, "sensitivity": None, "note": note}
