"""Typed, strict run configurations (unknown keys are an error).

Layering: field defaults < profile preset < ``--config FILE`` < ``--set key=value`` <
explicit flags, resolved in one place (:mod:`splitleak.layering`); the resolved
configuration is saved with every result. Attack hyperparameters (``overrides``) are
checked against the attack's typed spec (:mod:`splitleak.attacks.specs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from splitleak.compute import Compute

AttackerData = Literal["same-set", "same-distribution", "other-distribution", "noise"]
ShadowArch = Literal["same", "different"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComputeSettings(Strict):
    """Where a run computes (see :mod:`splitleak.compute`); recorded, resolved, with results."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = Field(None, ge=1)  # None: $SPLITLEAK_THREADS, else the usable cores

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    def resolve(self) -> Compute:
        """The :class:`~splitleak.compute.Compute` for this machine (errors if unavailable)."""
        from splitleak.compute import Compute

        return Compute.resolve(self.device, self.precision, self.threads)


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
    download: bool = False  # fetch missing files into an explicit data_dir (else: never)
    checkpoint: Path | None = None  # a checkpoint directory; None: train or reuse from cache
    cache_dir: Path | None = None
    train: TrainSettings = TrainSettings()

    @property
    def may_download(self) -> bool:
        """Whether missing dataset files may be fetched: never into an explicit data_dir
        unless ``download`` is set; always into the cache folder."""
        return self.download or self.data_dir is None


class AttackConfig(Strict):
    """One attack run: victim, split point, attack and its settings, evaluation protocol."""

    victim: VictimConfig = VictimConfig()
    split: str = "ReLU2"
    attack: str = "whitebox"  # a name in splitleak.attacks.registry.ATTACKS
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
    compute: ComputeSettings = ComputeSettings()

    @field_validator("attack")
    @classmethod
    def _attack_known(cls, value: str) -> str:
        from splitleak.attacks.registry import get_attack

        get_attack(value)  # raises an error listing the valid attacks
        return value

    @field_validator("defenses")
    @classmethod
    def _defenses_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Fail at configuration time, before any training, on a bad defense spec.
        from splitleak.defenses import parse_defense

        for text in value:
            parse_defense(text)
        return value
