"""Additive noise defenses: Gaussian N(0, σ²) and Laplacian (scale b), on x or on z.

IoTJ 2020 §VI: the authors add noise of an absolute level, not scaled to the activations.
``relative=True`` instead scales it by the standard deviation of the clean tensor (over the
whole batch), so ``level`` means "noise std as a fraction of the signal std".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitleak.defenses.base import Location


@dataclass(frozen=True)
class _AdditiveNoise:
    """``t + scale · noise``: subclasses draw unit-scale noise in :meth:`_sample`."""

    level: float
    location: Location = "features"
    relative: bool = False
    family: str = ""
    symbol = "level"

    def _sample(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.level == 0:
            return t
        scale = self.level * t.detach().std() if self.relative else self.level
        return t + scale * self._sample(t, generator)

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "location": self.location,
            "level": self.level,
            "relative": self.relative,
            "symbol": self.symbol,
        }


@dataclass(frozen=True)
class GaussianNoise(_AdditiveNoise):
    """Add N(0, σ²) noise, σ = ``level`` (× std of the tensor if ``relative``)."""

    family: str = "gaussian"
    symbol = "σ"

    def _sample(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device)


@dataclass(frozen=True)
class LaplaceNoise(_AdditiveNoise):
    """Add Laplacian noise of scale b = ``level`` (× std of the tensor if ``relative``).

    The relative level scales b, so the noise std is √2·b.
    """

    family: str = "laplace"
    symbol = "b"

    def _sample(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Inverse CDF of the Laplace distribution from uniform draws in (-1/2, 1/2).
        u = torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-7))
