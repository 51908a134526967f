"""What every attack returns, and the shape all attacks share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from splitleak.attacks.access import Access


@dataclass(frozen=True)
class Reconstruction:
    """Reconstructed inputs for a batch of observed features.

    Attributes:
        images: (N, C, H, W) pixels, clipped to [0, 1] — what metrics and grids use.
        x: (N, C, H, W) the same in the model's normalised input space (unclipped).
        info: attack-specific diagnostics (final feature loss, convergence, ...).
    """

    images: torch.Tensor
    x: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Attack(Protocol):
    """``Attack(**hyperparameters).fit(access, ...)`` then ``.reconstruct(z)``."""

    name: str

    def fit(self, access: Access, *args: Any, **kwargs: Any) -> Attack: ...

    def reconstruct(self, z: torch.Tensor) -> Reconstruction: ...


def check_features(z: torch.Tensor, feature_shape: tuple[int, ...]) -> None:
    """Refuse features of the wrong shape or with NaN/inf, with an actionable message."""
    from splitleak.errors import InputError

    if tuple(z.shape[1:]) != tuple(feature_shape):
        raise InputError(
            f"features have shape {tuple(z.shape)}, expected (N, "
            f"{', '.join(map(str, feature_shape))})"
            " — were they taken at another split point?"
        )
    if not torch.isfinite(z).all():
        raise InputError("features contain NaN or inf; check the edge model and its input")
