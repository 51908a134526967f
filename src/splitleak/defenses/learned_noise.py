"""Learned noise: one fixed perturbation of the features that the next layer does not see.

Source: the authors' released code (``noise_generation_opt.py`` of He, Zhang and Lee's
``Inverse_Collaborative_Inference``), not the papers. One perturbation n, shaped like one
feature tensor, is learned on the training set so that the cloud's next layer g gives the
same output with and without it, while n stays close to a reference Gaussian draw r of
standard deviation ``level``::

    min_n  MSE(g(z + n), g(z)) + λ·MSE(n, r),   z = f1(x) over training batches

The authors: n starts at ones, Adam (AMSGrad, eps 1e-3) at lr 0.1, λ = 1e-3, batch 32, one
epoch over the 60,000 MNIST training images; they sweep levels up to 1000 and log, at MNIST
pool1 (g = conv2), accuracy 0.991 / SSIM 0.212 at level 200 and 0.9886 / 0.090 at level 500
against their non-adaptive white-box attack.

At inference the edge sends ``z + n`` — the same n for every input, no fresh randomness.
An attacker who knows the defense (Kerckhoffs: n is a parameter of the deployed edge, like
its weights) subtracts it, so against a defense-aware attacker this defense hides nothing
that the undefended split does not; splitleak scores it both ways.

Spec: ``learned:features:LEVEL[:weight=λ][:epochs=E][:lr=η][:images=N][:seed=S]``.

Shapes: ``noise`` (1, *feature_shape); apply: (N, *feature_shape) -> same.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.defenses.base import Location
from splitleak.defenses.deploy import DefenseContext, Prepared, next_layer, training_cost
from splitleak.errors import NotFittedError, SplitleakError


class _Perturbation(nn.Module):
    """Holds the learned perturbation as a parameter, so the module cache can store it."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.noise = nn.Parameter(torch.ones(1, *shape))  # the authors start from ones


@dataclass(frozen=True)
class LearnedNoise:
    """Add one learned perturbation n (see module docstring); ``level`` = σ of the reference."""

    level: float
    location: Location = "features"
    weight: float = 1e-3
    epochs: int = 1
    lr: float = 0.1
    batch_size: int = 32
    images: int | None = None
    seed: int = 0
    noise: torch.Tensor | None = field(default=None, compare=False, repr=False)
    family: str = "learned"
    stage = 1
    stochastic = False

    def __post_init__(self) -> None:
        if self.location != "features":
            raise SplitleakError(
                "learned noise perturbs the split features only; use learned:features:LEVEL"
            )
        if self.level < 0 or self.weight <= 0 or self.epochs < 1 or self.lr <= 0:
            raise SplitleakError(
                "learned noise needs level >= 0, weight > 0, epochs >= 1 and lr > 0; "
                f"got level={self.level:g}, weight={self.weight:g}, epochs={self.epochs}, "
                f"lr={self.lr:g}"
            )

    @property
    def edge_parameters(self) -> int:
        return 0 if self.noise is None else self.noise.numel()

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.level == 0:
            return t
        if self.noise is None:
            raise NotFittedError(
                "learned noise is not trained yet; deploy it through the pipeline "
                "(splitleak attack/defend, or splitleak.experiment.deploy_defenses)"
            )
        return t + self.noise.to(t.dtype)

    def settings(self) -> dict[str, Any]:
        names = ("level", "weight", "epochs", "lr", "batch_size", "images", "seed")
        return {name: getattr(self, name) for name in names}

    def describe(self) -> dict[str, object]:
        return {"family": self.family, "location": self.location, **self.settings(), "symbol": "σ"}

    def prepare(self, context: DefenseContext) -> Prepared:
        """Learn n on the training features (cached by victim, split and settings)."""
        if self.level == 0:
            return Prepared(self)
        edge, head = context.parts.edge, next_layer(context.parts.cloud)
        data = context.data()
        x = data.inputs[: self.images] if self.images else data.inputs
        with torch.no_grad():
            shape = tuple(edge(x[:1]).shape[1:])
        started = time.perf_counter()

        def train(module: nn.Module, _resume: Path | None) -> dict[str, Any]:
            with torch.enable_grad():  # callers may run under no_grad (accuracy sweeps)
                history = _learn(module, edge, head, x, self._reference(shape), self)
            return {"loss_history": history, "train_seconds": time.perf_counter() - started}

        module, meta, reused = context.cache.get_or_train(
            "learned-noise", _Perturbation(shape), {"defense": self.settings()}, train
        )
        assert isinstance(module, _Perturbation)
        noise = module.noise.detach().clone()
        cost = training_cost(
            self.family,
            seconds=float(meta.get("train_seconds", 0.0)),
            epochs=self.epochs,
            images=len(x),
            reused=reused,
            level=self.level,
            final_loss=(meta.get("loss_history") or [None])[-1],
        )
        return Prepared(dataclasses.replace(self, noise=noise), cost=cost)

    def _reference(self, shape: tuple[int, ...]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return self.level * torch.randn((1, *shape), generator=generator)


def _learn(
    module: nn.Module,
    edge: nn.Module,
    head: nn.Module,
    x: torch.Tensor,
    reference: torch.Tensor,
    settings: LearnedNoise,
) -> list[float]:
    """The authors' optimisation; returns the mean loss per epoch."""
    assert isinstance(module, _Perturbation)
    noise = module.noise
    opt = torch.optim.Adam([noise], lr=settings.lr, eps=1e-3, amsgrad=True)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    frozen = [p.requires_grad for p in head.parameters()]
    head.requires_grad_(False)
    history = []
    try:
        for _ in range(settings.epochs):
            order = torch.randperm(len(x), generator=generator)
            total = 0.0
            for start in range(0, len(x), settings.batch_size):
                batch = x[order[start : start + settings.batch_size]]
                with torch.no_grad():
                    z = edge(batch)
                    target = head(z)
                loss = F.mse_loss(head(z + noise), target) + settings.weight * F.mse_loss(
                    noise, reference
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            history.append(total / len(x))
    finally:
        for p, flag in zip(head.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    return history
