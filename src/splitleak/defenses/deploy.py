"""Deploying defenses, including those that train before they can be used.

Most defenses only perturb a tensor (:class:`~splitleak.defenses.base.Defense`). Some must
first learn something from the victim and its training set: a learned perturbation, a
clipping norm, a fine-tuned cloud part f2, or a whole victim retrained with a privacy
penalty. Such a defense is :class:`Trainable`: it has a ``stage`` and a ``prepare(context)``
method, and :func:`deploy` calls it with a :class:`DefenseContext` holding exactly what it
may use — the victim cut at the split, the victim's training set, a cache keyed by the
victim checkpoint and split point, and the other defenses of the deployment.

Stages run in order, because later ones depend on earlier ones:

* ``0`` — the whole model is replaced (NoPeek retrains edge and cloud);
* ``1`` — the defense learns its own parameters on the deployed edge (learned noise, a
  clipping norm calibrated on training features);
* ``2`` — the cloud part is replaced, trained under every other defense (fine-tuning).

:class:`Deployment` is what the edge and the cloud then run: the deployed edge and cloud
parts, the :class:`DefendedEdge` around the edge, the prepared defenses and what each
training cost (seconds, epochs, whether it came from the cache). Accuracy and attacks must
use ``deployment.cloud``: after fine-tuning or NoPeek it is not the victim's f2.

Shapes: see :class:`TrainingData`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from splitleak.attacks.cache import ModuleCache
from splitleak.defenses.base import DefendedEdge, Defense
from splitleak.models.split import SplitModel, split_model, split_points

STAGES = (0, 1, 2)


@dataclass(frozen=True)
class TrainingData:
    """The victim's training set as the defender holds it.

    Shapes: inputs (N, C, H, W) normalised as the edge expects, labels (N,) int64.
    """

    inputs: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class DefenseContext:
    """What a :class:`Trainable` defense may use to prepare itself.

    Attributes:
        parts: the deployed model cut at the split so far (after NoPeek if it ran).
        data: the victim's training set (loaded on first use).
        defenses: every defense of the deployment, those of earlier stages prepared.
        cache: stores trained state as safetensors, keyed by victim checkpoint and split.
    """

    parts: SplitModel
    data: Callable[[], TrainingData]
    defenses: tuple[Defense, ...]
    cache: ModuleCache

    @property
    def split(self) -> str:
        return self.parts.at


@dataclass(frozen=True)
class Prepared:
    """A prepared defense and what it replaced; ``cost`` records its training."""

    defense: Defense
    model: nn.Module | None = None  # a whole new model (edge and cloud)
    cloud: nn.Module | None = None  # a new cloud part
    cost: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Trainable(Protocol):
    """A defense that must be prepared on the victim before :meth:`Defense.apply` works."""

    @property
    def stage(self) -> int: ...

    def prepare(self, context: DefenseContext) -> Prepared: ...


def needs_preparation(defense: Defense) -> bool:
    """Whether :func:`deploy` has to call ``prepare`` on ``defense``."""
    return isinstance(defense, Trainable) and getattr(defense, "stage", None) in STAGES


def is_stochastic(defense: Defense) -> bool:
    """Whether the defense draws fresh randomness per call (level 0 is the identity)."""
    return bool(getattr(defense, "stochastic", True)) and defense.level != 0


def replaced_part(defense: Defense) -> str | None:
    """``"model"`` or ``"cloud"`` if the defense replaces that part of the victim, else None."""
    part = getattr(defense, "replaces", None)
    return part if part in ("model", "cloud") else None


@dataclass
class Deployment:
    """What is deployed: parts, defended edge, prepared defenses, training costs."""

    parts: SplitModel
    defended: DefendedEdge
    defenses: list[Defense]
    training: list[dict[str, Any]]

    @property
    def edge(self) -> nn.Module:
        return self.parts.edge

    @property
    def cloud(self) -> nn.Module:
        return self.parts.cloud

    @property
    def stochastic(self) -> bool:
        return any(is_stochastic(d) for d in self.defenses)

    def edge_parameters(self) -> int:
        """Parameters the defenses add to the edge (e.g. a learned perturbation)."""
        return sum(int(getattr(d, "edge_parameters", 0)) for d in self.defenses)


def deploy(
    model: nn.Module,
    split: str,
    defenses: Sequence[Defense],
    *,
    data: Callable[[], TrainingData],
    cache: ModuleCache,
    seed: int = 0,
) -> Deployment:
    """Cut ``model`` at ``split`` and prepare every defense, stage by stage.

    Args:
        model: the victim (never modified: defenses that retrain work on copies).
        split: the split point.
        defenses: applied in order by the defended edge; trainable ones are prepared.
        data: returns the victim's training set; called at most once, and only if a
            defense needs it.
        cache: where trained state is stored; its target names the victim and split.
        seed: seed of the defended edge's random generator (the defense draws).
    """
    parts = split_model(model, at=split)
    prepared = list(defenses)
    training: list[dict[str, Any]] = []
    loaded: list[TrainingData] = []

    def once() -> TrainingData:
        if not loaded:
            loaded.append(data())
        return loaded[0]

    for stage in STAGES:
        for i, defense in enumerate(prepared):
            target, wrapper = defense, None
            inner = getattr(defense, "inner", None)  # a wrapper (fine-tuning) may hold one
            if inner is not None and needs_preparation(inner) and inner.stage == stage:
                target, wrapper = inner, defense
            elif not needs_preparation(defense) or getattr(defense, "stage", None) != stage:
                continue
            context = DefenseContext(parts, once, tuple(prepared), cache)
            out = target.prepare(context)  # type: ignore[attr-defined]
            if wrapper is None:
                prepared[i] = out.defense
            else:
                prepared[i] = dataclasses.replace(wrapper, inner=out.defense)  # type: ignore[type-var]
            if out.model is not None:
                parts = split_model(out.model, at=split)
                # Everything trained after this stage depends on the new model.
                cache = ModuleCache(
                    cache.directory, {**cache.target, "model": out.defense.describe()}
                )
            if out.cloud is not None:
                parts = SplitModel(edge=parts.edge, cloud=out.cloud, at=split, full=parts.full)  # type: ignore[arg-type]
            if out.cost:
                training.append(out.cost)
    return Deployment(parts, DefendedEdge(parts.edge, prepared, seed=seed), prepared, training)


def next_layer(cloud: nn.Module) -> nn.Module:
    """The cloud part's first layer (up to its first split point), or all of it.

    Learned noise keeps this layer's output unchanged (the authors: pool1 -> conv2).
    """
    points = split_points(cloud)
    return split_model(cloud, at=points[0]).edge if points else cloud


def training_cost(
    family: str, *, seconds: float, epochs: int, images: int, reused: bool, **extra: Any
) -> dict[str, Any]:
    """The record every trained defense reports about its training."""
    return {
        "family": family,
        "seconds": round(seconds, 3),
        "epochs": epochs,
        "images": images,
        "reused": reused,
        **extra,
    }
