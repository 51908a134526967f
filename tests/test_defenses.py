"""Edge defenses: their statistics, parsing, accuracy cost, and the defense-aware attack."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from splitleak.attacks.access import InputSpec, WhiteBoxAccess
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.defenses import (
    DefendedEdge,
    Dropout,
    GaussianNoise,
    LaplaceNoise,
    describe,
    parse_defense,
)
from splitleak.errors import SplitleakError, UnknownNameError
from splitleak.experiment import defended_accuracy
from splitleak.metrics import psnr
from splitleak.models.normalization import Normalization
from splitleak.studies import parse_family

MNIST_SPEC = InputSpec((1, 28, 28), Normalization((0.5,), (0.5,)))
N = 100_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def signal() -> torch.Tensor:
    """1e5 values with mean 1 and std ≈ 0.29, all strictly positive."""
    return torch.rand(N, generator=gen(123)) + 0.5


# -- statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "defense",
    [
        GaussianNoise(0.0),
        GaussianNoise(0.0, relative=True),
        GaussianNoise(0.0, location="input"),
        LaplaceNoise(0.0),
        LaplaceNoise(0.0, relative=True),
        Dropout(0.0),
        Dropout(0.0, rescale=True),
    ],
    ids=repr,
)
def test_level_zero_is_the_identity(defense, signal):
    t = signal.view(100, 1000) * 3 - 2
    assert torch.equal(defense.apply(t, gen()), t)


@pytest.mark.parametrize("level", [0.1, 0.5, 2.0])
def test_relative_gaussian_noise_has_the_requested_std(signal, level):
    t = signal * 5 - 3  # std ≈ 1.44: relative and absolute noise differ
    noise = GaussianNoise(level, relative=True).apply(t, gen()) - t
    assert float(noise.std()) == pytest.approx(level * float(t.std()), rel=0.02)
    assert abs(float(noise.mean())) < 0.02 * level * float(t.std())


def test_absolute_gaussian_noise_ignores_the_signal_scale(signal):
    for scale in (1.0, 100.0):
        t = signal * scale
        noise = GaussianNoise(0.5).apply(t, gen()) - t
        assert float(noise.std()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("b", [0.3, 1.0, 4.0])
def test_laplace_noise_of_scale_b_has_std_sqrt2_b(signal, b):
    noise = LaplaceNoise(b).apply(signal, gen()) - signal
    assert float(noise.std()) == pytest.approx(math.sqrt(2) * b, rel=0.02)
    assert float(noise.abs().mean()) == pytest.approx(b, rel=0.02)  # E|X| = b
    assert abs(float(noise.mean())) < 0.02 * b
    # Relative: b is the level times the signal's std.
    t = signal * 5 - 3
    noise = LaplaceNoise(b, relative=True).apply(t, gen()) - t
    assert float(noise.std()) == pytest.approx(math.sqrt(2) * b * float(t.std()), rel=0.02)


@pytest.mark.parametrize("r", [0.2, 0.5])
def test_dropout_mean_with_and_without_rescaling(signal, r):
    mean = float(signal.mean())
    kept = Dropout(r, rescale=True).apply(signal, gen())
    assert float(kept.mean()) == pytest.approx(mean, rel=0.02)
    scaled = Dropout(r).apply(signal, gen())
    assert float(scaled.mean()) == pytest.approx((1 - r) * mean, rel=0.02)
    # Kept values are untouched (the authors' dropout) or divided by 1 - r.
    survivors = scaled != 0
    assert torch.equal(scaled[survivors], signal[survivors])
    assert torch.allclose(kept[kept != 0], signal[kept != 0] / (1 - r))


@pytest.mark.parametrize("r", [0.1, 0.5, 0.9])
def test_dropout_drops_a_fraction_r(signal, r):
    out = Dropout(r).apply(signal, gen())
    assert float((out == 0).float().mean()) == pytest.approx(r, abs=0.01)


def test_dropout_rate_one_is_refused():
    for rate in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(rate)
    with pytest.raises((ValueError, SplitleakError)):
        parse_defense("dropout:features:1")


@pytest.mark.parametrize("spec", ["dropout:features:1", "dropout:input:-0.1"])
def test_a_bad_dropout_rate_in_a_spec_is_a_user_error(spec):
    with pytest.raises(SplitleakError, match="dropout"):
        parse_defense(spec)


# -- the defended edge --------------------------------------------------------------------


def _edge() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32))


def test_defended_edge_draws_are_reproducible_and_fresh():
    x = torch.rand(4, 1, 28, 28, generator=gen(1))
    defenses = [GaussianNoise(0.1, location="input"), Dropout(0.5), LaplaceNoise(0.2)]
    edge = _edge()
    with torch.no_grad():
        first = DefendedEdge(edge, defenses, seed=3)
        a1, a2 = first(x), first(x)
        b1 = DefendedEdge(edge, defenses, seed=3)(x)
        c1 = DefendedEdge(edge, defenses, seed=4)(x)
        assert torch.equal(a1, b1)  # same seed, same numbers
        assert not torch.equal(a1, a2)  # every call is a new draw
        assert not torch.equal(a1, c1)
        assert torch.equal(first.reseed(3)(x), a1)
        assert not torch.equal(a1, edge(x))


def test_defended_edge_applies_each_defense_at_its_location():
    x = torch.rand(2, 1, 28, 28, generator=gen(2)) + 0.1  # no zero pixel

    class PlusOne(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t + 1

    with torch.no_grad():
        before = DefendedEdge(PlusOne(), [Dropout(0.5, location="input")])(x)
        after = DefendedEdge(PlusOne(), [Dropout(0.5, location="features")])(x)
    assert not (before == 0).any() and (before == 1).float().mean() > 0.4  # dropped, then +1
    assert float((after == 0).float().mean()) == pytest.approx(0.5, abs=0.05)


def test_no_defense_is_the_plain_edge():
    x = torch.rand(3, 1, 28, 28, generator=gen(3))
    edge = _edge()
    with torch.no_grad():
        assert torch.equal(DefendedEdge(edge, [])(x), edge(x))
        assert torch.equal(DefendedEdge(edge, [parse_defense("gaussian:features:0")])(x), edge(x))
    assert describe([]) == "none"


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("dropout:features:0.5", Dropout(0.5, location="features")),
        ("gaussian:input:1:relative", GaussianNoise(1.0, location="input", relative=True)),
        ("dropout:features:0.5:rescale", Dropout(0.5, location="features", rescale=True)),
        ("laplace:features:2", LaplaceNoise(2.0, location="features")),
        ("gaussian:features:0.25", GaussianNoise(0.25)),
    ],
)
def test_parse_defense_accepts(spec, expected):
    assert parse_defense(spec) == expected


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("foo:features:1", ["'foo'", "gaussian", "laplace", "dropout"]),
        ("dropout:middle:0.5", ["dropout:middle:0.5", "input|features"]),
        ("dropout:features:abc", ["'abc'", "a number"]),
        ("dropout:features", ["dropout:features"]),
        ("dropout", ["'dropout'"]),
    ],
)
def test_parse_defense_rejects(spec, names):
    with pytest.raises(UnknownNameError) as info:
        parse_defense(spec)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize("spec", ["dropout:features:0.5:rescaled", "gaussian:features:1:rescale"])
def test_parse_defense_rejects_unknown_flags(spec):
    with pytest.raises(UnknownNameError):
        parse_defense(spec)


def test_parse_family_reads_levels_and_flags():
    family = parse_family("dropout:features:0.3,0.5:rescale")
    assert (family.family, family.location, family.levels) == ("dropout", "features", (0.3, 0.5))
    assert family.rescale and not family.relative
    assert family.spec(0.0) == () and family.spec(0.5) == ("dropout:features:0.5:rescale",)
    with pytest.raises(UnknownNameError):
        parse_family("dropout:middle:0.5")


def test_parse_family_rejects_a_bad_level_as_a_user_error():
    with pytest.raises(UnknownNameError, match="abc"):
        parse_family("dropout:features:0.5,abc")


# -- accuracy cost ------------------------------------------------------------------------


def test_defended_accuracy_without_defenses_is_the_plain_accuracy(mnist_victim):
    x, y = mnist_victim.normalize(mnist_victim.test), mnist_victim.test.labels
    with torch.no_grad():
        plain = int((mnist_victim.model(x).argmax(1) == y).sum()) / len(y)
    for split in ("conv1", "ReLU2", "fc2act"):
        values = defended_accuracy(mnist_victim, split=split, defenses=(), draws=3)
        assert values == [plain]  # one draw: the undefended model is deterministic
    assert plain == mnist_victim.meta["test_accuracy"]


def test_heavy_feature_dropout_costs_accuracy(mnist_victim):
    plain = defended_accuracy(mnist_victim, split="ReLU2", defenses=())[0]
    values = defended_accuracy(
        mnist_victim, split="ReLU2", defenses=("dropout:features:0.9",), draws=2
    )
    assert len(values) == 2
    assert max(values) < plain - 0.1, (plain, values)
    assert values == defended_accuracy(
        mnist_victim, split="ReLU2", defenses=("dropout:features:0.9",), draws=2
    )  # seeded


# -- the defense-aware attack -------------------------------------------------------------


def test_defense_aware_attack_inverts_feature_dropout(mnist_victim):
    # An over-complete linear edge: 2352 random projections of 784 pixels. Half of them
    # survive dropout at r = 0.5, still ~1.5x more equations than unknowns, so matching only
    # the kept features recovers x; matching the zeros too pulls x towards zero.
    pixels = mnist_victim.test.subset(range(8)).to_float()
    layer = nn.Linear(784, 2352, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2352, 784, generator=gen(0)) / 28)
    edge = nn.Sequential(nn.Flatten(), layer)
    with torch.no_grad():
        z = DefendedEdge(edge, [Dropout(0.5)], seed=0)(MNIST_SPEC.normalization.normalize(pixels))
    assert float((z == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    access = WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(2352,))
    scores = {}
    for aware in (False, True):
        attack = WhiteBoxInversion(steps=250, lr=0.05, ignore_zero_features=aware).fit(access)
        scores[aware] = float(psnr(attack.reconstruct(z).images, pixels).mean())
    assert scores[True] > 40, scores
    assert scores[True] > scores[False] + 10, scores
