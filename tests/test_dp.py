"""Calibrated differential privacy: noise scales against the mechanisms' formulas and oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from splitleak.defenses import parse_defense
from splitleak.defenses.dp import ClippedNoise, clip_per_example, privacy
from splitleak.defenses.dp_calibration import (
    gaussian_delta,
    gaussian_epsilon,
    gaussian_sigma,
    laplace_epsilon,
    laplace_scale,
)
from splitleak.errors import SplitleakError, UnknownNameError
from splitleak.experiment import deploy_defenses


def hockey_stick(epsilon: float, sigma: float, sensitivity: float) -> float:
    """Oracle: δ(ε) = ∫ max(0, p(x) − e^ε q(x)) dx for p = N(0, σ²), q = N(Δ, σ²)."""
    p, q = stats.norm(0, sigma), stats.norm(sensitivity, sigma)
    # The integrand is positive only left of the privacy-loss crossing point.
    cross = sensitivity / 2 - epsilon * sigma**2 / sensitivity
    value, _ = integrate.quad(
        lambda x: p.pdf(x) - math.exp(epsilon) * q.pdf(x), -np.inf, cross, epsabs=1e-13
    )
    return max(value, 0.0)


# -- the formulas -------------------------------------------------------------------------


@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), [(0.5, 1e-5, 2.0), (0.1, 1e-6, 1.0)])
def test_classic_gaussian_sigma_is_the_textbook_formula(epsilon, delta, sensitivity):
    expected = sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    assert gaussian_sigma(epsilon, delta, sensitivity, calibration="classic") == pytest.approx(
        expected, rel=1e-12
    )


def test_classic_gaussian_refuses_epsilon_of_one_or_more():
    with pytest.raises(SplitleakError, match="analytic"):
        gaussian_sigma(1.0, 1e-5, 1.0, calibration="classic")


@pytest.mark.parametrize(("epsilon", "sigma"), [(0.5, 3.0), (1.0, 2.0), (4.0, 0.8), (20.0, 0.2)])
def test_analytic_delta_equals_the_hockey_stick_integral(epsilon, sigma):
    assert gaussian_delta(epsilon, sigma, 1.0) == pytest.approx(
        hockey_stick(epsilon, sigma, 1.0), rel=1e-6, abs=1e-12
    )


@pytest.mark.parametrize(
    ("epsilon", "delta", "sensitivity"), [(0.5, 1e-5, 1.0), (1.0, 1e-5, 2.0), (8.0, 1e-6, 10.0)]
)
def test_analytic_sigma_is_the_smallest_that_meets_delta(epsilon, delta, sensitivity):
    sigma = gaussian_sigma(epsilon, delta, sensitivity)
    assert hockey_stick(epsilon, sigma, sensitivity) == pytest.approx(delta, rel=1e-5)
    assert hockey_stick(epsilon, sigma * 0.99, sensitivity) > delta  # any smaller fails
    assert gaussian_epsilon(sigma, delta, sensitivity) == pytest.approx(epsilon, rel=1e-6)


@pytest.mark.parametrize("epsilon", [0.05, 0.3, 0.9])
def test_analytic_sigma_never_exceeds_the_classic_one(epsilon):
    classic = gaussian_sigma(epsilon, 1e-5, 1.0, calibration="classic")
    analytic = gaussian_sigma(epsilon, 1e-5, 1.0)
    assert analytic <= classic
    assert gaussian_delta(epsilon, classic, 1.0) <= 1e-5  # the classic σ is private too


def test_laplace_scale_is_sensitivity_over_epsilon_and_bounds_the_privacy_loss():
    b = laplace_scale(2.0, 3.0)
    assert b == pytest.approx(1.5)
    assert laplace_epsilon(b, 3.0) == pytest.approx(2.0)
    # Oracle: the largest log density ratio of Laplace(0, b) and Laplace(Δ, b) is ε.
    x = np.linspace(-20, 20, 40_001)
    loss = stats.laplace(0, b).logpdf(x) - stats.laplace(3.0, b).logpdf(x)
    assert np.abs(loss).max() == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gaussian_sigma(0.0, 1e-5, 1.0),
        lambda: gaussian_sigma(1.0, 0.0, 1.0),
        lambda: gaussian_sigma(1.0, 1.5, 1.0),
        lambda: laplace_scale(-1.0, 1.0),
    ],
)
def test_bad_privacy_parameters_are_refused(call):
    with pytest.raises(SplitleakError):
        call()


# -- the defense --------------------------------------------------------------------------


def test_clipping_bounds_each_example_and_keeps_small_ones():
    t = torch.tensor([[3.0, 4.0], [0.3, 0.4], [-6.0, 8.0]])
    out = clip_per_example(t, 1.0, p=2)
    assert torch.allclose(out.norm(dim=1), torch.tensor([1.0, 0.5, 1.0]))
    assert torch.equal(out[1], t[1])
    l1 = clip_per_example(t, 2.0, p=1)
    assert torch.allclose(l1.abs().sum(1), torch.tensor([2.0, 0.7, 2.0]))


def test_dp_gaussian_spec_adds_the_calibrated_noise_after_clipping():
    defense = parse_defense("dp-gaussian:features:2:clip=0.5:delta=1e-6")
    assert isinstance(defense, ClippedNoise)
    sigma = gaussian_sigma(2.0, 1e-6, 2 * 0.5)  # Δ = 2C: any two clipped vectors
    assert defense.scale == pytest.approx(sigma)
    t = torch.full((400, 2500), 10.0)  # far outside the ball: clipped to norm 0.5
    out = defense.apply(t, torch.Generator().manual_seed(0))
    clipped = clip_per_example(t, 0.5, p=2)
    assert (out - clipped).std().item() == pytest.approx(sigma, rel=0.01)
    assert abs((out - clipped).mean().item()) < 5 * sigma / math.sqrt(out.numel())  # no offset
    assert privacy(defense)["epsilon"] == 2.0 and privacy(defense)["delta"] == 1e-6


@pytest.mark.parametrize(
    ("spec", "p", "other", "tails"),
    [
        ("dp-gaussian:features:1000:clip=0.5", 2, 1, 6),
        ("dp-laplace:features:1000:clip=3", 1, 2, 15),
    ],
)
def test_dp_noise_is_added_to_each_example_clipped_in_its_own_norm(spec, p, other, tails):
    # ε = 1000 makes the noise small beside the clipping: the output is the example clipped
    # in the mechanism's norm (L2 Gaussian, L1 Laplace) to within a few noise scales, and
    # far from the same example clipped in the other norm or not clipped at all.
    defense = parse_defense(spec)
    t = torch.randn(64, 100, generator=torch.Generator().manual_seed(2)) * 10
    out = defense.apply(t, torch.Generator().manual_seed(3))
    tolerance = tails * defense.scale
    assert (out - clip_per_example(t, defense.clip, p=p)).abs().max() < tolerance
    assert (out - clip_per_example(t, defense.clip, p=other)).abs().max() > tolerance
    assert (out - t).abs().max() > tolerance


def test_dp_laplace_spec_uses_l1_clipping_and_b_equal_two_c_over_epsilon():
    defense = parse_defense("dp-laplace:input:4:clip=3")
    assert defense.scale == pytest.approx(2 * 3 / 4)
    out = defense.apply(torch.zeros(200, 5000), torch.Generator().manual_seed(1))
    assert out.std().item() == pytest.approx(math.sqrt(2) * 1.5, rel=0.01)  # std = √2·b


def test_epsilon_of_the_existing_noise_families_given_a_clipping_norm():
    gaussian = privacy(parse_defense("gaussian:features:1:clip=5"))
    assert gaussian["epsilon"] == pytest.approx(gaussian_epsilon(1.0, 1e-5, 10.0))
    assert gaussian["sensitivity"] == 10.0
    laplace = privacy(parse_defense("laplace:features:0.5:clip=2"))
    assert laplace["epsilon"] == pytest.approx(4 / 0.5) and laplace["delta"] == 0.0
    requested = privacy(parse_defense("dp-gaussian:features:7"))  # median clip: not yet known
    assert requested["epsilon"] == 7.0 and requested["sensitivity"] is None
    for spec, word in [
        ("gaussian:features:1", "unbounded"),
        ("gaussian:features:1:relative", "data-dependent"),
        ("dropout:features:0.5", "not a differential-privacy"),
        ("dropout:features:0.5:finetune", "not a differential-privacy"),
    ]:
        record = privacy(parse_defense(spec))
        assert record["epsilon"] is None and word in record["note"], spec


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("dp-gaussian:features:0", SplitleakError),
        ("dp-gaussian:features:2:clip=1:calib=classic", SplitleakError),  # ε ≥ 1
        ("dp-gaussian:features:2:calib=classic", SplitleakError),  # ε ≥ 1, median clip
        ("dp-gaussian:features:1:delta=1.5", SplitleakError),  # δ ∉ (0, 1), median clip
        ("dp-laplace:features:inf", SplitleakError),  # ε must be finite
        ("dp-laplace:features:nan", SplitleakError),
        ("gaussian:features:inf", SplitleakError),
        ("dp-gaussian:features:0.5:calib=exact", UnknownNameError),
        ("dp-gaussian:features:1:clip=-1", SplitleakError),
        ("dp-gaussian:features:1:clip", SplitleakError),
        ("gaussian:features:1:clip=2:relative", SplitleakError),
        ("gaussian:features:1:delta=1e-5", SplitleakError),
        ("dp-laplace:features:1:delta=1e-5", UnknownNameError),
    ],
)
def test_bad_dp_specs_are_refused_at_parse_time(spec, error):
    with pytest.raises(error):
        parse_defense(spec)


def test_median_clip_is_measured_on_the_training_features(mnist_victim):
    deployment = deploy_defenses(
        mnist_victim, split="ReLU2", defenses=("dp-gaussian:features:100",)
    )
    (defense,) = deployment.defenses
    n = int(mnist_victim.meta.get("train_images", len(mnist_victim.train)))
    x = mnist_victim.normalize(mnist_victim.train)[: min(n, 10_000)]
    with torch.no_grad():
        norms = deployment.edge(x).flatten(1).norm(dim=1)
    assert defense.clip == pytest.approx(float(norms.median()))
    assert defense.scale == pytest.approx(gaussian_sigma(100.0, 1e-5, 2 * defense.clip))


def test_a_laplace_median_clip_is_measured_in_the_l1_norm(mnist_victim):
    deployment = deploy_defenses(mnist_victim, split="ReLU2", defenses=("dp-laplace:features:100",))
    (defense,) = deployment.defenses
    n = int(mnist_victim.meta.get("train_images", len(mnist_victim.train)))
    x = mnist_victim.normalize(mnist_victim.train)[: min(n, 10_000)]
    with torch.no_grad():
        norms = deployment.edge(x).flatten(1).norm(p=1, dim=1)
    assert defense.clip == pytest.approx(float(norms.median()), rel=1e-6)
    assert defense.scale == pytest.approx(2 * defense.clip / 100.0)
