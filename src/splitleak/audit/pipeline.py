"""Running an audit: resolve the grid, provide the victim, submit the cells, render the report.

Every cell is stored the moment it finishes (see :mod:`splitleak.store`); rerunning the
same command skips finished cells, so an interrupted audit continues where it stopped, with
any executor. With ``store``, the cells live in a shared store (where benchmarks, studies
and other audits find them, and this audit finds theirs) and the audit folder holds hard
links to its own, so ``splitleak report DIR`` needs nothing but the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from splitleak.audit.config import AuditConfig, Budget, load_budget
from splitleak.audit.estimate import estimate_costs
from splitleak.audit.grid import Cell, build_grid, repeat_for_victims, victim_seeds
from splitleak.cells import accuracy_spec, attack_spec
from splitleak.config import ComputeSettings, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError
from splitleak.executor import Executor, provide_victim, submit_cells
from splitleak.experiment import Victim
from splitleak.models import split_points
from splitleak.planner import split_costs
from splitleak.records import read_json, versions, write_json
from splitleak.store import ResultStore

MANIFEST = "audit.json"


@dataclass
class AuditOutcome:
    """What an audit did: where, which cells it computed, reused, and which failed (-> why)."""

    directory: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: Path | None = None


def prepare(
    cfg: AuditConfig,
    out: Path,
    *,
    budget: Budget | None = None,
    compute: ComputeSettings | None = None,
    download: bool = False,
) -> tuple[Budget, VictimConfig, list[Cell], torch.nn.Module, Any]:
    """Resolve the budget and the grid, and estimate each cell (no training).

    ``budget`` replaces the named one (benchmarks size their own grid); ``compute`` is where
    the attacks run (default: ``auto``, see :class:`~splitleak.config.ComputeSettings`).
    ``download`` lets missing dataset files be fetched into an explicit ``cfg.data_dir``
    (without ``data_dir`` they are fetched into the cache folder either way).
    """
    from splitleak.data import load_dataset
    from splitleak.models.zoo import default_dataset, resolve_architecture

    budget = budget or load_budget(cfg.budget)
    dataset = cfg.dataset or default_dataset(cfg.model)
    victim_cfg = VictimConfig(
        model=cfg.model,
        dataset=dataset,
        data_dir=cfg.data_dir,
        download=download,
        checkpoint=cfg.checkpoint,
        train=TrainSettings(epochs=budget.victim_epochs),
    )
    test = load_dataset(dataset, "test", root=cfg.data_dir, download=victim_cfg.may_download)
    arch = resolve_architecture(cfg.model, dataset=dataset, input_shape=test.shape)
    model = arch.build()
    cells = build_grid(cfg, budget, victim_cfg, split_points(model), compute)
    cells += repeat_for_victims(cells, victim_seeds(victim_cfg, cfg.victim_count(budget))[1:])
    estimate_costs(cells, model, test.shape, attacker_pool=len(test), test_size=len(test))
    return budget, victim_cfg, cells, model, arch


MANIFEST_FORMAT = "splitleak-audit/1"
_EARLY = {"config", "victim", "cells"}


def read_manifest(directory: Path) -> dict[str, Any]:
    """An audit folder's manifest, or a one-line :class:`SplitleakError` saying what is wrong.

    A damaged manifest (not JSON, or not an audit's) is refused, never overwritten: the
    folder's cells may be all that is left of hours of work.
    """
    path = directory / MANIFEST
    try:
        manifest = read_json(path)
    except FileNotFoundError:
        raise SplitleakError(
            f"{directory} is not an audit folder (no {MANIFEST}); "
            "run `splitleak audit --out DIR` first"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SplitleakError(
            f"{path} is damaged ({err}); restore it, or move it away and rerun the same "
            "`splitleak audit` command to rebuild it (stored cells are reused)"
        ) from None
    # Manifests written before the format field existed are recognised by their contents.
    early = isinstance(manifest, dict) and "format" not in manifest and manifest.keys() >= _EARLY
    if not early and (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT):
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SplitleakError(
            f"{path} is not a splitleak audit manifest (format {found!r}, expected "
            f"{MANIFEST_FORMAT!r}); use another --out, or move the file away"
        )
    return manifest


def write_manifest(
    out: Path,
    cfg: AuditConfig,
    budget: Budget,
    victim: Victim,
    cells: list[Cell],
    *,
    others: Mapping[int, Victim] | None = None,
) -> dict[str, Any]:
    """The audit's manifest: configuration, victims, split costs and the grid's cell keys.

    ``victim`` is the first victim (the defenses and the planner use it); ``others`` the
    further ones by seed. ``created`` is kept from the first run, so a resumed audit renders
    the same report.
    """
    victims = [(0, victim), *sorted((others or {}).items())]
    previous = read_manifest(out) if (out / MANIFEST).is_file() else {}
    costs = split_costs(victim.model, victim.architecture.input_shape)
    manifest = {
        "format": MANIFEST_FORMAT,
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
        "victims": [
            {
                "seed": seed,
                "test_accuracy": v.meta.get("test_accuracy"),
                "checkpoint": str(v.checkpoint),
            }
            for seed, v in victims
        ],
        "split_costs": [asdict(c) for c in costs],
        "cells": [c.describe() for c in cells],
        "versions": versions(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def assign_keys(
    cells: list[Cell],
    victim: Victim,
    seed: int,
    *,
    victim_config: VictimConfig | None = None,
    others: Mapping[int, Victim] | None = None,
) -> None:
    """Give each grid cell its spec and store key (they name the trained victim).

    ``victim`` is the first victim; ``others`` the further victims by their training seed,
    for the cells of :func:`~splitleak.audit.grid.repeat_for_victims`.
    """
    for cell in cells:
        if cell.kind == "accuracy":
            cell.spec = accuracy_spec(
                victim,
                victim_config=victim_config or VictimConfig(),
                split=cell.split,
                defenses=cell.defenses,
                draws=cell.draws,
                seed=seed,
            )
        else:
            assert cell.attack is not None
            target = (others or {})[cell.victim_seed] if cell.victim_seed else victim
            cell.spec = attack_spec(cell.attack, target)
        cell.key = cell.spec.key


def run_audit(
    cfg: AuditConfig,
    out: Path,
    *,
    on_cell: Callable[[Cell, bool], None] | None = None,
    progress: Any = None,
    executor: Executor | None = None,
    store: Path | None = None,
    budget: Budget | None = None,
    compute: ComputeSettings | None = None,
    download: bool = False,
) -> AuditOutcome:
    """Run every missing cell of the grid, storing each as it finishes, then the report.

    Args:
        on_cell: called with (cell, already_stored) for each stored cell, then for each
            other cell as it starts.
        progress: an object with ``start(cells, done=keys)``, ``advance(cell)`` and
            optionally ``running(cell)`` and ``failed(cell)`` (the CLI's
            :class:`~splitleak.progress.CellProgress`).
        executor: where cells run (default: serially, in this process).
        store: a shared store folder (default: the audit folder itself).
        budget: a budget object instead of the named one (benchmarks).
        compute: where the attacks run, and — if given — where the victim is trained
            (default: attacks on ``auto``, the victim on the CPU in fp32, so that the same
            audit trains the same victim on every machine).
        download: fetch missing dataset files into an explicit ``cfg.data_dir`` (never
            done otherwise; without ``data_dir`` they go to the cache folder).
    """
    from splitleak.report.html import render_report

    budget, victim_cfg, cells, _, _ = prepare(
        cfg, out, budget=budget, compute=compute, download=download
    )
    victim = provide_victim(victim_cfg, executor, progress=progress is not None, compute=compute)
    further = {c.victim_seed: c.victim for c in cells if c.victim_seed and c.victim is not None}
    others = {
        seed: provide_victim(config, executor, progress=progress is not None, compute=compute)
        for seed, config in sorted(further.items())
    }
    assign_keys(cells, victim, cfg.seed, victim_config=victim_cfg, others=others)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, cfg, budget, victim, cells, others=others)
    folder = ResultStore(out)
    shared = folder if store is None or store.resolve() == out.resolve() else ResultStore(store)
    for cell in cells:  # cells this folder holds but the shared store lacks: share them
        if shared is not folder and folder.has(cell.key):
            folder.link(cell.key, shared)
    done = {c.key for c in cells if shared.has(c.key)}
    by_key = {c.key: c for c in cells}
    if on_cell is not None:
        for cell in cells:
            if cell.key in done:
                on_cell(cell, True)
    if progress is not None:
        progress.start(cells, done=done)

    def started(key: str) -> None:
        if on_cell is not None:
            on_cell(by_key[key], False)
        if progress is not None and hasattr(progress, "running"):
            progress.running(by_key[key])

    result = submit_cells(
        [c.spec for c in cells if c.spec is not None],
        shared,
        victims=[victim, *others.values()],
        executor=executor,
        mirror=None if shared is folder else folder,
        estimates={c.key: c.estimate_s for c in cells},
        on_start=started,
        on_done=(lambda key: progress.advance(by_key[key])) if progress is not None else None,
        on_failed=(lambda key, _: progress.failed(by_key[key]))
        if progress is not None and hasattr(progress, "failed")
        else None,
    )
    computed = set(result.computed)
    outcome = AuditOutcome(out, failed=result.failed)
    for cell in cells:
        if cell.key in done:
            outcome.reused.append(cell.key)
        elif cell.key in computed:
            outcome.computed.append(cell.key)
    outcome.report = render_report(out)
    return outcome


def check_out_dir(out: Path, cfg: AuditConfig) -> None:
    """Refuse to mix two different audits in one folder."""
    if (out / MANIFEST).is_file():
        previous = read_manifest(out).get("config", {})
        if previous:  # defaults filled in: a manifest from before a new option still matches
            previous = AuditConfig.model_validate(previous).model_dump(mode="json")
        if previous and previous != cfg.model_dump(mode="json"):
            raise SplitleakError(
                f"{out} holds an audit with another configuration; "
                "use another --out or the same options"
            )
