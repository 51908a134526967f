"""NoPeek: train the victim so that the split features carry little of the input's geometry.

Paper: P. Vepakomma, O. Gupta, A. Dubey, R. Raskar, "Reducing leakage in distributed deep
learning for sensitive health data" (ICLR AI for social good workshop, 2019) and
"NoPeek: Information leakage reduction to share activations in distributed deep
learning" (2020). The training loss adds the distance correlation between each batch's
inputs x and split features z to the cross-entropy::

    loss = CE(f2(f1(x)), y) + alpha·dCor(x, z)

where dCor (Székely, Rizzo and Bakirov, 2007) is 0 for independent samples and 1 when z is
a similarity transform of x. It replaces the whole victim, edge and cloud; there is no
randomness at inference, so a white-box attacker inverts the NoPeek edge itself.

splitleak starts from the victim's weights and trains a copy for a few epochs (CPU budget);
the flag ``scratch`` re-initialises it first, as in the paper.

Spec: ``nopeek:features:ALPHA[:epochs=2][:lr=1e-3][:images=N][:seed=S][:scratch]``.

Shapes: distance_correlation x (n, ...), z (n, ...) -> scalar.
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

from splitleak.defenses.base import Location
from splitleak.defenses.deploy import DefenseContext, Prepared, TrainingData, training_cost
from splitleak.errors import SplitleakError
from splitleak.models.split import split_model


def _centred_distances(t: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix of the rows of ``t``. Shapes: (n, d) -> (n, n)."""
    sq = t.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp_min(0)
    off = 1 - torch.eye(len(t), dtype=t.dtype, device=t.device)
    d = torch.sqrt(d2 * off + (1 - off)) * off  # exact zeros, finite gradients on the diagonal
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation of paired rows (the V-statistic; differentiable).

    ``dCor² = dCov²(x, z) / sqrt(dVar²(x)·dVar²(z))`` with ``dCov² = mean(A ∘ B)`` over the
    double-centred distance matrices A and B; 0 if either sample is constant.

    Shapes: x (n, ...), z (n, ...) -> () in [0, 1].
    """
    if len(x) != len(z) or len(x) < 2:
        raise SplitleakError(
            f"distance correlation needs n >= 2 paired rows, got {len(x)}, {len(z)}"
        )
    a = _centred_distances(x.flatten(1))
    b = _centred_distances(z.flatten(1).to(a.dtype))
    dcov = (a * b).mean()
    dvar = (a * a).mean() * (b * b).mean()
    if float(dvar.detach()) <= 0:
        return torch.zeros((), dtype=a.dtype)
    return (dcov.clamp_min(0) / dvar.sqrt()).sqrt()


@dataclass(frozen=True)
class NoPeek:
    """Retrain the victim with a distance-correlation penalty at the split; ``level`` = alpha."""

    level: float
    location: Location = "features"
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    images: int | None = None
    seed: int = 0
    scratch: bool = False
    family: str = "nopeek"
    stage = 0
    replaces = "model"
    stochastic = False

    def __post_init__(self) -> None:
        if self.location != "features":
            raise SplitleakError("NoPeek penalises the split features; use nopeek:features:ALPHA")
        if self.level < 0 or self.epochs < 1 or self.lr <= 0:
            raise SplitleakError(
                f"nopeek needs alpha >= 0, epochs >= 1 and lr > 0; got {self.level:g}, "
                f"{self.epochs}, {self.lr:g}"
            )

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return t  # the defense is in the retrained weights

    def settings(self) -> dict[str, Any]:
        names = ("level", "epochs", "lr", "batch_size", "images", "seed", "scratch")
        return {name: getattr(self, name) for name in names}

    def describe(self) -> dict[str, object]:
        return {
            "family": self.family,
            "location": self.location,
            **self.settings(),
            "symbol": "alpha",
        }

    def prepare(self, context: DefenseContext) -> Prepared:
        """Train a copy of the victim with the penalty (cached by victim, split, settings)."""
        model = copy.deepcopy(context.parts.full)
        if self.scratch:
            torch.manual_seed(self.seed)
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        data = context.data()
        if self.images:
            data = TrainingData(data.inputs[: self.images], data.labels[: self.images])
        started = time.perf_counter()

        def train(module: nn.Module, _resume: Path | None) -> dict[str, Any]:
            with torch.enable_grad():  # callers may run under no_grad (accuracy sweeps)
                history = _train(module, context.split, data, self)
            return {**history, "train_seconds": time.perf_counter() - started}

        model, meta, reused = context.cache.get_or_train(
            "nopeek-model", model, {"defense": self.settings()}, train
        )
        model.eval().requires_grad_(False)
        cost = training_cost(
            self.family,
            seconds=float(meta.get("train_seconds", 0.0)),
            epochs=self.epochs,
            images=len(data.labels),
            reused=reused,
            final_loss=(meta.get("loss_history") or [None])[-1],
            final_dcor=(meta.get("dcor_history") or [None])[-1],
        )
        return Prepared(self, model=model, cost=cost)


def _train(model: nn.Module, split: str, data: TrainingData, settings: NoPeek) -> dict[str, Any]:
    """Adam on CE + alpha·dCor(x, z) over shuffled batches; returns per-epoch means."""
    parts = split_model(model, at=split)  # shares the copy's parameters
    model.train().requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    losses, dcors = [], []
    for _ in range(settings.epochs):
        order = torch.randperm(len(data.labels), generator=generator)
        total = total_dcor = 0.0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            if len(idx) < 2:
                continue
            x = data.inputs[idx]
            z = parts.edge(x)
            dcor = distance_correlation(x, z)
            loss = F.cross_entropy(parts.cloud(z), data.labels[idx]) + settings.level * dcor
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            total_dcor += float(dcor.detach()) * len(idx)
        losses.append(total / len(order))
        dcors.append(total_dcor / len(order))
    model.eval()
    return {"loss_history": losses, "dcor_history": dcors}
