"""What each attacker may touch: the threat model (SPEC §2) as types.

An attack never receives the split model. It receives one of

* :class:`WhiteBoxAccess` – the edge part itself (structure and weights);
* :class:`QueryAccess` – a counted oracle ``z = f1(x)`` with an optional query budget;
* :class:`TailAccess` – the cloud part ``f2`` only (the query-free attacker);
* :class:`StructureAccess` – f1's architecture only: fresh, untrained copies of the edge
  (the data-free attacker; no weights, no queries, no data).

All of them carry :class:`InputSpec`, the input format every attacker knows (image shape and
the normalisation the edge expects), and the feature shape the cloud receives.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
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
    def query(
        self,
        x: torch.Tensor,
        *,
        batch_size: int = 1024,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """Features of normalised inputs ``x``, in ``dtype`` (default: the edge's output dtype).

        Computed in batches into one tensor (:func:`features_in_batches`); ``channels_last``
        stores image-shaped features in that layout (for a decoder trained channels_last).

        Shapes: (N, C, H, W) -> (N, *feature_shape).
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.inputs.shape:
            raise InputError(
                f"queries must have shape (N, {self.inputs.shape}), got {tuple(x.shape)}"
            )
        self.charge(len(x))
        return features_in_batches(
            self.__edge, x, batch_size=batch_size, dtype=dtype, channels_last=channels_last
        )


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


class StructureAccess:
    """The data-free attacker: it knows f1's architecture, not its weights, and has no data.

    It can only ask for :meth:`fresh_edge`, a new copy of the edge's structure with freshly
    drawn weights (every parameter re-initialised from a seed). The template it copies is
    re-initialised when the access is granted, so the victim's weights are never reachable
    from this object.

    Args:
        build_edge: builds the edge's structure; its weights are re-initialised anyway.
        inputs: the public input format.
        feature_shape: shape of one feature tensor (without the batch dimension).
    """

    kind = "data-free"
    queries_used = 0

    def __init__(
        self,
        build_edge: Callable[[], nn.Module],
        *,
        inputs: InputSpec,
        feature_shape: tuple[int, ...],
    ) -> None:
        self.__template = reinitialised(build_edge(), seed=0)  # no victim weights inside
        self.inputs = inputs
        self.feature_shape = feature_shape

    def fresh_edge(self, *, seed: int) -> nn.Module:
        """A copy of f1's structure with weights drawn from ``seed`` (trainable, eval mode)."""
        return reinitialised(self.__template, seed=seed)


def reinitialised(module: nn.Module, *, seed: int) -> nn.Module:
    """A deep copy of ``module`` whose every parameter and buffer is drawn afresh.

    Layers with ``reset_parameters`` (convolutions, linear layers, batch norm) use their
    own initialisation; any other parameter is drawn from N(0, 0.02²) and any other floating
    buffer zeroed, so that nothing of the original's values survives.
    """
    fresh = copy.deepcopy(module).train(False)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in fresh.modules():
            reset_parameters = getattr(sub, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                reset.update(id(p) for p in sub.parameters(recurse=False))
                reset.update(id(b) for b in sub.buffers(recurse=False))
        with torch.no_grad():
            for p in fresh.parameters():
                if id(p) not in reset:
                    p.normal_(0.0, 0.02)
            for b in fresh.buffers():
                if id(b) not in reset and b.is_floating_point():
                    b.zero_()
    for p in fresh.parameters():
        p.requires_grad_(True)
    return fresh


Access = WhiteBoxAccess | QueryAccess | TailAccess | StructureAccess


def require(access: Any, allowed: tuple[type, ...], attack: str) -> None:
    """Refuse access an attack's threat model does not allow, naming what it needs."""
    if not isinstance(access, allowed):
        names = " or ".join(t.__name__ for t in allowed)
        raise AccessError(f"{attack} needs {names}, got {type(access).__name__}")


@torch.no_grad()
def features_in_batches(
    edge: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """``edge(x)`` computed ``batch_size`` inputs at a time into one preallocated tensor.

    A learned attack's query set is large (50,000 CIFAR-10 images at conv11 are 13 GB of fp32
    features); holding the batches and their concatenation at once would need twice that.
    ``dtype`` (default: the edge's output dtype) and ``channels_last`` (image-shaped features
    only) set how the result is stored.

    Shapes: (N, C, H, W) -> (N, *feature_shape).
    """
    out: torch.Tensor | None = None
    for start in range(0, len(x), batch_size):
        z = edge(x[start : start + batch_size])
        if out is None:
            layout = torch.channels_last if channels_last and z.dim() == 4 else None
            out = torch.empty(
                (len(x), *z.shape[1:]),
                dtype=dtype or z.dtype,
                device=z.device,
                memory_format=layout or torch.contiguous_format,
            )
        out[start : start + len(z)] = z
    if out is None:  # no inputs: an empty batch of the edge's output, stored as asked
        z = edge(x)
        layout = torch.channels_last if channels_last and z.dim() == 4 else None
        return z.to(dtype=dtype or z.dtype, memory_format=layout or torch.preserve_format)
    return out
