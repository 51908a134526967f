"""Shared helpers for the benchmark scripts: argument parsing, result files, tables."""

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


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(__file__).parents[2] / "shared" / "datasets",
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
