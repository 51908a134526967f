"""PSNR and SSIM against scikit-image, and summaries against scipy's t interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from splitleak.errors import InputError
from splitleak.metrics import PSNR_CAP, psnr, ssim, summarize

SHAPES = {"gray": (1, 28, 28), "rgb": (3, 32, 32)}
SEEDS = [0, 1, 2]
# How the reconstruction relates to the reference: unrelated, or noisy copies of it.
KINDS = ["independent", "noise-0.02", "noise-0.1", "noise-0.3"]


def _pair(kind: str, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, x): 4 images each in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *shape, generator=gen)
    if kind == "independent":
        return torch.rand(4, *shape, generator=gen), x
    sigma = float(kind.split("-")[1])
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1), x


def _skimage_ssim(x_hat: np.ndarray, x: np.ndarray, data_range: float) -> float:
    # One (C, H, W) image: scikit-image wants 2-D grayscale or a channel axis for colour.
    if x.shape[0] == 1:
        return structural_similarity(x[0], x_hat[0], data_range=data_range)
    return structural_similarity(x, x_hat, data_range=data_range, channel_axis=0)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_psnr_and_ssim_match_scikit_image(shape, kind, seed):
    x_hat, x = _pair(kind, shape, seed)
    ours_psnr, ours_ssim = psnr(x_hat, x), ssim(x_hat, x)
    assert ours_psnr.shape == ours_ssim.shape == (4,)
    for i in range(4):
        a, b = x_hat[i].double().numpy(), x[i].double().numpy()
        assert ours_psnr[i].item() == pytest.approx(
            peak_signal_noise_ratio(b, a, data_range=1), abs=1e-5
        )
        assert ours_ssim[i].item() == pytest.approx(_skimage_ssim(a, b, 1.0), abs=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_ssim_reconstruction_range_matches_scikit_image(shape, seed):
    # A washed-out reconstruction (range 0.3..0.7), where the authors' data range differs.
    x_hat, x = _pair("noise-0.1", shape, seed)
    x_hat = 0.3 + 0.4 * x_hat
    ours = ssim(x_hat, x, data_range="reconstruction")
    default = ssim(x_hat, x)
    for i in range(4):
        a, b = x_hat[i].double().numpy(), x[i].double().numpy()
        expected = _skimage_ssim(a, b, float(a.max() - a.min()))
        assert ours[i].item() == pytest.approx(expected, abs=1e-5)
        assert abs(default[i].item() - expected) > 1e-3  # the switch changes the number


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_identical_images(shape):
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ssim(x, x.clone()), torch.ones(3))
    assert torch.isinf(psnr(x, x.clone())).all()


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 1, 8, 8)
    x_hat = torch.full_like(x, 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(x_hat, x).tolist() == pytest.approx([20.0, 20.0], abs=1e-5)


@pytest.mark.parametrize(
    ("x_hat", "x"),
    [
        (torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 27)),
        (torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28)),
        (torch.rand(1, 28, 28), torch.rand(1, 28, 28)),  # no batch dimension
    ],
)
@pytest.mark.parametrize("metric", [psnr, ssim])
def test_shape_mismatch_is_refused(metric, x_hat, x):
    with pytest.raises(InputError, match="same shape"):
        metric(x_hat, x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize("where", ["x_hat", "x"])
def test_non_finite_pixels_are_refused(metric, bad, where):
    x_hat, x = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    (x_hat if where == "x_hat" else x)[1, 0, 5, 5] = bad
    with pytest.raises(InputError, match="non-finite"):
        metric(x_hat, x)


@pytest.mark.parametrize("n", [2, 5, 100])
def test_summary_ci_is_the_student_t_interval(n):
    values = np.random.default_rng(n).normal(20.0, 3.0, size=n)
    summary = summarize(values)
    low, high = stats.t.interval(0.95, n - 1, loc=values.mean(), scale=stats.sem(values))
    assert summary.n == n
    assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
    assert summary.mean - summary.ci95 == pytest.approx(low, rel=1e-10)
    assert summary.mean + summary.ci95 == pytest.approx(high, rel=1e-10)
    assert summarize(torch.tensor(values)).ci95 == pytest.approx(summary.ci95, rel=1e-6)


def test_summary_cap_keeps_psnr_finite():
    summary = summarize(torch.tensor([math.inf, 30.0]), cap=PSNR_CAP)
    assert summary.mean == (PSNR_CAP + 30.0) / 2
    assert math.isfinite(summary.ci95)


def test_summary_of_nothing_is_refused():
    with pytest.raises(InputError):
        summarize([])


def test_summary_of_one_value_is_valid_json():
    summary = summarize([12.5])
    assert summary.mean == 12.5 and summary.n == 1
    json.dumps(summary.as_dict(), allow_nan=False)
