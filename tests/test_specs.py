"""Typed attack settings: shipped presets are valid, overrides are checked, fit comes first."""

from __future__ import annotations

import pytest
import torch

from splitleak.attacks import settings as presets
from splitleak.attacks.factory import applicable_overrides, attack_settings, check_study_overrides
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.registry import ATTACKS
from splitleak.attacks.specs import InversionSpec, TrainingSpec, validate_spec
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.config import AttackConfig
from splitleak.errors import NotFittedError, SplitleakError
from splitleak.models import split_points
from splitleak.models.zoo import ARCHITECTURES

SPLITS = {name: split_points(arch.build()) for name, arch in ARCHITECTURES.items()}


@pytest.mark.parametrize("table", ["whitebox", "surrogate"])
def test_every_inversion_preset_is_a_valid_spec_at_every_split(table):
    for profile in presets.profiles(table):
        for arch, splits in SPLITS.items():
            for split in splits:
                values = presets.resolve(profile, architecture=arch, split=split, attack=table)
                validate_spec(InversionSpec, values, where=f"{table}:{profile}:{arch}:{split}")


def test_every_training_preset_is_a_valid_spec():
    for profile in presets.profiles("training"):
        values = presets.resolve(
            profile, architecture="mnist-net", split="ReLU2", attack="training"
        )
        validate_spec(TrainingSpec, values, where=profile)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"steps": "abc"}, "steps"),
        ({"steps": -1}, "greater than or equal to 0"),
        ({"lr": float("nan")}, "finite"),
        ({"lr": 0}, "greater than 0"),
        ({"init": "white"}, "one of mean, black"),
        ({"tv_weigth": 1}, "valid: steps, lr, tv_weight"),
        ({"cosine": "yes"}, "cosine"),
    ],
)
def test_bad_inversion_values_are_refused_with_the_rule(values, needle):
    with pytest.raises(SplitleakError, match=needle):
        validate_spec(InversionSpec, values, where="--set")


def test_an_integer_is_a_valid_float_but_not_the_other_way():
    assert validate_spec(InversionSpec, {"lr": 1}, where="x").lr == 1.0  # type: ignore[attr-defined]
    with pytest.raises(SplitleakError):
        validate_spec(InversionSpec, {"steps": 2.5}, where="x")


def test_overrides_go_to_the_primary_section_or_the_named_one():
    cfg = AttackConfig(attack="shadow", overrides={"steps": 7, "training": {"lr": 5e-4}})
    settings = attack_settings(cfg, architecture="mnist-net")
    assert settings["inversion"]["steps"] == 7 and settings["training"]["lr"] == 5e-4
    with pytest.raises(SplitleakError, match="has no training settings"):
        attack_settings(
            AttackConfig(overrides={"training": {"lr": 1e-4}}), architecture="mnist-net"
        )


def test_a_study_keeps_only_the_overrides_each_attack_takes():
    shared = {"steps": 20, "training": {"lr": 1e-4}}
    assert applicable_overrides(shared, "whitebox") == {"steps": 20}
    assert applicable_overrides(shared, "inverse-network") == {"training": {"lr": 1e-4}}
    assert applicable_overrides(shared, "shadow") == shared
    check_study_overrides({"steps": 20}, ["whitebox", "inverse-network"])
    with pytest.raises(SplitleakError, match="none of the attacks"):
        check_study_overrides({"steps": 20}, ["inverse-network"])


def test_every_registered_attack_has_a_known_threat_model():
    assert {e.threat_model for e in ATTACKS.values()} <= {
        "white-box", "black-box", "query-free", "data-free",
    }  # fmt: skip
    assert AttackConfig(attack="whitebox").attack == "whitebox"
    with pytest.raises(SplitleakError, match="valid: whitebox"):
        AttackConfig(attack="gan")


@pytest.mark.parametrize(
    "attack", [WhiteBoxInversion(steps=1), InverseNetwork(epochs=1)], ids=["whitebox", "decoder"]
)
def test_reconstruct_before_fit_is_a_clear_error(attack):
    with pytest.raises(NotFittedError, match="before reconstruct"):
        attack.reconstruct(torch.zeros(1, 8, 24, 24))
