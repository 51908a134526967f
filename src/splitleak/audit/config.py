"""What an audit runs: its configuration and the named budgets of ``budgets.toml``."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from splitleak.config import Strict
from splitleak.errors import unknown_name


class Budget(Strict):
    """How much of the grid an audit runs (``budgets.toml``)."""

    description: str
    victim_epochs: int = Field(ge=1)
    splits: str | list[str]
    profile: str
    whitebox_steps: int | None = None
    attacks: list[str]
    attacker_data: list[str]
    shadow_arch: list[str]
    attacker_samples: int | None = None
    attack_epochs: int
    protocol: str
    n_eval: int
    defense_split: str
    defenses: list[str]
    defense_attacks: list[str]
    adaptive: list[bool]
    draws: int
    # Victims trained with seeds 0..victims-1; every one past the first repeats the
    # undefended attack grid, so that the leakage per split is a mean ± CI across victims.
    victims: int = Field(1, ge=1)


@cache
def _budgets() -> dict[str, Any]:
    return tomllib.loads(resources.files("splitleak").joinpath("budgets.toml").read_text())


def budget_names() -> list[str]:
    return list(_budgets())


def load_budget(name: str) -> Budget:
    if name not in _budgets():
        raise unknown_name("budget", name, budget_names())
    return Budget.model_validate(_budgets()[name])


class AuditConfig(Strict):
    """What to audit and how hard; saved in the manifest.

    Where the cells run (``--executor``) and where they are stored (``--store``) are not
    part of it: they change no number, so an audit may be resumed with another executor.
    """

    model: str = "mnist-net"
    dataset: str | None = None
    data_dir: Path | None = None
    checkpoint: Path | None = None
    budget: str = "quick"
    seed: int = 0
    max_edge_macs: int | None = Field(None, ge=0)
    max_feature_bytes: int | None = Field(None, ge=0)
    max_leakage: float | None = Field(None, ge=0.0, le=1.0)  # an SSIM
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)  # a fraction, not a percentage
    victims: int | None = Field(None, ge=1)  # None: the budget's

    def victim_count(self, budget: Budget) -> int:
        """How many victims the audit trains: one for a user checkpoint, else the budget's."""
        if self.checkpoint is not None:
            return 1
        return self.victims if self.victims is not None else budget.victims
