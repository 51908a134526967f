"""Mapping between pixel space [0, 1] and a model's normalised input space."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std``; attacks optimise in the normalised space.

    Shapes: images (N, C, H, W) with C == len(mean) (or len(mean) == 1).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return mean, std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> model input."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor, *, clip: bool = True) -> torch.Tensor:
        """Model input -> pixels, clipped to [0, 1] unless ``clip`` is False."""
        mean, std = self._stats(x)
        pixels = x * std + mean
        return pixels.clamp(0.0, 1.0) if clip else pixels

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images of pixel values 0 and 1, broadcastable against ``like``."""
        mean, std = self._stats(like)
        return (0.0 - mean) / std, (1.0 - mean) / std
