"""The audit grid: which cells an audit runs, in the order they run.

The method, as the papers run it: for each chosen split point run every attack the budget
names under each attacker-data and shadow-architecture setting; sweep the defenses at one
split point, naive and defense-aware; measure the accuracy every split and defense costs.
With several victims (the budget's ``victims``), each victim past the first repeats the
undefended attacks (section ``victims``), so that each split's leakage is measured across
victims trained with different seeds; the defenses and the planner use the first victim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splitleak.attacks.factory import for_attack
from splitleak.attacks.registry import get_attack
from splitleak.audit.config import AuditConfig, Budget
from splitleak.cells import AccuracyCell, AttackCell, attack_label
from splitleak.config import AttackConfig, ComputeSettings, VictimConfig
from splitleak.errors import unknown_name
from splitleak.studies import parse_family


@dataclass
class Cell:
    """One unit of work: an attack run or a defended-accuracy measurement."""

    kind: str  # "attack" or "accuracy"
    section: str  # "attacks", "defenses", "planner" or "victims" (the further victims' attacks)
    label: str
    split: str
    attack: AttackConfig | None = None
    defenses: tuple[str, ...] = ()
    draws: int = 1
    estimate_s: float = 0.0
    key: str = ""
    spec: AttackCell | AccuracyCell | None = None  # the cell record's spec (set by assign_keys)
    victim_seed: int = 0  # the victim's TrainSettings.seed

    @property
    def victim(self) -> VictimConfig | None:
        """The victim an attack cell attacks (None for accuracy cells: the first victim)."""
        return self.attack.victim if self.attack is not None else None

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
            "victim_seed": self.victim_seed,
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
    cfg: AuditConfig,
    budget: Budget,
    victim_cfg: VictimConfig,
    all_splits: list[str],
    compute: ComputeSettings | None = None,
) -> list[Cell]:
    """Every cell of the audit, in the order they run (``compute``: where attacks run)."""
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
        compute=compute or ComputeSettings(),
    )
    cells = [Cell("accuracy", "planner", f"accuracy at {s}", s) for s in splits]
    for split in splits:
        for attack in budget.attacks:
            for cfg_ in _attack_variants(base, budget, split, attack):
                cells.append(Cell("attack", "attacks", attack_label(cfg_), split, attack=cfg_))
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
                            attack_label(a),
                            defense_split,
                            attack=a,
                            defenses=defenses,
                        )
                    )
    return cells


def victim_seeds(victim_cfg: VictimConfig, count: int) -> list[VictimConfig]:
    """The audit's victims: ``victim_cfg`` trained with seeds 0..count-1 (the first is it)."""
    first = victim_cfg.train.seed
    return [
        victim_cfg.model_copy(update={"train": victim_cfg.train.model_copy(update={"seed": s})})
        for s in range(first, first + count)
    ]


def repeat_for_victims(cells: list[Cell], victims: list[VictimConfig]) -> list[Cell]:
    """The undefended attack cells of ``cells`` again, once on each of ``victims``."""
    out = []
    for victim in victims:
        for cell in cells:
            if cell.section != "attacks" or cell.attack is None:
                continue
            seed = victim.train.seed
            out.append(
                Cell(
                    "attack",
                    "victims",
                    f"{cell.label} · victim seed {seed}",
                    cell.split,
                    attack=cell.attack.model_copy(update={"victim": victim}),
                    victim_seed=seed,
                )
            )
    return out


def _attack_variants(
    base: AttackConfig, budget: Budget, split: str, attack: str
) -> list[AttackConfig]:
    if attack == "whitebox" or get_attack(attack).threat_model == "data-free":
        return [for_attack(base, attack, split=split)]  # no attacker data to vary
    datas = [d for d in budget.attacker_data if not (attack == "shadow" and d == "noise")]
    imitates = ("shadow", "model-reconstruction", "hybrid-blackbox")
    archs = budget.shadow_arch if attack in imitates else ["same"]
    return [
        for_attack(base, attack, split=split, attacker_data=d, shadow_arch=a)
        for d in datas
        for a in archs
    ]
