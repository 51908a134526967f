"""The CIFAR-10 half of ACSAC Tables 3, 4, 6 and 8, resumable across sessions.

    python benchmarks/cifar10_grid.py --threads 1                 # run what is missing
    python benchmarks/cifar10_grid.py --max-cells 3 --threads 1   # a bounded chunk
    python benchmarks/cifar10_grid.py --splits conv11 --threads 1 # one process per split set
    python benchmarks/cifar10_grid.py --tables 6 --attacker-data same-distribution  # a subset
    python benchmarks/cifar10_grid.py --status                    # what is done, what is left
    python benchmarks/cifar10_grid.py --report                    # tables, claims, convergence

Every finished cell is written at once to ``results/cifar10_grid/cells/<key>.json``
(atomically; the key hashes the cell's full configuration, the victim's configuration and
the attacks' resolved precision), so a killed or time-limited run loses at most the cell in
progress and a rerun — in this session or a later one, after ``git pull`` — computes only the
missing cells. Commit the cell files. With the default ``--precision auto`` a cell finished in
bf16 (on a CPU with fast bf16) or in fp32 (elsewhere) counts as done on any machine, and
``--report`` prints each cell's precision.

The victim is the authors' recipe (50 epochs, batch 32, Adam/AMSGrad, flip + affine
augmentation) trained with ``--victim-precision`` (default bf16, the committed run's); its
checkpoint lives in ``results/cifar10_grid/cache/models`` and an interrupted training run
resumes from its ``.partial`` state there. Decoders and shadows are trained
with the authors' budget: 50 epochs, batch 32 (``--attack-epochs``, ``--attack-batch-size``);
their loss histories are kept in each cell as the convergence record.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import threat_grid_tables
from common import DATA_DIR, RESULTS, cell

from splitleak.attacks.factory import attack_settings
from splitleak.config import AttackConfig, ComputeSettings, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError
from splitleak.progress import progress_mode
from splitleak.records import read_json, stable_hash, versions, write_json
from splitleak.report.published import WHITEBOX, published

SPLITS = ["conv11", "ReLU22", "ReLU32"]
ATTACKER_DATA = ["same-set", "same-distribution", "noise"]
GRID_DIR = RESULTS / "cifar10_grid"


def grid(
    tables: list[str], protocols: list[str], splits: list[str] = SPLITS
) -> list[dict[str, Any]]:
    """Every cell of the requested tables: a dict of AttackConfig fields plus labels."""
    specs: list[dict[str, Any]] = []
    if "3" in tables:
        specs += [
            {"table": "3", "attack": "whitebox", "profile": p, "row": p}
            for p in ("paper", "authors-code", "strong")
        ]
    specs += threat_grid_tables.grid(tables)  # Tables 4, 8 and 6, as at the CPU budget
    # Both protocols of a cell run back to back: the second reuses the first's decoder or
    # shadow from the model cache, so a session that stops mid-grid leaves no model trained
    # for only half of its cells.
    return [
        {**spec, "split": split, "protocol": protocol}
        for spec in specs
        for split in splits
        for protocol in protocols
    ]


def attack_config(spec: dict[str, Any], victim: VictimConfig, args: argparse.Namespace) -> Any:
    fields = {k: v for k, v in spec.items() if k not in {"table", "row"}}
    return AttackConfig(
        victim=victim,
        n_eval=args.n_eval,
        seed=args.seed,
        attack_epochs=args.attack_epochs,
        attack_batch_size=args.attack_batch_size,
        compute=ComputeSettings(precision=args.precision, threads=args.threads),
        **fields,
    )


def cell_path(cfg: AttackConfig, precision: str | None = None) -> Path:
    """Where a cell's record lives: a hash of its configuration, compute and settings resolved.

    The thread count is left out (it changes the speed, not the numbers) and ``auto`` is
    resolved to this machine's device type and precision (or to ``precision`` when given), so
    that a cell computed in bf16 is not taken for an fp32 one on another machine. The attack's
    settings are hashed as its profile resolves them today, so a changed preset makes its
    cells missing again instead of leaving records of the old settings under the new name.
    """
    identity = cfg.model_dump(mode="json", exclude={"compute"})
    compute = cfg.compute.resolve()
    identity["compute"] = {
        "device": compute.device.type,
        "precision": precision or compute.precision,
    }
    identity["settings"] = attack_settings(cfg, architecture="cifar10-net")
    return GRID_DIR / "cells" / f"{stable_hash(identity, length=20)}.json"


class Found(NamedTuple):
    """A finished cell: where its record lives, and the record."""

    path: Path
    record: dict[str, Any]


def find_cell(cfg: AttackConfig) -> Found | None:
    """The record of a finished cell (and its path), or None.

    With ``--precision auto`` a cell measured in either full-quality precision counts as
    done: this machine's own first, then the other of fp32 and bf16 (``auto`` is bf16 where
    bf16 is fast and fp32 elsewhere, and ``results/precision.json`` measures the two within
    each other's confidence intervals). So a session on an AVX2-only CPU continues the grid
    in fp32 instead of recomputing the cells an AVX-512 BF16 machine finished, and the
    report says each cell's precision. An explicit ``--precision`` accepts only its own. A
    file that does not parse as a record (cut short by a crash) does not count.
    """
    candidates = [cell_path(cfg)]
    if cfg.compute.precision == "auto":
        own = cfg.compute.resolve().precision
        candidates += [cell_path(cfg, p) for p in ("bf16", "fp32") if p != own]
    return next((Found(p, r) for p in candidates if (r := read_record(p)) is not None), None)


def read_record(path: Path) -> dict[str, Any] | None:
    """The finished cell's record at ``path``, or None (a damaged file is computed again)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "summary" in record else None


def reference(spec: dict[str, Any]) -> Any:
    if spec["attack"] == "whitebox":
        return WHITEBOX.get(("cifar10-net", spec["split"]))
    return published(spec["attack"], "cifar10-net", spec["split"], spec["row"])


def run_cell(spec: dict[str, Any], cfg: AttackConfig, victim: Any) -> dict[str, Any]:
    from splitleak.experiment import run_attack

    started = time.perf_counter()
    run = run_attack(cfg, victim=victim, progress=True)
    info = run.provenance["reconstruction_info"]
    return {
        "spec": {k: v for k, v in spec.items() if k != "row"},
        "row": str(spec["row"]),
        "config": cfg.model_dump(mode="json"),
        "summary": run.summary,
        "published": reference(spec),
        "per_image": run.per_image,
        "seconds": round(time.perf_counter() - started, 1),
        "queries": run.queries_used,
        "compute": run.provenance["compute"],
        "victim": {"checkpoint": Path(str(victim.checkpoint)).name,
                   "test_accuracy": victim.meta.get("test_accuracy")},
        "attack_hyperparameters": run.provenance["attack_hyperparameters"],
        "tuning": run.provenance.get("tuning"),  # the `tuned` search: its images and picks
        "info": {k: v for k, v in info.items() if k != "feature_mse"},
        "versions": versions(),
    }  # fmt: skip


def convergence(history: list[float], *, window: int = 10) -> dict[str, float]:
    """How far a fit's training loss still moved at its end: its relative change per window.

    ``change_last``: (loss at the last epoch − loss ``window`` epochs before) / the latter, in
    percent (negative: still falling). A learned attack whose loss moves by well under a
    percent over its last ten epochs at a halved-every-10 learning rate has converged for the
    purposes of the grid; a larger move says its budget may be short.
    """
    if len(history) <= window:
        raise ValueError(f"a history of {len(history)} epochs has no {window}-epoch window")
    before, last = history[-window - 1], history[-1]
    return {
        "epochs": len(history),
        "first": history[0],
        "final": last,
        "change_last": 100.0 * (last - before) / before,
    }


def convergence_lines(records: list[dict[str, Any]]) -> list[str]:
    """A markdown table: each distinct learned module's loss at its start and end."""
    modules: dict[tuple[Any, ...], tuple[list[float], list[str]]] = {}
    for rec in records:
        info = rec.get("info", {})
        history = info.get("loss_history") or info.get("shadow_loss_history")
        if not history or len(history) <= 10 or None in history:
            continue
        spec = rec["spec"]
        # Both protocols' cells of one module (the second reused the first's) are one row.
        key = (spec["table"], rec["row"], spec["split"], tuple(history))
        modules.setdefault(key, (history, []))[1].append(spec["protocol"])
    lines = []
    for (table, row, split, _), (history, protocols) in modules.items():
        c = convergence(history)
        lines.append(
            f"| T{table} | {row} | {split} | {', '.join(sorted(protocols))} | {c['epochs']} "
            f"| {c['first']:.4g} | {c['final']:.4g} | {c['change_last']:+.2f} % |"
        )
    header = [
        "| table | row | split | protocols | epochs | loss, epoch 1 | loss, last | "
        "change over the last 10 epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return header + lines if lines else []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--tables", default="3,4,8,6")
    parser.add_argument("--protocols", default="paper,random")
    parser.add_argument(
        "--splits",
        default=",".join(SPLITS),
        help="the splits to run (two processes on disjoint splits can share the cells folder)",
    )
    parser.add_argument(
        "--attacker-data",
        default=None,
        help="only the learned attacks' cells with this attacker data (comma-separated: "
        "same-set, same-distribution, noise), e.g. the cheaper same-distribution shadows first",
    )
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--victim-epochs", type=int, default=50)
    parser.add_argument("--attack-epochs", type=int, default=50)
    parser.add_argument("--attack-batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", help="the attacks' precision")
    parser.add_argument(
        "--victim-precision",
        default="bf16",
        help="the victim's training precision (part of its checkpoint key; default: bf16, "
        "the committed run's, so that every machine continues the same victim)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-cells", type=int, default=None, help="stop after N new cells")
    parser.add_argument("--status", action="store_true", help="list done and missing cells")
    parser.add_argument(
        "--report", action="store_true", help="print the tables, claims and convergence"
    )
    args = parser.parse_args()  # fmt: skip
    try:
        progress_mode()  # a bad SPLITLEAK_PROGRESS fails now, not after the victim loads
    except SplitleakError as err:
        parser.error(str(err))
    os.environ.setdefault("SPLITLEAK_CACHE", str(GRID_DIR / "cache"))
    victim_cfg = VictimConfig(
        model="cifar10-net", data_dir=args.data_dir, train=TrainSettings(epochs=args.victim_epochs)
    )
    splits = args.splits.split(",")
    if unknown := sorted(set(splits) - set(SPLITS)):
        parser.error(f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(SPLITS)}")
    specs = grid(args.tables.split(","), args.protocols.split(","), splits)
    if args.attacker_data is not None:
        wanted = set(args.attacker_data.split(","))
        if unknown := sorted(wanted - set(ATTACKER_DATA)):
            parser.error(f"unknown attacker data {', '.join(unknown)}; "
                         f"choose from {', '.join(ATTACKER_DATA)}")  # fmt: skip
        specs = [s for s in specs if s.get("attacker_data") in wanted]
    cells = [(s, attack_config(s, victim_cfg, args)) for s in specs]
    found = {id(c): find_cell(c) for _, c in cells}
    done = [(s, c) for s, c in cells if found[id(c)] is not None]
    if args.status or args.report:
        print(f"{len(done)} of {len(cells)} cells done")
        records = {}
        if args.report:
            records = {id(c): f.record for _, c in done if (f := found[id(c)]) is not None}
        for spec, cfg in cells:
            rec = records.get(id(cfg))
            if rec is not None:
                print(f"| T{spec['table']} | {spec['protocol']} | {spec['attack']} / {rec['row']} "
                      f"| {spec['split']} | {cell(rec['summary'], rec['published'])} "
                      f"| {rec['seconds']} | {rec['compute'].get('precision')} |")  # fmt: skip
            elif args.status and found[id(cfg)] is None:
                print(f"missing: T{spec['table']} {spec['protocol']} {spec['attack']} "
                      f"{spec['row']} {spec['split']}")  # fmt: skip
        if args.report:
            rows = [
                {**spec, "row_key": str(spec["row"]), "summary": records[id(cfg)]["summary"]}
                for spec, cfg in done
            ]
            for line in threat_grid_tables.claims(rows) or ["claims 2 and 3: no split complete"]:
                print(f"- {line}")
            # The claims above may compare cells of both precisions; say how many of each.
            by = Counter(rec["compute"].get("precision") for rec in records.values())
            print("cells by precision: " + ", ".join(f"{k} {n}" for k, n in sorted(by.items())))
            if table := convergence_lines(list(records.values())):
                print("\nConvergence of the learned attacks (training loss per epoch):\n")
                print("\n".join(table))
        return
    from dataclasses import replace

    from splitleak.compute import cpu_has_fast_bf16
    from splitleak.experiment import load_victim

    compute = cells[0][1].compute.resolve()
    compute.apply_threads()
    victim_compute = replace(compute, precision=args.victim_precision)
    if args.victim_precision == "bf16" and compute.device.type == "cpu" and not cpu_has_fast_bf16():
        print("note: this CPU has no fast bf16 (no AMX or AVX-512 BF16): the attacks run in fp32, "
              "and if the victim is not in the cache yet, training it in bf16 here is emulated "
              "and ~15x slower than fp32 (measured on an AVX2-only CPU: 5 against 75 img/s); "
              "train it where bf16 is fast or on a GPU.", flush=True)  # fmt: skip
    victim = load_victim(victim_cfg, compute=victim_compute)
    print(f"victim: test accuracy {victim.meta['test_accuracy']:.4f}; "
          f"{len(done)} of {len(cells)} cells already done", flush=True)  # fmt: skip
    new = 0
    for spec, cfg in cells:
        if found[id(cfg)] is not None:
            continue
        path = cell_path(cfg)
        if args.max_cells is not None and new >= args.max_cells:
            break
        record = run_cell(spec, cfg, victim)
        write_json(path, record)
        new += 1
        print(f"T{spec['table']} {spec['protocol']:6s} {spec['attack']} {record['row']} "
              f"{spec['split']}: {cell(record['summary'], record['published'])} "
              f"[{record['seconds']} s]", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
