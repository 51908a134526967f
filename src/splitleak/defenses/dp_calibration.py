"""Noise scales of the Gaussian and Laplace mechanisms for a requested (ε, δ), and back.

A mechanism ``M(x) = f(x) + noise`` on a function of sensitivity Δ (the largest distance
between ``f(x)`` and ``f(x')`` over any two inputs) is (ε, δ)-differentially private when

* **Laplace** (L1 sensitivity Δ₁): i.i.d. Laplace noise of scale ``b = Δ₁ / ε`` gives (ε, 0)
  (Dwork and Roth, *The Algorithmic Foundations of Differential Privacy*, Thm. 3.6).
* **Gaussian, classic** (L2 sensitivity Δ₂): ``σ = Δ₂·sqrt(2 ln(1.25/δ)) / ε`` gives (ε, δ)
  for ε < 1 only (Dwork and Roth, Thm. A.1).
* **Gaussian, analytic** (Balle and Wang, ICML 2018, Thm. 8): N(0, σ²) noise gives (ε, δ) if
  and only if ``Φ(Δ/2σ − εσ/Δ) − e^ε·Φ(−Δ/2σ − εσ/Δ) ≤ δ``; the smallest such σ is found
  by root finding. Valid for every ε > 0 and never larger than the classic σ.

Everything here is a pure function of floats; :mod:`splitleak.defenses.dp` applies it to
features. The analytic calibration is the default because it is exact and covers ε ≥ 1,
which feature-level (local) privacy needs in practice.

Shapes: scalars only.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from splitleak.errors import SplitleakError

Calibration = Literal["analytic", "classic"]


def laplace_scale(epsilon: float, sensitivity: float) -> float:
    """Scale b of the Laplace mechanism: ``b = Δ₁ / ε`` (pure ε-DP)."""
    _check_positive(epsilon=epsilon, sensitivity=sensitivity)
    return sensitivity / epsilon


def laplace_epsilon(scale: float, sensitivity: float) -> float:
    """ε of Laplace noise of scale b on a function of L1 sensitivity Δ₁: ``Δ₁ / b``."""
    _check_positive(scale=scale, sensitivity=sensitivity)
    return sensitivity / scale


def gaussian_delta(epsilon: float, sigma: float, sensitivity: float) -> float:
    """The exact δ of N(0, σ²) noise at privacy level ε (Balle and Wang, Thm. 8)."""
    _check_positive(sigma=sigma, sensitivity=sensitivity)
    if epsilon < 0:
        raise SplitleakError(f"epsilon must be >= 0, got {epsilon:g}")
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    # e^ε·Φ(−a − b) in log space: for large ε the factor e^ε alone overflows.
    return float(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)))


def gaussian_sigma(
    epsilon: float,
    delta: float,
    sensitivity: float,
    *,
    calibration: Calibration = "analytic",
) -> float:
    """Smallest σ of Gaussian noise that makes a Δ₂-sensitive function (ε, δ)-DP.

    Raises:
        SplitleakError: ε ≤ 0, δ not in (0, 1), or the classic formula asked for ε ≥ 1.
    """
    _check_positive(epsilon=epsilon, sensitivity=sensitivity)
    _check_delta(delta)
    if calibration == "classic":
        if epsilon >= 1:
            raise SplitleakError(
                f"the classic Gaussian mechanism is only proven for epsilon < 1 (got "
                f"{epsilon:g}); use the analytic calibration (flag calib=analytic)"
            )
        return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    if calibration != "analytic":
        raise SplitleakError(f"unknown calibration {calibration!r}; valid: analytic, classic")
    low, high = 1e-12 * sensitivity, sensitivity
    while gaussian_delta(epsilon, high, sensitivity) > delta:  # δ falls as σ grows
        high *= 2
    return float(
        brentq(lambda s: gaussian_delta(epsilon, s, sensitivity) - delta, low, high, xtol=1e-14)
    )


def gaussian_epsilon(sigma: float, delta: float, sensitivity: float) -> float:
    """Smallest ε at which N(0, σ²) noise on a Δ₂-sensitive function is (ε, δ)-DP (analytic)."""
    _check_positive(sigma=sigma, sensitivity=sensitivity)
    _check_delta(delta)
    if gaussian_delta(0.0, sigma, sensitivity) <= delta:
        return 0.0
    high = 1.0
    while gaussian_delta(high, sigma, sensitivity) > delta:  # δ falls as ε grows
        high *= 2
    return float(brentq(lambda e: gaussian_delta(e, sigma, sensitivity) - delta, 0.0, high))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise SplitleakError(f"{name} must be a positive finite number, got {value:g}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise SplitleakError(f"delta must be in (0, 1), got {delta:g}; e.g. delta=1e-5")
