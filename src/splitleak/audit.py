"""``splitleak audit``: the whole threat-model grid for one model, resumable, then a report.

The method, as the papers run it: train (or load) the victim; list its split points; for
each chosen split point run every attack the budget names under each attacker-data and
shadow-architecture setting; sweep the defenses at one split point, naive and
defense-aware; measure the accuracy every split and defense costs; hand the numbers to the
planner; write the report.

Every cell is stored the moment it finishes (see :mod:`splitleak.store`); rerunning the
same command skips finished cells, so an interrupted audit continues where it stopped.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from splitleak.attacks.factory import for_attack
from splitleak.config import AttackConfig, Strict, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError, unknown_name
from splitleak.experiment import Victim, load_victim
from splitleak.models import split_points
from splitleak.planner import split_costs
from splitleak.records import read_json, versions, write_json
from splitleak.store import ResultStore
from splitleak.studies import parse_family
from splitleak.sweep import accuracy_cell, attack_cell, attack_key

MANIFEST = "audit.json"


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
    """What to audit and how hard; saved in the manifest."""

    model: str = "mnist-net"
    dataset: str | None = None
    data_dir: Path | None = None
    checkpoint: Path | None = None
    budget: str = "quick"
    seed: int = 0
    max_edge_macs: int | None = None
    max_feature_bytes: int | None = None
    max_leakage: float | None = None
    min_accuracy: float | None = None


@dataclass
class Cell:
    """One unit of work: an attack run or a defended-accuracy measurement."""

    kind: str  # "attack" or "accuracy"
    section: str  # "attacks", "defenses" or "planner"
    label: str
    split: str
    attack: AttackConfig | None = None
    defenses: tuple[str, ...] = ()
    draws: int = 1
    estimate_s: float = 0.0
    key: str = ""

    def describe(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "section": self.section,
            "label": self.label,
            "split": self.split,
            "defenses": list(self.defenses),
            "draws": self.draws,
            "estimate_s": round(self.estimate_s, 2),
            "key": self.key,
        }
        if self.attack is not None:
            a = self.attack
            out.update(
                attack=a.attack,
                attacker_data=a.attacker_data,
                shadow_arch=a.shadow_arch,
                adaptive=a.adaptive,
                profile=a.profile,
            )
        return out


def choose_splits(all_splits: list[str], spec: str | list[str]) -> list[str]:
    """Resolve a budget's ``splits`` against a model's split points."""
    if isinstance(spec, list):
        for s in spec:
            if s not in all_splits:
                raise unknown_name("split point", s, all_splits)
        return spec
    if spec == "all":
        return all_splits
    n = int(spec.split(":")[1])
    if n >= len(all_splits):
        return all_splits
    picks = sorted({round(i * (len(all_splits) - 1) / (n - 1)) for i in range(n)})
    return [all_splits[i] for i in picks]


def build_grid(
    cfg: AuditConfig, budget: Budget, victim_cfg: VictimConfig, all_splits: list[str]
) -> list[Cell]:
    """Every cell of the audit, in the order they run."""
    splits = choose_splits(all_splits, budget.splits)
    overrides = {"steps": budget.whitebox_steps} if budget.whitebox_steps else {}
    base = AttackConfig(
        victim=victim_cfg,
        profile=budget.profile,
        protocol=budget.protocol,  # type: ignore[arg-type]
        n_eval=budget.n_eval,
        seed=cfg.seed,
        attack_epochs=budget.attack_epochs,
        attacker_samples=budget.attacker_samples,
        overrides=overrides,
    )
    cells = [Cell("accuracy", "planner", f"accuracy at {s}", s) for s in splits]
    for split in splits:
        for attack in budget.attacks:
            for cfg_ in _attack_variants(base, budget, split, attack):
                cells.append(Cell("attack", "attacks", _label(cfg_), split, attack=cfg_))
    defense_split = (
        splits[len(splits) // 2] if budget.defense_split == "middle" else budget.defense_split
    )
    for text in budget.defenses:
        family = parse_family(text)
        for level in family.levels:
            defenses = family.spec(level)
            cells.append(
                Cell(
                    "accuracy",
                    "defenses",
                    f"accuracy {defenses[0]}",
                    defense_split,
                    defenses=defenses,
                    draws=budget.draws,
                )
            )
            for attack in budget.defense_attacks:
                for aware in budget.adaptive:
                    extra = (
                        {"ignore_zero_features": True}
                        if aware
                        and family.family == "dropout"
                        and family.location == "features"
                        and not family.rescale
                        else {}
                    )
                    a = for_attack(
                        base,
                        attack,
                        split=defense_split,
                        defenses=defenses,
                        adaptive=aware,
                        overrides={**overrides, **extra},
                        attacker_data=budget.attacker_data[0],
                        shadow_arch=budget.shadow_arch[0],
                    )
                    cells.append(
                        Cell(
                            "attack",
                            "defenses",
                            _label(a),
                            defense_split,
                            attack=a,
                            defenses=defenses,
                        )
                    )
    return cells


def _attack_variants(
    base: AttackConfig, budget: Budget, split: str, attack: str
) -> list[AttackConfig]:
    if attack == "whitebox":
        return [for_attack(base, attack, split=split)]
    datas = [d for d in budget.attacker_data if not (attack == "shadow" and d == "noise")]
    archs = budget.shadow_arch if attack in ("shadow", "model-reconstruction") else ["same"]
    return [
        for_attack(base, attack, split=split, attacker_data=d, shadow_arch=a)
        for d in datas
        for a in archs
    ]


def _label(a: AttackConfig) -> str:
    text = f"{a.attack} @ {a.split}"
    if a.attack != "whitebox":
        text += (
            f" [{a.attacker_data}"
            + (f", {a.shadow_arch} net" if a.attack in ("shadow", "model-reconstruction") else "")
            + "]"
        )
    if a.defenses:
        text += f" vs {', '.join(a.defenses)}" + (" (aware)" if a.adaptive else "")
    return text


def _time(fn: Callable[[], object], reps: int = 3) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


def _backward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    return lambda: module(x).sum().backward()


def estimate_costs(
    cells: list[Cell],
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    *,
    attacker_pool: int,
    test_size: int,
) -> None:
    """Fill each cell's ``estimate_s`` from timings of this machine (a rough guide, ±2×)."""
    from splitleak.attacks.factory import inversion_settings
    from splitleak.models import split_model

    model.eval()
    x_full = torch.randn(128, *input_shape, requires_grad=True)
    per_sample = _time(_backward(model, x_full)) / 128
    step_cost: dict[tuple[str, int], float] = {}
    for cell in cells:
        if cell.kind == "accuracy":
            cell.estimate_s = per_sample / 3 * test_size * (cell.draws if cell.defenses else 1)
            continue
        a = cell.attack
        assert a is not None
        if (cell.split, a.n_eval) not in step_cost:
            edge = split_model(model, at=cell.split).edge
            x = torch.randn(
                a.n_eval if a.protocol == "random" else 10, *input_shape, requires_grad=True
            )
            step_cost[(cell.split, a.n_eval)] = _time(_backward(edge, x))
        step = step_cost[(cell.split, a.n_eval)]
        table = ""  # the attack's own presets table (from the registry)
        steps = inversion_settings(a, architecture="", table=table).get("steps", 0)
        samples = min(a.attacker_samples or attacker_pool, attacker_pool)
        train = samples * a.attack_epochs * per_sample
        cell.estimate_s = {"whitebox": steps * step, "inverse-network": 0.5 * train}.get(
            a.attack, train + steps * step
        )


@dataclass
class AuditOutcome:
    """What an audit did: where, how many cells it computed and how many it reused."""

    directory: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    report: Path | None = None


def prepare(
    cfg: AuditConfig, out: Path
) -> tuple[Budget, VictimConfig, list[Cell], torch.nn.Module, Any]:
    """Resolve the budget and the grid, and estimate each cell (no training)."""
    from splitleak.data import load_dataset
    from splitleak.models.zoo import default_dataset, resolve_architecture

    budget = load_budget(cfg.budget)
    dataset = cfg.dataset or default_dataset(cfg.model)
    test = load_dataset(dataset, "test", root=cfg.data_dir)
    arch = resolve_architecture(cfg.model, dataset=dataset, input_shape=test.shape)
    victim_cfg = VictimConfig(
        model=cfg.model,
        dataset=dataset,
        data_dir=cfg.data_dir,
        checkpoint=cfg.checkpoint,
        train=TrainSettings(epochs=budget.victim_epochs),
    )
    model = arch.build()
    cells = build_grid(cfg, budget, victim_cfg, split_points(model))
    estimate_costs(cells, model, test.shape, attacker_pool=len(test), test_size=len(test))
    return budget, victim_cfg, cells, model, arch


def write_manifest(
    out: Path, cfg: AuditConfig, budget: Budget, victim: Victim, cells: list[Cell]
) -> dict[str, Any]:
    """The audit's manifest: configuration, victim, split costs and the grid's cell keys.

    ``created`` is kept from the first run, so a resumed audit renders the same report.
    """
    previous = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else {}
    costs = split_costs(victim.model, victim.architecture.input_shape)
    manifest = {
        "format": "splitleak-audit/1",
        "created": previous.get("created") or datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "budget": {"name": cfg.budget, **budget.model_dump(mode="json")},
        "victim": {
            "architecture": victim.architecture.name,
            "dataset": victim.test.name,
            "test_accuracy": victim.meta.get("test_accuracy"),
            "test_images": len(victim.test),
            "epochs": victim.meta.get("epochs"),
            "checkpoint": str(victim.checkpoint),
            "description": victim.architecture.description,
        },
        "split_costs": [asdict(c) for c in costs],
        "cells": [c.describe() for c in cells],
        "versions": versions(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def run_cell(cell: Cell, victim: Victim, store: ResultStore, seed: int) -> None:
    if cell.kind == "accuracy":
        accuracy_cell(
            victim, store, split=cell.split, defenses=cell.defenses, draws=cell.draws, seed=seed
        )
    else:
        assert cell.attack is not None
        attack_cell(cell.attack, victim, store)


def assign_keys(cells: list[Cell], victim: Victim, seed: int) -> None:
    from splitleak.sweep import accuracy_key

    for cell in cells:
        if cell.kind == "accuracy":
            cell.key = accuracy_key(
                victim, split=cell.split, defenses=cell.defenses, draws=cell.draws, seed=seed
            )[0]
        else:
            assert cell.attack is not None
            cell.key = attack_key(cell.attack, victim)[0]


def run_audit(
    cfg: AuditConfig,
    out: Path,
    *,
    on_cell: Callable[[Cell, bool], None] | None = None,
    progress: Any = None,
) -> AuditOutcome:
    """Run every missing cell of the grid, storing each as it finishes, then the report.

    Args:
        on_cell: called before each cell with (cell, already_stored).
        progress: an object with ``start(cells)`` / ``advance(cell)`` (the CLI's display).
    """
    from splitleak.report.html import render_report

    budget, victim_cfg, cells, _, _ = prepare(cfg, out)
    victim = load_victim(victim_cfg, progress=progress is not None)
    assign_keys(cells, victim, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, cfg, budget, victim, cells)
    store = ResultStore(out)
    outcome = AuditOutcome(out)
    if progress is not None:
        progress.start(cells, done={c.key for c in cells if store.has(c.key)})
    for cell in cells:
        stored = store.has(cell.key)
        if on_cell is not None:
            on_cell(cell, stored)
        if not stored:
            run_cell(cell, victim, store, cfg.seed)
        (outcome.reused if stored else outcome.computed).append(cell.key)
        if progress is not None:
            progress.advance(cell)
    outcome.report = render_report(out)
    return outcome


def check_out_dir(out: Path, cfg: AuditConfig) -> None:
    """Refuse to mix two different audits in one folder."""
    if (out / MANIFEST).is_file():
        previous = read_json(out / MANIFEST).get("config", {})
        if previous and previous != cfg.model_dump(mode="json"):
            raise SplitleakError(
                f"{out} holds an audit with another configuration; "
                "use another --out or the same options"
            )
