"""Noise-aware fine-tuning: retrain the cloud part f2 on defended features.

An edge defense (noise, dropout, clipping, ...) costs accuracy because f2 was trained on
clean features. Fine-tuning a copy of f2 with cross-entropy on the victim's training set,
with every defense of the deployment drawing fresh randomness on each batch, lets it learn
to classify defended features, so a stronger defense keeps the accuracy. The edge is not
changed, so a white-box attacker is as strong as before; the query-free attacker now holds
the fine-tuned f2, which is the cloud's own model.

Spec: add the flag ``finetune`` (or ``finetune=EPOCHS``, default 2) to any defense, e.g.
``dropout:features:0.8:finetune=3`` or ``dp-gaussian:features:1000:finetune``; optional
``ft_lr=η`` (Adam, default 5e-4), ``ft_images=N`` (default all). The cloud is fine-tuned
once, under all the defenses of the list.

Shapes: apply delegates to the wrapped defense.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.defenses.base import DefendedEdge, Defense, Location
from splitleak.defenses.deploy import DefenseContext, Prepared, TrainingData, training_cost
from splitleak.errors import SplitleakError


@dataclass(frozen=True)
class FineTuned:
    """``inner`` applied as usual, with the cloud part fine-tuned under the defenses."""

    inner: Defense
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 64
    images: int | None = None
    seed: int = 0
    stage = 2
    replaces = "cloud"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0:
            raise SplitleakError(
                f"finetune needs epochs >= 1 and ft_lr > 0, got {self.epochs} and {self.lr:g}"
            )

    @property
    def family(self) -> str:
        return self.inner.family

    @property
    def location(self) -> Location:
        return self.inner.location

    @property
    def level(self) -> float:
        return self.inner.level

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.inner, "stochastic", True))

    @property
    def edge_parameters(self) -> int:
        return int(getattr(self.inner, "edge_parameters", 0))

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.inner.apply(t, generator)

    def settings(self) -> dict[str, Any]:
        names = ("epochs", "lr", "batch_size", "images", "seed")
        return {name: getattr(self, name) for name in names}

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "finetune": self.settings()}

    def prepare(self, context: DefenseContext) -> Prepared:
        """Fine-tune a copy of the cloud under every defense (cached)."""
        cloud: nn.Module = copy.deepcopy(context.parts.cloud)
        defended = DefendedEdge(context.parts.edge, list(context.defenses), seed=self.seed + 1)
        data = context.data()
        if self.images:
            data = TrainingData(data.inputs[: self.images], data.labels[: self.images])
        started = time.perf_counter()

        def train(module: nn.Module, _resume: Path | None) -> dict[str, Any]:
            with torch.enable_grad():  # callers may run under no_grad (accuracy sweeps)
                history = _fine_tune(module, defended, data, self)
            return {"loss_history": history, "train_seconds": time.perf_counter() - started}

        settings = {"finetune": self.settings(), "under": [d.describe() for d in context.defenses]}
        cloud, meta, reused = context.cache.get_or_train("finetuned-cloud", cloud, settings, train)
        cloud.eval().requires_grad_(False)
        cost = training_cost(
            f"{self.family}+finetune",
            seconds=float(meta.get("train_seconds", 0.0)),
            epochs=self.epochs,
            images=len(data.labels),
            reused=reused,
            final_loss=(meta.get("loss_history") or [None])[-1],
        )
        return Prepared(self, cloud=cloud, cost=cost)


def _fine_tune(
    cloud: nn.Module, defended: nn.Module, data: TrainingData, settings: FineTuned
) -> list[float]:
    """Adam on cross-entropy of ``cloud(defended(x))``; the edge stays frozen."""
    cloud.train().requires_grad_(True)
    opt = torch.optim.Adam(cloud.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(data.labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            with torch.no_grad():
                z = defended(data.inputs[idx])  # fresh defense draws on every batch
            loss = F.cross_entropy(cloud(z), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(order))
    cloud.eval()
    return history
