"""Typed, strict run configurations (unknown keys are an error).

Layering: field defaults < profile preset < config file < command line; the resolved
configuration is saved with every result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AttackName = Literal["whitebox", "inverse-network", "model-reconstruction", "shadow"]
AttackerData = Literal["same-set", "same-distribution", "other-distribution", "noise"]
ShadowArch = Literal["same", "different"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(Strict):
    """How the victim network is trained (the authors' recipe by default)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_train_images: int | None = Field(None, ge=1)
    augment: bool | None = None  # None: on for CIFAR-10, off otherwise
    seed: int = 0  # the victim's own seed, separate from the attack's (checkpoints are reused)


class VictimConfig(Strict):
    """The target: a network, the data it was trained on, and where its checkpoint lives."""

    model: str = "mnist-net"
    dataset: str | None = None  # None: the architecture's own dataset
    data_dir: Path | None = None
    checkpoint: Path | None = None  # a checkpoint directory; None: train or reuse from cache
    cache_dir: Path | None = None
    train: TrainSettings = TrainSettings()


class AttackConfig(Strict):
    """One attack run: victim, split point, attack and its settings, evaluation protocol."""

    victim: VictimConfig = VictimConfig()
    split: str = "ReLU2"
    attack: AttackName = "whitebox"
    profile: str = "paper"
    overrides: dict[str, Any] = Field(default_factory=dict)
    attacker_data: AttackerData = "same-distribution"
    attacker_samples: int | None = Field(None, ge=1)
    other_dataset: str = "kmnist"
    shadow_arch: ShadowArch = "same"
    query_budget: int | None = Field(None, ge=1)
    decoder: Literal["paper", "auto"] = "paper"
    attack_epochs: int = Field(50, ge=1)  # decoder / shadow training (the authors: 50)
    attack_batch_size: int = Field(128, ge=1)
    surrogate_inversion: Literal["surrogate", "whitebox"] | None = None  # None: per attack
    defenses: tuple[str, ...] = ()  # "family:input|features:level[:relative|:rescale]"
    adaptive: bool = False  # the attacker knows the defense (queries / inverts through it)
    protocol: Literal["paper", "random"] = "paper"
    n_eval: int = Field(100, ge=1)
    seed: int = 0

    @field_validator("defenses")
    @classmethod
    def _defenses_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Fail at configuration time, before any training, on a bad defense spec.
        from splitleak.defenses import parse_defense

        for text in value:
            parse_defense(text)
        return value
