"""Additive noise defenses: Gaussian N(0, σ²) and Laplacian (scale b), on x or on z.

IoTJ 2020 §VI: the authors add noise of an absolute level, not scaled to the activations.
``relative=True`` instead scales it by the standard deviation of the clean tensor (over the
whole batch), so ``level`` means "noise std as a fraction of the signal std".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitleak.defenses.base import Location


def _scale(t: torch.Tensor, level: float, relative: bool) -> torch.Tensor | float:
    return level * t.detach().std() if relative else level


@dataclass(frozen=True)
class GaussianNoise:
    """Add N(0, σ²) noise, σ = ``level`` (× std of the tensor if ``relative``)."""

    level: float
    location: Location = "features"
    relative: bool = False
    family: str = "gaussian"

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.level == 0:
            return t
        noise = torch.randn(t.shape, generator=generator, dtype=t.dtype)
        return t + _scale(t, self.level, self.relative) * noise

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "location": self.location,
            "level": self.level,
            "relative": self.relative,
            "symbol": "σ",
        }


@dataclass(frozen=True)
class LaplaceNoise:
    """Add Laplacian noise of scale b = ``level`` (× std of the tensor if ``relative``).

    The relative level scales b, so the noise std is √2·b.
    """

    level: float
    location: Location = "features"
    relative: bool = False
    family: str = "laplace"

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.level == 0:
            return t
        # Inverse CDF of the Laplace distribution from uniform draws in (-1/2, 1/2).
        u = torch.rand(t.shape, generator=generator, dtype=t.dtype) - 0.5
        noise = -torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-7))
        return t + _scale(t, self.level, self.relative) * noise

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "location": self.location,
            "level": self.level,
            "relative": self.relative,
            "symbol": "b",
        }
