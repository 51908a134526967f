"""What each attacker may touch: the threat model (SPEC §2) as types.

An attack never receives the split model. It receives one of

* :class:`WhiteBoxAccess` – the edge part itself (structure and weights);
* :class:`QueryAccess` – a counted oracle ``z = f1(x)`` with an optional query budget;
* :class:`TailAccess` – the cloud part ``f2`` only (the query-free attacker).

All three carry :class:`InputSpec`, the input format every attacker knows (image shape and
the normalisation the edge expects), and the feature shape the cloud receives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from splitleak.errors import AccessError, InputError, QueryBudgetExceeded
from splitleak.models.normalization import Normalization


@dataclass(frozen=True)
class InputSpec:
    """The public input format: (C, H, W) pixels in [0, 1], normalised before the edge."""

    shape: tuple[int, int, int]
    normalization: Normalization


def _frozen(module: nn.Module) -> nn.Module:
    # A frozen private copy: granting access never changes the victim's own parameters
    # (their requires_grad flags, their device, their gradients).
    module = copy.deepcopy(module).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass(frozen=True)
class WhiteBoxAccess:
    """The attacker holds the edge part f1 (structure and weights)."""

    edge: nn.Module
    inputs: InputSpec
    feature_shape: tuple[int, ...]
    kind: str = field(default="white-box", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge", _frozen(self.edge))

    @property
    def queries_used(self) -> int:
        return 0


class QueryAccess:
    """A black-box oracle for the edge part that counts every query and enforces a budget.

    Args:
        edge: the edge part; kept private (it is not an attribute an attack should read).
        inputs: the public input format.
        feature_shape: shape of one feature tensor (without the batch dimension).
        budget: the maximum number of inputs the attacker may submit (None = unlimited).
    """

    kind = "black-box"

    def __init__(
        self,
        edge: nn.Module,
        *,
        inputs: InputSpec,
        feature_shape: tuple[int, ...],
        budget: int | None = None,
    ) -> None:
        self.__edge = _frozen(edge)  # name-mangled: reading it is a deliberate act
        self.inputs = inputs
        self.feature_shape = feature_shape
        self.budget = budget
        self.queries_used = 0

    def charge(self, n: int) -> None:
        """Count ``n`` queries, refusing them if they exceed the budget.

        Attacks call this when they reuse a cached model trained on the same queries, so
        the budget and the count are the same as if they had queried again.
        """
        if self.budget is not None and self.queries_used + n > self.budget:
            raise QueryBudgetExceeded(
                f"query budget of {self.budget} exceeded ({self.queries_used} used, "
                f"{n} more asked); raise --query-budget or use fewer attacker samples"
            )
        self.queries_used += n

    @torch.no_grad()
    def query(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Features of normalised inputs ``x``.  Shapes: (N, C, H, W) -> (N, *feature_shape)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.inputs.shape:
            raise InputError(
                f"queries must have shape (N, {self.inputs.shape}), got {tuple(x.shape)}"
            )
        self.charge(len(x))
        return torch.cat([self.__edge(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@dataclass(frozen=True)
class TailAccess:
    """The query-free attacker: only the cloud part f2 (which it runs itself).

    ``defenses`` are the edge defenses a defense-aware attacker knows (the mechanism and
    its parameters, not its future random draws); its shadow is then trained through
    ``f2 ∘ defenses``. Empty: the attacker ignores any defense.
    """

    cloud: nn.Module
    inputs: InputSpec
    feature_shape: tuple[int, ...]
    defenses: tuple[Any, ...] = ()
    kind: str = field(default="query-free", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cloud", _frozen(self.cloud))

    @property
    def queries_used(self) -> int:
        return 0


Access = WhiteBoxAccess | QueryAccess | TailAccess


def require(access: Any, allowed: tuple[type, ...], attack: str) -> None:
    """Refuse access an attack's threat model does not allow, naming what it needs."""
    if not isinstance(access, allowed):
        names = " or ".join(t.__name__ for t in allowed)
        raise AccessError(f"{attack} needs {names}, got {type(access).__name__}")
