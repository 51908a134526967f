"""Edge-side defenses, applied at inference time to a model trained without them (SPEC §6).

A defense perturbs the input x or the features z before they leave the edge. Defenses are
random; each draw uses a ``torch.Generator`` so that the same seed gives the same numbers.
:class:`DefendedEdge` composes any number of them around an edge part.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import nn

Location = Literal["input", "features"]


class Defense(Protocol):
    """A random perturbation of a tensor; ``level`` 0 is the identity.

    Optional attributes: ``stochastic`` (False for deterministic defenses, e.g. learned
    noise or NoPeek; default True) and, for defenses that learn before use, ``stage`` and
    ``prepare(context)`` (:class:`splitleak.defenses.deploy.Trainable`).
    """

    @property
    def family(self) -> str: ...

    @property
    def location(self) -> Location: ...

    @property
    def level(self) -> float: ...

    def apply(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def describe(self) -> dict[str, object]: ...


class DefendedEdge(nn.Module):
    """``feature_defenses(edge(input_defenses(x)))`` with fresh randomness on every call.

    Calling it twice gives two independent draws, so an attacker that optimises through it
    averages its objective over defense draws (expectation over transformation).

    Args:
        edge: the undefended edge part.
        defenses: applied in order, input defenses before the edge, feature ones after.
        seed: seed of the defense's random generator.
    """

    def __init__(self, edge: nn.Module, defenses: list[Defense], *, seed: int = 0) -> None:
        super().__init__()
        self.edge = edge
        self.defenses = list(defenses)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._device_generators: dict[str, torch.Generator] = {}

    def reseed(self, seed: int) -> DefendedEdge:
        self.seed = seed
        self.generator.manual_seed(seed)
        for gen in self._device_generators.values():
            gen.manual_seed(seed)
        return self

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The defense's random stream on ``device`` (the CPU's is :attr:`generator`).

        Draws are seeded on the device they are made on, so a run on a GPU is
        reproducible there (its numbers differ from the CPU's: another generator).
        """
        if device.type == "cpu":
            return self.generator
        key = str(device)
        if key not in self._device_generators:
            self._device_generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._device_generators[key]

    def random_state(self) -> dict[str, torch.Tensor]:
        """The states of this edge's random streams, by device (for resumable training)."""
        states = {"cpu": self.generator.get_state()}
        states.update({key: gen.get_state() for key, gen in self._device_generators.items()})
        return states

    def set_random_state(self, states: dict[str, torch.Tensor]) -> None:
        """Continue the streams :meth:`random_state` recorded."""
        for key, state in states.items():
            self.generator_for(torch.device(key)).set_state(state)

    def extra_repr(self) -> str:
        # The defenses are part of what a cached module trained through this edge depends on.
        return f"defenses={describe(self.defenses)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = self.generator_for(x.device)
        for d in self.defenses:
            if d.location == "input":
                x = d.apply(x, generator)
        z = self.edge(x)
        for d in self.defenses:
            if d.location == "features":
                z = d.apply(z, generator)
        return z


def describe(defenses: list[Defense]) -> str:
    """A short human-readable label, e.g. ``dropout(features, r=0.5)``."""
    if not defenses:
        return "none"
    return " + ".join(
        f"{d.family}({d.location}, {d.describe().get('symbol', 'level')}={d.level:g})"
        for d in defenses
    )
