"""Shared helpers for the benchmark scripts: argument parsing, result files, tables, cells.

A benchmark row is a cell (:mod:`splitleak.cells`): :func:`attack_records` submits the
rows' attack configurations to a store and reads the records back, so a benchmark reuses
the cells an audit or a study computed with the same configuration, and they reuse its
(point ``--store`` / ``$SPLITLEAK_STORE`` of all of them at one folder).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from splitleak.records import versions, write_json

RESULTS = Path(__file__).parent / "results"
#: The datasets beside the repository (``../shared/datasets``), every script's --data-dir default.
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="folder with mnist/, kmnist/, cifar-10-batches-py/",
    )
    parser.add_argument("--epochs", type=int, default=20, help="victim training epochs")
    parser.add_argument("--protocols", default="paper,random", help="paper and/or random")
    parser.add_argument("--n-eval", type=int, default=100, help="images for the random protocol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (default results/<name>.json)"
    )
    return parser


def cell(measured: dict[str, Any], published: tuple[float, float] | None) -> str:
    """'measured PSNR ± ci / SSIM ± ci (paper P / S)' for a markdown table."""
    p, s = measured["psnr"], measured["ssim"]
    text = f"{p['mean']:.2f}" + (f" ± {p['ci95']:.2f}" if p.get("ci95") else "")
    text += f" / {s['mean']:.4f}" + (f" ± {s['ci95']:.3f}" if s.get("ci95") else "")
    if published is not None:
        text += f" (paper {published[0]:.2f} / {published[1]:.4f})"
    return text


def save_results(
    name: str,
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    started: float,
    out: Path | None = None,
) -> Path:
    dest = out or RESULTS / f"{name}.json"
    write_json(
        dest,
        {
            "benchmark": name,
            "date": date.today().isoformat(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "wall_s": round(time.perf_counter() - started, 1),
            "args": {k: str(v) for k, v in vars(args).items()},
            "versions": versions(),
            "rows": rows,
        },
    )
    return dest


def print_markdown(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1)


def add_cell_options(parser: argparse.ArgumentParser, *, store: str, executor: bool = True) -> None:
    """``--store`` and (if ``executor``) ``--executor``, ``--workers``, ``--address``."""
    from splitleak.executor import EXECUTORS

    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"cell store shared with audits and studies (default: $SPLITLEAK_STORE, "
        f"else results/{store})",
    )
    parser.set_defaults(store_name=store, executor="serial", workers=None, address=None)
    if executor:
        parser.add_argument("--executor", default="serial", choices=EXECUTORS)
        parser.add_argument("--workers", type=int, default=None, help="cells in flight")
        parser.add_argument("--address", default=None, help="Ray cluster (or RAY_ADDRESS)")


def open_store(args: argparse.Namespace) -> Any:
    """The cell store the options name."""
    from splitleak.store import ResultStore, store_dir

    return ResultStore(store_dir(args.store, RESULTS / args.store_name))


def open_executor(args: argparse.Namespace) -> Any:
    """The executor the options name (close it, or use it in a ``with``)."""
    from splitleak.executor import make_executor

    return make_executor(args.executor, workers=args.workers, address=args.address)


def attack_records(
    configs: list[Any], victim: Any, store: Any, *, executor: Any = None
) -> list[dict[str, Any]]:
    """Each configuration's stored attack record, computing the missing ones (one batch).

    Records carry ``summary``, ``per_image``, ``queries_used``, ``timings``, ``wall_s`` and
    ``provenance``: everything a benchmark row reports.
    """
    from splitleak.cells import attack_spec
    from splitleak.executor import submit_cells

    specs = [attack_spec(cfg, victim) for cfg in configs]
    submit_cells(specs, store, victims=[victim], executor=executor).check()
    return [store.get(spec.key) for spec in specs]
