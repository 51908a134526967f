"""Sweeps built from cells: defenses × levels, and split points × attacks.

A *cell* is one measured number set — an attack run or a defended-accuracy evaluation —
stored in a :class:`~splitleak.store.ResultStore` under the hash of its configuration.
Sweeps, the planner and the audit all ask for cells; a cell already in the store is read,
never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from splitleak.attacks.factory import for_attack
from splitleak.config import AttackConfig
from splitleak.experiment import Victim, defended_accuracy, run_attack
from splitleak.metrics import summarize
from splitleak.models import split_points
from splitleak.store import ResultStore, cell_key


def _victim_id(victim: Victim) -> dict[str, Any]:
    return {
        "checkpoint": str(victim.checkpoint.name if victim.checkpoint else None),
        "architecture": victim.architecture.name,
        "data": victim.meta.get("data_fingerprint"),
    }


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def attack_key(cfg: AttackConfig, victim: Victim) -> tuple[str, dict[str, Any]]:
    """The store key of an attack cell, and the identity it hashes."""
    identity = {
        "attack": cfg.model_dump(mode="json", exclude={"victim"}),
        "victim": _victim_id(victim),
    }
    return cell_key("attack", identity), identity


def accuracy_key(
    victim: Victim, *, split: str, defenses: tuple[str, ...], draws: int, seed: int
) -> tuple[str, dict[str, Any]]:
    """The store key of a defended-accuracy cell, and the identity it hashes."""
    identity = {
        "split": split,
        "defenses": list(defenses),
        "draws": draws if defenses else 1,
        "seed": seed,
        "victim": _victim_id(victim),
    }
    return cell_key("accuracy", identity), identity


def attack_cell(
    cfg: AttackConfig, victim: Victim, store: ResultStore, *, progress: bool = False
) -> dict[str, Any]:
    """Run (or read) one attack cell; its reconstructions are stored as uint8 pixels."""
    key, identity = attack_key(cfg, victim)
    if store.has(key):
        return store.get(key)
    run = run_attack(cfg, victim=victim, progress=progress)
    record = {
        "kind": "attack",
        "identity": identity,
        "config": cfg.model_dump(mode="json"),
        "summary": run.summary,
        "per_image": run.per_image,
        "timings": run.timings,
        "queries_used": run.queries_used,
        "provenance": run.provenance,
    }
    store.put(
        key, record, {"x_hat": _to_uint8(run.reconstruction.images), "x": _to_uint8(run.reference)}
    )
    return store.get(key) if store.root else {**record, "key": key}


def accuracy_cell(
    victim: Victim,
    store: ResultStore,
    *,
    split: str,
    defenses: tuple[str, ...],
    draws: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Run (or read) the defended test accuracy of ``victim`` cut at ``split``."""
    key, identity = accuracy_key(victim, split=split, defenses=defenses, draws=draws, seed=seed)
    if store.has(key):
        return store.get(key)
    values = defended_accuracy(victim, split=split, defenses=defenses, draws=draws, seed=seed)
    record = {
        "kind": "accuracy",
        "identity": identity,
        "values": values,
        "summary": summarize(values).as_dict(),
        "test_images": len(victim.test),
    }
    store.put(key, record, {})
    return store.get(key) if store.root else {**record, "key": key}


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
) -> list[dict[str, Any]]:
    """Trade-off points: for each family and level, accuracy and each attack's PSNR/SSIM."""
    points = []
    for fam in families:
        for level in (0.0, *fam.levels):
            defenses = fam.spec(level)
            acc = accuracy_cell(
                victim, store, split=base.split, defenses=defenses, draws=draws, seed=base.seed
            )
            for attack in attacks:
                for aware in adaptive if defenses else (False,):
                    cfg = for_attack(
                        base,
                        attack,
                        defenses=defenses,
                        adaptive=aware,
                        overrides=_aware_overrides(base, fam, aware),
                    )
                    rec = attack_cell(cfg, victim, store, progress=progress)
                    points.append(_point(fam, level, acc, rec, attack, aware))
    return points


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


def split_sweep(
    victim: Victim,
    base: AttackConfig,
    store: ResultStore,
    *,
    attacks: Iterable[str] = ("whitebox", "inverse-network", "shadow"),
    splits: Iterable[str] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Attack every split point (or ``splits``) with each attack; one point per cell."""
    names = list(splits) if splits is not None else split_points(victim.model)
    points = []
    for depth, split in enumerate(names):
        for attack in attacks:
            rec = attack_cell(
                for_attack(base, attack, split=split),
                victim,
                store,
                progress=progress,
            )
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
