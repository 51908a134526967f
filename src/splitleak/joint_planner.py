"""Choose where to cut *and* which defense to add: split point × defense family × level.

For every configuration — a split point with no defense, or with one family at one level —
the joint planner measures the test accuracy of the deployed model (full test set, several
defense draws; fine-tuned or NoPeek models where the defense replaces them) and the
leakage: the highest mean SSIM over the attacks run, each both naive and defense-aware
(the worst case: an attacker who knows the defense can also ignore it), every stochastic
defense scored over several draws (:mod:`splitleak.defenses.scoring`). Costs come from
:func:`splitleak.planner.split_costs`, plus the parameters a defense adds to the edge (a
learned perturbation). The Pareto front is :func:`splitleak.planner.pareto_front` over
accuracy, leakage, edge MACs, edge parameter memory and bytes sent; the recommendation is
:func:`splitleak.planner.recommend` under :class:`~splitleak.planner.Constraints`. When no
configuration is feasible, :func:`nearest` lists those that come closest.

:func:`plan_record` is what ``splitleak plan-defenses`` writes as ``plan.json``; its
``recommended`` entry, ``{"split": ..., "defenses": [spec, ...]}``, is what an edge client
deploys (docs/defenses.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from splitleak.attacks.factory import applicable_overrides
from splitleak.attacks.registry import get_attack
from splitleak.config import AttackConfig
from splitleak.defenses import parse_defense
from splitleak.defenses.dp import privacy as defense_privacy
from splitleak.defenses.learned_noise import LearnedNoise
from splitleak.defenses.scoring import aware_overrides, scored_attack_cell
from splitleak.experiment import Victim
from splitleak.planner import (
    Constraints,
    PlanRow,
    Recommendation,
    SplitCost,
    _bytes_text,
    _macs_text,
    _violates,
    pareto_front,
    recommend,
    split_costs,
)
from splitleak.records import atomic_path, write_json
from splitleak.store import ResultStore
from splitleak.sweep import DefenseFamily, accuracy_cell


@dataclass(frozen=True)
class JointRow(PlanRow):
    """A split point with its defenses: cost, accuracy, worst-case leakage and its attacks.

    ``attacks`` holds one entry per attack × mode (``attack``, ``aware``, ``psnr``,
    ``ssim``, ``draws``, ``key``); ``leakage`` is the highest ``ssim`` among them.
    """

    defenses: tuple[str, ...] = ()
    attacks: tuple[dict[str, Any], ...] = ()
    defense_param_bytes: int = 0
    privacy: dict[str, Any] | None = None
    training: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def edge_param_bytes(self) -> int:
        return self.cost.edge_param_bytes + self.defense_param_bytes

    @property
    def label(self) -> str:
        return f"{self.split} + {', '.join(self.defenses) if self.defenses else 'no defense'}"

    @property
    def worst_attack(self) -> dict[str, Any] | None:
        return max(self.attacks, key=lambda a: a["ssim"], default=None)


#: measure(split, defenses) -> (accuracy, attack entries, training records)
Measure = Callable[[str, tuple[str, ...]], tuple[float, list[dict[str, Any]], list[dict[str, Any]]]]


def configurations(
    splits: Iterable[str], families: Iterable[DefenseFamily]
) -> list[tuple[str, tuple[str, ...]]]:
    """Every (split, defense specs) of the grid, the undefended split first, no duplicates."""
    families = list(families)
    out: list[tuple[str, tuple[str, ...]]] = []
    for split in splits:
        for specs in [(), *(fam.spec(level) for fam in families for level in fam.levels)]:
            if (split, specs) not in out:
                out.append((split, specs))
    return out


def defense_param_bytes(specs: tuple[str, ...], cost: SplitCost, *, itemsize: int = 4) -> int:
    """Bytes the defenses add to the edge: a learned perturbation is one feature tensor."""
    learned = [
        d for d in map(parse_defense, specs) if isinstance(getattr(d, "inner", d), LearnedNoise)
    ]
    return len(learned) * math.prod(cost.feature_shape) * itemsize


def joint_rows(
    costs: list[SplitCost], grid: list[tuple[str, tuple[str, ...]]], measure: Measure
) -> list[JointRow]:
    """Measure every configuration of ``grid`` and join it with its split's cost."""
    by_split = {c.split: c for c in costs}
    rows = []
    for split, specs in grid:
        accuracy, attacks, training = measure(split, specs)
        cost = by_split[split]
        leak = max((a["ssim"] for a in attacks), default=None)
        parsed = [parse_defense(d) for d in specs]
        rows.append(
            JointRow(
                cost=cost,
                accuracy=accuracy,
                leakage=leak,
                defenses=specs,
                attacks=tuple(attacks),
                defense_param_bytes=defense_param_bytes(specs, cost),
                privacy=defense_privacy(parsed[0]) if len(parsed) == 1 else None,
                training=tuple(training),
            )
        )
    return rows


def cell_measure(
    victim: Victim,
    base: AttackConfig,
    store: ResultStore,
    *,
    attacks: Iterable[str] = ("whitebox",),
    modes: Iterable[bool] = (False, True),
    draws: int = 3,
    progress: bool = False,
) -> Measure:
    """The real measurement: accuracy and scored attack cells in ``store`` (reused on rerun)."""
    attacks, modes = list(attacks), list(modes)

    def measure(
        split: str, specs: tuple[str, ...]
    ) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
        acc = accuracy_cell(victim, store, split=split, defenses=specs, draws=draws, seed=base.seed)
        entries: list[dict[str, Any]] = []
        training: list[dict[str, Any]] = []
        for attack in attacks:
            for aware in modes if specs else (False,):
                shared = applicable_overrides(base.overrides, attack)
                update = {
                    "split": split,
                    "attack": attack,
                    "defenses": specs,
                    "adaptive": aware,
                    "overrides": aware_overrides(attack, specs, shared) if aware else shared,
                }
                if not get_attack(attack).needs_data:  # a data cap is not part of its identity
                    update["attacker_samples"] = None
                cfg = base.model_copy(update=update)
                rec = scored_attack_cell(cfg, victim, store, draws=draws, progress=progress)
                entries.append(
                    {
                        "attack": attack,
                        "aware": aware,
                        "psnr": rec["summary"]["psnr"]["mean"],
                        "ssim": rec["summary"]["ssim"]["mean"],
                        "draws": rec["draws"],
                        "key": rec["key"],
                    }
                )
                training = training or list(rec.get("defense_training") or [])
        return float(acc["summary"]["mean"]), entries, training

    return measure


@dataclass(frozen=True)
class JointPlan:
    """All rows, the Pareto front, the recommendation and (if none fits) the nearest rows."""

    rows: list[JointRow]
    pareto: list[JointRow]
    recommendation: Recommendation
    nearest: list[tuple[JointRow, dict[str, float]]]
    constraints: Constraints


def plan(rows: list[JointRow], constraints: Constraints, *, nearest_count: int = 5) -> JointPlan:
    """Pareto front (five objectives), recommendation and, if nothing fits, the nearest rows."""
    front = pareto_front(list(rows), memory=True)
    rec = recommend(list(rows), constraints)
    if rec.row is not None:
        row = rec.row
        assert isinstance(row, JointRow)
        reason = (
            f"{row.label}: lowest worst-case leakage ({row.leakage:.3g} SSIM) of the "
            f"{len(rec.feasible)} configurations meeting the limits; accuracy "
            f"{row.accuracy:.4f}, {_macs_text(row.edge_macs)} on the edge, "
            f"{_bytes_text(row.feature_bytes)} sent per input"
        )
        rec = Recommendation(row=row, feasible=rec.feasible, reason=reason)
    close = [] if rec.row is not None else nearest(rows, constraints, count=nearest_count)
    if close:
        best, gaps = close[0]
        rec = Recommendation(
            row=None,
            feasible=[],
            reason=f"no configuration meets the limits; the nearest is {best.label} "
            f"({', '.join(f'{k} misses by {v:.3g}' for k, v in gaps.items() if v > 0)})",
        )
    return JointPlan(list(rows), [r for r in rows if r in front], rec, close, constraints)


def gaps(row: PlanRow, constraints: Constraints) -> dict[str, float]:
    """How far ``row`` misses each active limit (0 where it meets it; inf if unmeasured)."""
    out = {}
    for name, limit in vars(constraints).items():
        if limit is None:
            continue
        value = getattr(row, name[4:])
        if value is None:
            out[name] = math.inf
        elif not _violates(row, name, limit):
            out[name] = 0.0
        else:
            out[name] = abs(value - limit)
    return out


def nearest(
    rows: list[JointRow], constraints: Constraints, *, count: int = 5
) -> list[tuple[JointRow, dict[str, float]]]:
    """The rows closest to feasible: fewest limits missed, then smallest relative miss.

    The relative miss of a limit is ``|value − limit| / |limit|``, summed over the limits.
    """

    def badness(row: JointRow) -> tuple[int, float]:
        g = gaps(row, constraints)
        limits = vars(constraints)
        missed = sum(v > 0 for v in g.values())
        return missed, sum(v / max(abs(limits[k]), 1e-12) for k, v in g.items())

    ranked = sorted(rows, key=badness)
    return [(r, gaps(r, constraints)) for r in ranked[:count]]


def row_record(row: JointRow, *, pareto: bool, feasible: bool) -> dict[str, Any]:
    worst = row.worst_attack
    return {
        "split": row.split,
        "defenses": list(row.defenses),
        "accuracy": row.accuracy,
        "leakage": row.leakage,
        "worst_attack": None if worst is None else {k: worst[k] for k in ("attack", "aware")},
        "attacks": list(row.attacks),
        "edge_macs": row.edge_macs,
        "edge_param_bytes": row.edge_param_bytes,
        "feature_bytes": row.feature_bytes,
        "feature_shape": list(row.cost.feature_shape),
        "privacy": row.privacy,
        "training": list(row.training),
        "pareto": pareto,
        "feasible": feasible,
    }


def plan_record(result: JointPlan, **context: Any) -> dict[str, Any]:
    """JSON-ready ``plan.json``: rows, front, the deployable recommendation, nearest rows."""
    rec = result.recommendation
    front = {id(r) for r in result.pareto}
    feasible = {id(r) for r in rec.feasible}
    return {
        "kind": "joint-plan",
        **context,
        "constraints": asdict(result.constraints),
        "recommended": (
            {"split": rec.row.split, "defenses": list(rec.row.defenses)}  # type: ignore[attr-defined]
            if rec.row is not None
            else None
        ),
        "reason": rec.reason,
        "rows": [
            row_record(r, pareto=id(r) in front, feasible=id(r) in feasible) for r in result.rows
        ],
        "nearest": [
            {"split": r.split, "defenses": list(r.defenses), "misses": g} for r, g in result.nearest
        ],
    }


def joint_search(
    victim: Victim,
    base: AttackConfig,
    store: ResultStore,
    *,
    splits: Iterable[str],
    families: Iterable[DefenseFamily],
    attacks: Iterable[str] = ("whitebox",),
    modes: Iterable[bool] = (False, True),
    draws: int = 3,
    feature_dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> list[JointRow]:
    """Measure every configuration of ``splits`` × ``families`` (cells cached in ``store``)."""
    splits = list(splits)
    costs = split_costs(victim.model, victim.architecture.input_shape, feature_dtype=feature_dtype)
    known = [c.split for c in costs]
    for split in splits:
        if split not in known:
            from splitleak.errors import unknown_name

            raise unknown_name("split point", split, known)
    measure = cell_measure(
        victim, base, store, attacks=attacks, modes=modes, draws=draws, progress=progress
    )
    return joint_rows(costs, configurations(splits, families), measure)


#: The default grid at MNIST scale (absolute levels): every family, two or three levels.
DEFAULT_FAMILIES = (
    DefenseFamily("dropout", "features", (0.5, 0.7, 0.9)),
    DefenseFamily("dropout", "features", (0.7, 0.9), flags=("finetune",)),
    DefenseFamily("gaussian", "features", (1.0, 2.0, 5.0)),
    DefenseFamily("gaussian", "features", (2.0, 5.0), flags=("finetune",)),
    DefenseFamily("dp-gaussian", "features", (1000.0, 10000.0), flags=("finetune",)),
    DefenseFamily("learned", "features", (200.0, 500.0)),
    DefenseFamily("nopeek", "features", (1.0, 4.0)),
)


def run_joint_plan(
    victim: Victim,
    base: AttackConfig,
    out: Path,
    *,
    constraints: Constraints,
    splits: Iterable[str],
    families: Iterable[DefenseFamily] = DEFAULT_FAMILIES,
    attacks: Iterable[str] = ("whitebox",),
    modes: Iterable[bool] = (False, True),
    draws: int = 3,
    feature_dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> JointPlan:
    """Search, plan, and write ``out/plan.json`` and ``out/front.png`` (cells in ``out``)."""
    attacks, modes = list(attacks), list(modes)
    rows = joint_search(
        victim, base, ResultStore(out), splits=splits, families=families, attacks=attacks,
        modes=modes, draws=draws, feature_dtype=feature_dtype, progress=progress,
    )  # fmt: skip
    result = plan(rows, constraints)
    context = {
        "model": victim.architecture.name,
        "checkpoint": str(victim.checkpoint),
        "profile": base.profile,
        "attacks": attacks,
        "modes": ["aware" if m else "naive" for m in modes],
        "draws": draws,
        "feature_dtype": str(feature_dtype).removeprefix("torch."),
    }
    record = plan_record(result, **context)
    write_json(out / "plan.json", record)
    plot_front(record, out / "front.png")
    return result


def plot_front(record: dict[str, Any], dest: Path) -> Path:
    """Accuracy against worst-case leakage from a :func:`plan_record`: every configuration,
    the Pareto front by split point, the recommendation and the limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))

    def xy(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        known = [r for r in rows if r["accuracy"] is not None and r["leakage"] is not None]
        return [float(r["accuracy"]) for r in known], [float(r["leakage"]) for r in known]

    rows = record["rows"]
    ax.scatter(*xy(rows), c="0.75", s=14, label="configuration")
    front = [r for r in rows if r["pareto"]]
    for split in dict.fromkeys(r["split"] for r in front):
        ax.scatter(*xy([r for r in front if r["split"] == split]), s=30, label=f"front: {split}")
    chosen = record.get("recommended")
    if chosen:
        picked = [r for r in rows if r["split"] == chosen["split"]
                  and r["defenses"] == chosen["defenses"]]  # fmt: skip
        ax.scatter(*xy(picked), marker="*", s=220, c="k", label="recommended")
    limits = record.get("constraints") or {}
    if limits.get("max_leakage") is not None:
        ax.axhline(limits["max_leakage"], ls="--", c="r", lw=0.8)
    if limits.get("min_accuracy") is not None:
        ax.axvline(limits["min_accuracy"], ls="--", c="r", lw=0.8)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("worst-case leakage (SSIM)")
    ax.legend(fontsize=7, loc="best")
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return dest
