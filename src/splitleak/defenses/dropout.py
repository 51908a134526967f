"""Dropout defense: multiply x or z by a random 0/1 mask with drop rate r (IoTJ 2020 §VI).

The authors do not rescale the kept values; ``rescale=True`` divides them by 1 − r, which
keeps the expected value of every element unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitleak.defenses.base import Location


@dataclass(frozen=True)
class Dropout:
    """Zero each element independently with probability r = ``level``."""

    level: float
    location: Location = "features"
    rescale: bool = False
    family: str = "dropout"

    def __post_init__(self) -> None:
        if not 0 <= self.level < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {self.level}")

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.level == 0:
            return t
        keep = (torch.rand(t.shape, generator=generator, device=t.device) >= self.level).to(t.dtype)
        out = t * keep
        return out / (1 - self.level) if self.rescale else out

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "location": self.location,
            "level": self.level,
            "rescale": self.rescale,
            "symbol": "r",
        }
