"""White-box rMLE: limit cases, the TV prior, threat-model guards, profiles, reproducibility."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from splitleak.attacks import settings
from splitleak.attacks.access import InputSpec, QueryAccess, TailAccess, WhiteBoxAccess
from splitleak.attacks.inversion import total_variation
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.config import AttackConfig
from splitleak.data import ImageDataset
from splitleak.errors import AccessError, InputError, UnknownNameError
from splitleak.experiment import run_attack
from splitleak.metrics import psnr
from splitleak.models import split_model
from splitleak.models.normalization import Normalization

MNIST_SPEC = InputSpec((1, 28, 28), Normalization((0.5,), (0.5,)))


def orthogonal_edge(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.Linear(784, 784)
    nn.init.orthogonal_(layer.weight)
    return nn.Sequential(nn.Flatten(), layer)


def test_inversion_through_an_orthogonal_layer_recovers_the_input(mnist_victim):
    # An orthogonal map loses nothing, so the rMLE optimum is the input itself.
    pixels = mnist_victim.test.subset(range(10)).to_float()  # real MNIST digits
    edge = orthogonal_edge()
    with torch.no_grad():
        z = edge(MNIST_SPEC.normalization.normalize(pixels))
    paper = settings.resolve("paper", architecture="mnist-net", split="conv1")
    access = WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(784,))
    attack = WhiteBoxInversion(**paper).fit(access)
    rec = attack.reconstruct(z)
    assert rec.images.shape == pixels.shape
    assert rec.images.min() >= 0 and rec.images.max() <= 1
    assert psnr(rec.images, pixels).min() > 40
    assert max(rec.info["feature_mse"]) < 1e-6


def test_an_exact_inversion_is_reported_as_converged(mnist_victim):
    pixels = mnist_victim.test.subset(range(4)).to_float()
    edge = orthogonal_edge()
    with torch.no_grad():
        z = edge(MNIST_SPEC.normalization.normalize(pixels))
    access = WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(784,))
    rec = WhiteBoxInversion(steps=500, lr=0.01).fit(access).reconstruct(z)
    trace = rec.info["objective_trace"]
    assert trace[-1] < 1e-9 * trace[0]  # the objective fell by nine orders of magnitude
    assert rec.info["converged"] is True


def test_inversion_starts_from_the_mean_colour():
    # Zero steps: the reconstruction is the constant start image (0.5 grey for MNIST).
    edge = orthogonal_edge()
    access = WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(784,))
    attack = WhiteBoxInversion(steps=0).fit(access)
    rec = attack.reconstruct(torch.randn(2, 784))
    assert torch.equal(rec.images, torch.full((2, 1, 28, 28), 0.5))


# -- total variation ----------------------------------------------------------------------


def _tv_by_hand(x: torch.Tensor, beta: float) -> list[float]:
    n, c, h, w = x.shape
    out = []
    for k in range(n):
        terms = []
        for ch in range(c):
            for i in range(h - 1):
                for j in range(w - 1):
                    down = float(x[k, ch, i + 1, j] - x[k, ch, i, j])
                    right = float(x[k, ch, i, j + 1] - x[k, ch, i, j])
                    terms.append((down**2 + right**2) ** (beta / 2))
        out.append(sum(terms) / len(terms))
    return out


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_total_variation_formula(beta):
    x = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tv = total_variation(x, beta=beta)
    assert tv.shape == (2,)
    # beta = 1 smooths the square root with a 1e-8 epsilon, hence the tolerance.
    assert tv.tolist() == pytest.approx(_tv_by_hand(x, beta), rel=1e-6, abs=1e-9)


def test_total_variation_of_a_constant_image_is_zero():
    x = torch.full((2, 1, 28, 28), 0.7)
    assert total_variation(x, beta=2).tolist() == [0.0, 0.0]
    assert total_variation(x, beta=1).tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    x[1, 0, 10, 10] = 0.0  # one different pixel is not flat
    assert total_variation(x, beta=2)[1] > 0


# -- threat-model guards and input checks -------------------------------------------------


@pytest.mark.parametrize(
    "make_access",
    [
        lambda edge: QueryAccess(edge, inputs=MNIST_SPEC, feature_shape=(784,)),
        lambda edge: TailAccess(nn.Linear(784, 10), inputs=MNIST_SPEC, feature_shape=(784,)),
    ],
    ids=["query", "tail"],
)
def test_whitebox_refuses_weaker_access(make_access):
    with pytest.raises(AccessError, match="WhiteBoxAccess"):
        WhiteBoxInversion(steps=1).fit(make_access(orthogonal_edge()))


@pytest.fixture
def relu2_attack(mnist_victim) -> WhiteBoxInversion:
    split = split_model(mnist_victim.model, at="ReLU2")
    access = WhiteBoxAccess(split.edge, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    return WhiteBoxInversion(steps=2).fit(access)


@pytest.mark.parametrize("shape", [(2, 16, 4, 4), (2, 1024), (2, 8, 24, 24)])
def test_features_of_the_wrong_shape_are_refused(relu2_attack, shape):
    with pytest.raises(InputError, match="another split point"):
        relu2_attack.reconstruct(torch.zeros(shape))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused(relu2_attack, bad):
    z = torch.zeros(2, 16, 8, 8)
    z[1, 3, 2, 2] = bad
    with pytest.raises(InputError, match="NaN"):
        relu2_attack.reconstruct(z)


# -- profiles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "split", "expected"),
    [
        ("paper", "ReLU2", {"steps": 500, "lr": 0.01, "tv_weight": 0.0, "tv_beta": 1.0}),
        ("paper", "conv1", {"steps": 500, "lr": 0.01, "tv_weight": 0.0, "tv_beta": 1.0}),
        ("paper", "fc1", {"steps": 5000, "lr": 1e-3, "tv_weight": 0.1, "tv_beta": 1.0}),
        ("authors-code", "ReLU2", {"steps": 5000, "lr": 0.01, "tv_weight": 1.0, "tv_beta": 2.0}),
        ("authors-code", "conv1", {"steps": 5000, "lr": 0.01, "tv_weight": 0.0, "tv_beta": 2.0}),
        ("strong", "ReLU2", {"clip_to_pixel_range": True, "cosine": True}),
    ],
)
def test_profiles_resolve_to_the_documented_values(profile, split, expected):
    resolved = settings.resolve(profile, architecture="mnist-net", split=split)
    assert {k: resolved[k] for k in expected} == expected
    WhiteBoxInversion(**resolved)  # every key is a hyperparameter


def test_the_three_profiles_are_shipped():
    assert {"paper", "authors-code", "strong"} <= set(settings.profiles())


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        settings.resolve("papper", architecture="mnist-net", split="ReLU2")
    message = str(info.value)
    assert "'papper'" in message
    for name in ("paper", "authors-code", "strong"):
        assert name in message.split("valid:")[1]


# -- reproducibility ----------------------------------------------------------------------


def _short_run(victim, seed: int):
    cfg = AttackConfig(
        split="ReLU2", overrides={"steps": 50}, protocol="random", n_eval=6, seed=seed
    )
    return run_attack(cfg, victim=victim, progress=False)


def test_same_seed_gives_the_same_numbers(mnist_victim):
    first, second = _short_run(mnist_victim, seed=3), _short_run(mnist_victim, seed=3)
    assert first.per_image == second.per_image
    assert first.summary == second.summary
    assert torch.equal(first.reconstruction.images, second.reconstruction.images)
    assert first.provenance["attack_hyperparameters"]["steps"] == 50
    # The seed matters: another one attacks other images.
    other = _short_run(mnist_victim, seed=4)
    assert other.per_image["index"] != first.per_image["index"]


def test_an_exact_reconstruction_is_written(mnist_victim, tmp_path):
    # Black digits attacked from a black start with zero steps: x_hat == x, PSNR = inf.
    black = ImageDataset(
        name="black", split="test", images=torch.zeros(10, 1, 28, 28, dtype=torch.uint8),
        labels=torch.arange(10), classes=mnist_victim.test.classes,
    )  # fmt: skip
    victim = dataclasses.replace(mnist_victim, test=black)
    cfg = AttackConfig(split="ReLU2", overrides={"steps": 0, "init": "black"})
    run = run_attack(cfg, victim=victim, out=tmp_path / "run", progress=False)
    assert torch.equal(run.reconstruction.images, run.reference)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["summary"]["psnr"]["mean"] == 100.0  # capped
