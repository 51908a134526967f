"""Sweeps built from cells: defenses × levels, and split points × attacks.

A *cell* (:mod:`splitleak.cells`) is one measured number set — an attack run or a
defended-accuracy evaluation — stored in a :class:`~splitleak.store.ResultStore` under the
hash of its configuration. A sweep lists its cells, submits them all at once to an executor
(:func:`splitleak.executor.submit_cells`: serially by default, or in parallel), and builds
its points from the stored records alone; a cell already in the store is read, never
recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from splitleak.attacks.factory import for_attack
from splitleak.cells import AccuracyCell, AttackCell, accuracy_spec, attack_spec
from splitleak.config import AttackConfig, VictimConfig
from splitleak.executor import Executor, submit_cells
from splitleak.executor.submit import unique_cells
from splitleak.experiment import Victim
from splitleak.models import split_points
from splitleak.store import ResultStore

Spec = AttackCell | AccuracyCell


def attack_key(cfg: AttackConfig, victim: Victim) -> tuple[str, dict[str, Any]]:
    """The store key of an attack cell, and the identity it hashes."""
    spec = attack_spec(cfg, victim)
    return spec.key, spec.identity


def accuracy_key(
    victim: Victim, *, split: str, defenses: tuple[str, ...], draws: int, seed: int
) -> tuple[str, dict[str, Any]]:
    """The store key of a defended-accuracy cell, and the identity it hashes."""
    spec = accuracy_spec(
        victim, victim_config=VictimConfig(), split=split, defenses=defenses, draws=draws, seed=seed
    )
    return spec.key, spec.identity


def run_specs(
    specs: Sequence[Spec],
    victim: Victim,
    store: ResultStore,
    *,
    executor: Executor | None = None,
    progress: bool = False,
    display: Any = None,
) -> None:
    """Compute every cell of ``specs`` missing from ``store`` (raises if some keep failing).

    ``display``: a :class:`~splitleak.progress.CellProgress` (the CLI's progress bar),
    instead of the cells' own bars.
    """
    specs = unique_cells(specs)
    by_key = {s.key: s for s in specs}
    if display is not None:
        display.start(specs, done={k for k in by_key if store.has(k)})
    submit_cells(
        specs,
        store,
        victims=[victim],
        executor=executor,
        progress=progress and display is None,
        on_start=(lambda k: display.running(by_key[k])) if display is not None else None,
        on_done=(lambda k: display.advance(by_key[k])) if display is not None else None,
        on_failed=(lambda k, _: display.failed(by_key[k])) if display is not None else None,
    ).check()


def attack_cell(
    cfg: AttackConfig,
    victim: Victim,
    store: ResultStore,
    *,
    progress: bool = False,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or read) one attack cell; its reconstructions are stored as uint8 pixels."""
    spec = attack_spec(cfg, victim)
    run_specs([spec], victim, store, executor=executor, progress=progress)
    return store.get(spec.key)


def accuracy_cell(
    victim: Victim,
    store: ResultStore,
    *,
    split: str,
    defenses: tuple[str, ...],
    draws: int = 3,
    seed: int = 0,
    victim_config: VictimConfig | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or read) the defended test accuracy of ``victim`` cut at ``split``.

    ``victim_config`` is how a worker process loads the victim (the serial executor uses
    ``victim`` itself and needs none).
    """
    spec = accuracy_spec(
        victim,
        victim_config=victim_config or VictimConfig(),
        split=split,
        defenses=defenses,
        draws=draws,
        seed=seed,
    )
    run_specs([spec], victim, store, executor=executor)
    return store.get(spec.key)


@dataclass(frozen=True)
class DefenseFamily:
    """One line of a trade-off plot: a defense family at one location over several levels."""

    family: str
    location: str
    levels: tuple[float, ...]
    relative: bool = False
    rescale: bool = False
    flags: tuple[str, ...] = ()  # any other spec flags, e.g. ("clip=5", "finetune")

    def spec(self, level: float) -> tuple[str, ...]:
        if level == 0:
            return ()
        flags = (":relative" if self.relative else "") + (":rescale" if self.rescale else "")
        flags += "".join(f":{flag}" for flag in self.flags)
        return (f"{self.family}:{self.location}:{level:g}{flags}",)

    @property
    def label(self) -> str:
        extra = " (relative)" if self.relative else (" (rescaled)" if self.rescale else "")
        extra += f" [{', '.join(self.flags)}]" if self.flags else ""
        return f"{self.family} on {self.location}{extra}"


def defense_cells(
    victim: Victim,
    base: AttackConfig,
    families: Iterable[DefenseFamily],
    *,
    attacks: Iterable[str] = ("whitebox",),
    adaptive: Iterable[bool] = (False, True),
    draws: int = 3,
) -> list[tuple[DefenseFamily, float, AccuracyCell, AttackCell, str, bool]]:
    """The cells of a defense sweep: (family, level, accuracy cell, attack cell, attack, aware)."""
    rows = []
    attacks, adaptive = list(attacks), list(adaptive)
    for fam in families:
        for level in (0.0, *fam.levels):
            defenses = fam.spec(level)
            acc = accuracy_spec(
                victim,
                victim_config=base.victim,
                split=base.split,
                defenses=defenses,
                draws=draws,
                seed=base.seed,
            )
            for attack in attacks:
                for aware in adaptive if defenses else [False]:
                    cfg = for_attack(
                        base,
                        attack,
                        defenses=defenses,
                        adaptive=aware,
                        overrides=_aware_overrides(base, fam, aware),
                    )
                    rows.append((fam, level, acc, attack_spec(cfg, victim), attack, aware))
    return rows


def defense_sweep(
    victim: Victim,
    base: AttackConfig,
    families: Iterable[DefenseFamily],
    store: ResultStore,
    *,
    attacks: Iterable[str] = ("whitebox",),
    adaptive: Iterable[bool] = (False, True),
    draws: int = 3,
    progress: bool = False,
    executor: Executor | None = None,
    display: Any = None,
) -> list[dict[str, Any]]:
    """Trade-off points: for each family and level, accuracy and each attack's PSNR/SSIM."""
    rows = defense_cells(victim, base, families, attacks=attacks, adaptive=adaptive, draws=draws)
    specs: list[Spec] = [spec for row in rows for spec in (row[2], row[3])]
    run_specs(specs, victim, store, executor=executor, progress=progress, display=display)
    return [
        _point(fam, level, store.get(acc.key), store.get(cell.key), attack, aware)
        for fam, level, acc, cell, attack, aware in rows
    ]


def _aware_overrides(base: AttackConfig, fam: DefenseFamily, aware: bool) -> dict[str, Any]:
    # The defense-aware white-box attack on feature dropout matches only the kept entries.
    if aware and fam.family == "dropout" and fam.location == "features" and not fam.rescale:
        return {**base.overrides, "ignore_zero_features": True}
    return dict(base.overrides)


def _point(
    fam: DefenseFamily,
    level: float,
    acc: dict[str, Any],
    rec: dict[str, Any],
    attack: str,
    aware: bool,
) -> dict[str, Any]:
    return {
        "family": fam.family,
        "location": fam.location,
        "label": fam.label,
        "level": level,
        "accuracy": acc["summary"]["mean"],
        "accuracy_ci95": acc["summary"]["ci95"],
        "attack": attack,
        "adaptive": aware,
        "psnr": rec["summary"]["psnr"]["mean"],
        "ssim": rec["summary"]["ssim"]["mean"],
        "psnr_ci95": rec["summary"]["psnr"]["ci95"],
        "ssim_ci95": rec["summary"]["ssim"]["ci95"],
        "key": rec["key"],
    }


def split_cells(
    victim: Victim,
    base: AttackConfig,
    *,
    attacks: Iterable[str] = ("whitebox", "inverse-network", "shadow"),
    splits: Iterable[str] | None = None,
) -> list[tuple[int, str, str, AttackCell]]:
    """The cells of a split sweep: (depth, split point, attack, cell)."""
    names = list(splits) if splits is not None else split_points(victim.model)
    attacks = list(attacks)
    return [
        (depth, split, attack, attack_spec(for_attack(base, attack, split=split), victim))
        for depth, split in enumerate(names)
        for attack in attacks
    ]


def split_sweep(
    victim: Victim,
    base: AttackConfig,
    store: ResultStore,
    *,
    attacks: Iterable[str] = ("whitebox", "inverse-network", "shadow"),
    splits: Iterable[str] | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    display: Any = None,
) -> list[dict[str, Any]]:
    """Attack every split point (or ``splits``) with each attack; one point per cell."""
    rows = split_cells(victim, base, attacks=attacks, splits=splits)
    specs = [cell for *_, cell in rows]
    run_specs(specs, victim, store, executor=executor, progress=progress, display=display)
    points = []
    for depth, split, attack, cell in rows:
        rec = store.get(cell.key)
        points.append(
            {
                "split": split,
                "depth": depth,
                "attack": attack,
                "psnr": rec["summary"]["psnr"]["mean"],
                "ssim": rec["summary"]["ssim"]["mean"],
                "key": rec["key"],
                "converged": rec["provenance"]["reconstruction_info"].get("converged"),
            }
        )
    return points
