"""Reconstruction metrics: PSNR and SSIM per image, and summaries with confidence intervals.

Conventions (SPEC §7): images are compared in pixel space, clipped to [0, 1].

* PSNR uses peak 1.0: ``10 log10(1 / MSE)`` per image. Identical images give ``inf``; the
  summary caps PSNR at :data:`PSNR_CAP` dB so that means stay finite.
* SSIM follows scikit-image's default ``structural_similarity``: a 7x7 uniform window,
  K1 = 0.01, K2 = 0.03, sample covariance, ``data_range = 1``, mean over the image interior
  (3-pixel border excluded) and over channels. ``data_range="reconstruction"`` reproduces the
  authors' choice (range of the reconstruction's own min/max); never the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from splitleak.errors import InputError

PSNR_CAP = 100.0
_WIN = 7


def _check_pair(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    if x_hat.shape != x.shape or x.dim() != 4:
        raise InputError(
            f"metrics need two (N, C, H, W) batches of the same shape, got "
            f"{tuple(x_hat.shape)} and {tuple(x.shape)}"
        )
    if not (torch.isfinite(x_hat).all() and torch.isfinite(x).all()):
        raise InputError("metrics got non-finite pixels (NaN or inf); the attack diverged")


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, with peak 1.0.

    Shapes: x_hat, x (N, C, H, W) in [0, 1] -> (N,).
    """
    _check_pair(x_hat, x)
    mse = (x_hat.double() - x.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).float()


def ssim(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    *,
    data_range: float | Literal["reconstruction"] = 1.0,
) -> torch.Tensor:
    """Structural similarity per image, matching ``skimage.metrics.structural_similarity``.

    Shapes: x_hat, x (N, C, H, W) with H, W >= 7 -> (N,).
    """
    _check_pair(x_hat, x)
    a, b = x_hat.double(), x.double()
    if data_range == "reconstruction":
        flat = a.flatten(1)
        rng = (flat.max(1).values - flat.min(1).values).clamp_min(1e-12).view(-1, 1, 1, 1)
    else:
        rng = torch.tensor(float(data_range), dtype=torch.float64)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    n, c, h, w = a.shape
    stack = torch.stack([a, b, a * a, b * b, a * b]).reshape(5 * n * c, 1, h, w)
    # A valid-mode 7x7 mean equals scikit-image's filtered map cropped by its 3-pixel border.
    mu_a, mu_b, aa, bb, ab = F.avg_pool2d(stack, _WIN, stride=1).reshape(5, n, c, h - 6, w - 6)
    cov = _WIN**2 / (_WIN**2 - 1)  # sample covariance, as scikit-image's default
    var_a, var_b = cov * (aa - mu_a**2), cov * (bb - mu_b**2)
    cov_ab = cov * (ab - mu_a * mu_b)
    num = (2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1).float()


@dataclass(frozen=True)
class Summary:
    """Mean with a two-sided 95 % Student-t confidence interval (half-width ``ci95``)."""

    mean: float
    ci95: float | None  # None for fewer than two values
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci95:.2g}" if self.ci95 is not None else f"{self.mean:.4g}"

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci95": self.ci95, "n": self.n}


def summarize(
    values: torch.Tensor | np.ndarray | list[float], *, cap: float | None = None
) -> Summary:
    """Mean and 95 % confidence half-width of ``values`` (optionally capped, e.g. PSNR)."""
    arr = np.asarray(values, dtype=np.float64)
    if cap is not None:
        arr = np.minimum(arr, cap)
    n = arr.size
    if n == 0:
        raise InputError("cannot summarise an empty set of values")
    mean = float(arr.mean())
    if n < 2:
        return Summary(mean=mean, ci95=None, n=n)
    half = float(stats.t.ppf(0.975, n - 1) * arr.std(ddof=1) / np.sqrt(n))
    return Summary(mean=mean, ci95=half, n=n)


def image_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR and SSIM per image; ``x_hat`` and ``x`` are clipped [0, 1] pixel batches."""
    return {"psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
