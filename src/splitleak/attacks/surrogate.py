"""What the two shadow-edge attacks share: train a surrogate f1', then invert it white-box."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitleak.attacks.access import InputSpec
from splitleak.attacks.base import Reconstruction
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.fitting import TrainedAttackMixin
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.compute import CPU_FP32, Compute
from splitleak.data.splits import AttackerSamples
from splitleak.errors import NotFittedError


class SurrogateInversion(TrainedAttackMixin):
    """Base class: hyperparameters, caching of the trained shadow, and the final inversion.

    Args:
        shadow: the untrained shadow edge (its structure is the attacker's choice).
        shadow_kind: ``same`` or ``different`` (recorded; part of the cache key).
        inversion: :class:`WhiteBoxInversion` hyperparameters for the final step.
        epochs, lr, halve_every, batch_size, amsgrad, adam_eps, shuffle: shadow training
            (the authors: 50 epochs, Adam lr 1e-3; :class:`~splitleak.attacks.specs.TrainingSpec`).
        cache: where trained shadows are stored and reused.
        seed: shuffling (the shadow's initialisation is the caller's).
    """

    name = "surrogate"

    def __init__(
        self,
        *,
        shadow: nn.Module,
        shadow_kind: str = "same",
        inversion: dict[str, Any],
        epochs: int = 50,
        lr: float = 1e-3,
        halve_every: int = 10,
        batch_size: int = 128,
        amsgrad: bool = False,
        adam_eps: float = 1e-8,
        shuffle: bool = True,
        cache: ModuleCache | None = None,
        seed: int = 0,
        progress: bool = False,
        compute: Compute = CPU_FP32,
    ) -> None:
        self.shadow, self.shadow_kind, self.inversion = shadow, shadow_kind, dict(inversion)
        self.cache = cache
        self._set_training(
            epochs=epochs, lr=lr, halve_every=halve_every, batch_size=batch_size,
            amsgrad=amsgrad, adam_eps=adam_eps, shuffle=shuffle, seed=seed,
            progress=progress, compute=compute,
        )  # fmt: skip

    def _train_shadow(
        self,
        kind: str,
        data: AttackerSamples,
        inputs: InputSpec,
        feature_shape: tuple[int, ...],
        train: Callable[[nn.Module, Path | None], dict[str, Any]],
    ) -> None:
        cache = self.cache or ModuleCache(None, {})
        # What the shadow is trained with (its structure included: an edited shadow net is
        # never reused), not how it is inverted afterwards: one trained shadow serves every
        # inversion setting. Shadows stored before keyed by the inversion too (legacy key).
        known = {"data": data.describe(), "net": repr(self.shadow)}
        settings = {"shadow": self.shadow_kind, **self.training_hyperparameters(), **known}
        self.shadow_, self.meta_, self.reused_ = cache.get_or_train(
            f"{kind}-{self.shadow_kind}",
            self.shadow,
            settings,
            train,
            legacy_settings={**self.hyperparameters(), **known},
        )
        self.shadow_.requires_grad_(False)
        self.inverter_ = WhiteBoxInversion(
            **self.inversion, progress=self.progress, compute=self.compute
        )
        self.inverter_._bind(self.shadow_, inputs, feature_shape)

    def reconstruct(self, z: torch.Tensor) -> Reconstruction:
        """White-box inversion of the trained shadow edge."""
        if not hasattr(self, "inverter_"):
            raise NotFittedError("call fit(access, data) before reconstruct(z)")
        rec = self.inverter_.reconstruct(z)
        history = self.meta_.get("loss_history") or [None]
        rec.info.update(
            {
                "shadow_reused": self.reused_,
                "shadow_final_loss": history[-1],
                "shadow_loss_history": history,  # per epoch: the convergence record
                "shadow_train_seconds": self.meta_.get("train_seconds"),
                "shadow_resumed_from_epoch": self.meta_.get("resumed_from_epoch"),
                "shadow_train_accuracy": self.meta_.get("train_accuracy"),
            }
        )
        return rec

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "shadow": self.shadow_kind,
            **self.training_hyperparameters(),
            "inversion": self.inversion,
        }
