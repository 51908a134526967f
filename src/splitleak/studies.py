"""Studies: a sweep, its figures and its summary, written into one output folder.

These are what the CLI's ``defend``, ``sweep-splits`` and ``plan`` commands and the audit
call; each reads and writes cells through a :class:`~splitleak.store.ResultStore` (the
output folder, or a shared ``store``), so a study rerun recomputes nothing, and runs its
cells through an executor (serially by default; see :mod:`splitleak.executor`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitleak.cells import accuracy_spec
from splitleak.config import AttackConfig
from splitleak.executor import Executor
from splitleak.experiment import Victim
from splitleak.planner import (
    Constraints,
    PlanRow,
    Recommendation,
    check_feature_dtype,
    pareto_front,
    plan_record,
    plan_rows,
    split_costs,
)
from splitleak.planner import recommend as recommend_split
from splitleak.records import write_json
from splitleak.report.cell_grids import grid_from_cells
from splitleak.report.planner_plot import plot_plan
from splitleak.report.plots import split_sweep_figure, tradeoff_figure
from splitleak.store import ResultStore
from splitleak.sweep import (
    DefenseFamily,
    accuracy_cell,
    defense_sweep,
    run_specs,
    split_cells,
    split_sweep,
)

# IoTJ Figs. 9, 10 and 13: the defense levels the paper sweeps (MNIST scale, absolute).
DEFAULT_FAMILIES = (
    DefenseFamily("gaussian", "features", (0.5, 1.0, 2.0, 5.0)),
    DefenseFamily("laplace", "features", (0.5, 1.0, 2.0)),
    DefenseFamily("dropout", "features", (0.3, 0.5, 0.7, 0.9)),
    DefenseFamily("gaussian", "input", (0.25, 0.5, 1.0)),
    DefenseFamily("laplace", "input", (0.25, 0.5, 1.0)),
    DefenseFamily("dropout", "input", (0.1, 0.3, 0.5)),
)


def parse_family(text: str) -> DefenseFamily:
    """``family:location:l1,l2,...[:flag[=value]...]`` -> DefenseFamily."""
    from splitleak.defenses import parse_defense
    from splitleak.errors import unknown_name

    parts = text.split(":")
    if len(parts) < 3:
        raise unknown_name("defense family", text, ["family:input|features:l1,l2,..."])
    for level in parts[2].split(","):  # validate each level with the defense parser
        parse_defense(":".join([parts[0], parts[1], level, *parts[3:]]))
    levels = tuple(float(v) for v in parts[2].split(","))
    other = tuple(flag for flag in parts[3:] if flag not in ("relative", "rescale"))
    return DefenseFamily(
        parts[0],
        parts[1],
        levels,
        relative="relative" in parts[3:],
        rescale="rescale" in parts[3:],
        flags=other,
    )


def defense_study(
    victim: Victim,
    base: AttackConfig,
    out: Path,
    *,
    families: Iterable[DefenseFamily] = DEFAULT_FAMILIES,
    attacks: Iterable[str] = ("whitebox",),
    draws: int = 3,
    progress: bool = False,
    store: ResultStore | None = None,
    executor: Executor | None = None,
    display: Any = None,
) -> list[dict[str, Any]]:
    """Defense sweep + trade-off plots (non-adaptive and defense-aware) + one grid per family.

    ``store``: where the cells live (default: ``out``); ``executor``: where they run
    (default: serially); ``display``: a progress display (see :func:`sweep.run_specs`).
    """
    store = store if store is not None else ResultStore(out)
    families, attacks = list(families), list(attacks)
    points = defense_sweep(
        victim, base, families, store, attacks=attacks, draws=draws, progress=progress,
        executor=executor, display=display,
    )  # fmt: skip
    write_json(out / "defense_points.json", points)
    for attack in attacks:
        for aware in (False, True):
            tradeoff_figure(
                points,
                out / f"tradeoff_{attack}_{'aware' if aware else 'naive'}",
                attack=attack,
                adaptive=aware,
            )
        for fam in families:
            rows = [
                (f"{p['level']:g}" if p["level"] else "none", p["key"])
                for p in points
                if p["label"] == fam.label and p["attack"] == attack and not p["adaptive"]
            ]
            grid_from_cells(store, rows, out / f"grid_{attack}_{fam.family}_{fam.location}.png")
    return points


def split_study(
    victim: Victim,
    base: AttackConfig,
    out: Path,
    *,
    attacks: Iterable[str] = ("whitebox", "inverse-network", "shadow"),
    splits: Iterable[str] | None = None,
    progress: bool = False,
    store: ResultStore | None = None,
    executor: Executor | None = None,
    display: Any = None,
) -> list[dict[str, Any]]:
    """Attack every split point; chart PSNR/SSIM against depth; one grid row per split."""
    store = store if store is not None else ResultStore(out)
    attacks = list(attacks)
    points = split_sweep(
        victim, base, store, attacks=attacks, splits=splits, progress=progress,
        executor=executor, display=display,
    )  # fmt: skip
    write_json(out / "split_points.json", points)
    split_sweep_figure(points, out / "split_sweep")
    for attack in attacks:
        rows = [(p["split"], p["key"]) for p in points if p["attack"] == attack]
        grid_from_cells(store, rows, out / f"split_grid_{attack}.png")
    return points


@dataclass(frozen=True)
class Plan:
    """The planner's output: all rows, the Pareto set and the recommendation."""

    rows: list[PlanRow]
    pareto: list[PlanRow]
    recommendation: Recommendation


def plan_study(
    victim: Victim,
    base: AttackConfig,
    out: Path,
    *,
    constraints: Constraints,
    attacks: Iterable[str] = ("whitebox",),
    defenses: tuple[str, ...] = (),
    feature_dtype: str = "float32",
    progress: bool = False,
    store: ResultStore | None = None,
    executor: Executor | None = None,
    display: Any = None,
) -> Plan:
    """Per split point: cost, accuracy and worst-case leakage; Pareto set; recommendation."""
    store = store if store is not None else ResultStore(out)
    attacks = list(attacks)
    defended = base.model_copy(update={"defenses": defenses})
    # Every cell of the plan in one batch (the attacks, then each split's accuracy), so that
    # a parallel executor runs them side by side; the studies below then only read them.
    cells: list[Any] = [c for *_, c in split_cells(victim, defended, attacks=attacks)]
    cells += [
        accuracy_spec(victim, victim_config=base.victim, split=s, defenses=defenses, seed=base.seed)
        for s in dict.fromkeys(c.attack.split for c in cells)
    ]
    run_specs(cells, victim, store, executor=executor, progress=progress, display=display)
    points = split_study(victim, defended, out, attacks=attacks, progress=progress, store=store)
    leakage: dict[str, float] = {}
    for p in points:
        leakage[p["split"]] = max(leakage.get(p["split"], float("-inf")), p["ssim"])
    accuracy = {
        s: accuracy_cell(
            victim, store, split=s, defenses=defenses, seed=base.seed, victim_config=base.victim
        )["summary"]["mean"]
        for s in leakage
    }
    dtype = check_feature_dtype(feature_dtype)
    costs = split_costs(victim.model, victim.architecture.input_shape, feature_dtype=dtype)
    rows = plan_rows([c for c in costs if c.split in leakage], leakage=leakage, accuracy=accuracy)
    plan = Plan(rows, pareto_front(rows), recommend_split(rows, constraints))
    plot_plan(
        rows,
        out / "plan",
        recommended=plan.recommendation.row,
        title=f"{victim.architecture.name}: where to split",
    )
    write_json(out / "plan.json", plan_record(rows, constraints, pareto=plan.pareto))
    return plan
