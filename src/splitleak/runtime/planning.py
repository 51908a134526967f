"""The runtime and the planner: deploy what a plan recommends, feed measured cost back.

* :func:`recommended_configuration` reads the split (and defenses, where recorded) that
  ``splitleak plan`` (``plan.json``) or ``splitleak audit`` (``results.json``) recommended,
  for ``splitleak serve/edge --from-plan DIR``.
* :func:`read_measured` reads the report ``splitleak edge --out FILE`` writes (bytes sent
  and round-trip latency of every request against a real server), and
  :func:`measured_columns` puts those numbers beside the planner's computed ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitleak.errors import SplitleakError
from splitleak.records import write_json

EDGE_REPORT_FORMAT = "splitleak-edge-report/1"


@dataclass(frozen=True)
class PlanChoice:
    """What a plan recommends deploying."""

    split: str
    defenses: tuple[str, ...]
    source: Path


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SplitleakError(f"cannot read {path}: {err}") from None


def recommended_configuration(directory: Path) -> PlanChoice:
    """The recommended split of a plan or audit directory.

    Raises:
        SplitleakError: no plan.json / results.json, or the plan recommends no split.
    """
    for name in ("plan.json", "results.json"):
        path = directory / name
        if path.is_file():
            data = _read(path)
            break
    else:
        raise SplitleakError(
            f"{directory} holds neither plan.json nor results.json; give the --out folder "
            "of `splitleak plan`, `splitleak plan-defenses` or `splitleak audit`"
        )
    plan = data
    if name == "results.json" and isinstance(data, dict):
        # An audit: its joint plan (split and defense) where it made one, else its split plan.
        joint = data.get("joint_plan")
        plan = joint if isinstance(joint, dict) and joint.get("rows") else data.get("plan")
    if not isinstance(plan, dict) or not plan.get("recommended"):
        reason = plan.get("reason", "") if isinstance(plan, dict) else ""
        raise SplitleakError(f"the plan in {path} recommends no split ({reason}); relax its limits")
    chosen = plan["recommended"]
    if isinstance(chosen, dict):  # a joint plan: {"split": ..., "defenses": [...]}
        split, defenses = chosen.get("split"), chosen.get("defenses") or []
    else:  # a split plan: the split's name
        split, defenses = chosen, plan.get("defenses") or []
    if not isinstance(split, str) or not isinstance(defenses, list):
        raise SplitleakError(f"the plan in {path} has a malformed recommendation: {chosen!r}")
    return PlanChoice(split, tuple(str(d) for d in defenses), path)


@dataclass(frozen=True)
class Measured:
    """Measured cost of one split from an edge report."""

    split: str
    feature_dtype: str
    requests: int
    inputs: int
    bytes_per_input: float
    latency_p50_s: float
    latency_p99_s: float
    source: str


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation between order statistics."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize_requests(requests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals and latency percentiles over an edge report's request records."""
    latencies = [r["latency_s"] for r in requests]
    inputs = sum(r["batch"] for r in requests)
    sent = sum(r["bytes_sent"] for r in requests)
    return {
        "requests": len(requests),
        "inputs": inputs,
        "bytes_sent": sent,
        "bytes_per_input": sent / inputs if inputs else None,
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p99_s": percentile(latencies, 99) if latencies else None,
    }


def read_measured(
    paths: Sequence[Path], *, feature_dtype: str | None = None
) -> dict[str, Measured]:
    """Split -> measured cost, from one edge report per split.

    Args:
        paths: edge reports (``splitleak edge --out``).
        feature_dtype: the dtype the plan computes bytes for; reports must match it.

    Raises:
        SplitleakError: not an edge report, no requests, another feature dtype, or two
            reports for one split.
    """
    out: dict[str, Measured] = {}
    for path in paths:
        data = _read(path)
        if not isinstance(data, dict) or data.get("format") != EDGE_REPORT_FORMAT:
            raise SplitleakError(
                f"{path} is not an edge report; write one with `splitleak edge --out`"
            )
        if feature_dtype is not None and data.get("feature_dtype") != feature_dtype:
            raise SplitleakError(
                f"{path} measured {data.get('feature_dtype')} features but the plan computes "
                f"{feature_dtype}; give --feature-dtype {data.get('feature_dtype')}"
            )
        s = data.get("summary") or {}
        if not s.get("requests"):
            raise SplitleakError(f"{path} records no requests")
        if data["split"] in out:
            raise SplitleakError(f"two --measured reports for split {data['split']}; give one")
        out[data["split"]] = Measured(
            split=data["split"],
            feature_dtype=data["feature_dtype"],
            requests=s["requests"],
            inputs=s["inputs"],
            bytes_per_input=s["bytes_per_input"],
            latency_p50_s=s["latency_p50_s"],
            latency_p99_s=s["latency_p99_s"],
            source=str(path),
        )
    return out


def measured_columns(
    rows: list[dict[str, str]], measured: dict[str, Measured]
) -> list[dict[str, str]]:
    """The planner's table rows with measured bytes/input and round-trip p50 beside them.

    Raises:
        SplitleakError: a measured split is not in the table.
    """
    if not measured:
        return rows
    unknown = sorted(set(measured) - {r["split"] for r in rows})
    if unknown:
        raise SplitleakError(f"--measured split {unknown[0]} is not among the planned splits")
    out = []
    for row in rows:
        m = measured.get(row["split"])
        out.append(
            {
                **row,
                "sent/input (measured)": "—" if m is None else f"{m.bytes_per_input:.0f} B",
                "RTT p50 (measured)": "—" if m is None else f"{1000 * m.latency_p50_s:.2f} ms",
            }
        )
    return out


def write_measured(dest: Path, measured: dict[str, Measured], computed: dict[str, int]) -> None:
    """Record measured beside computed bytes per input (``computed``: split -> bytes)."""
    write_json(
        dest,
        [{**asdict(m), "computed_feature_bytes": computed.get(s)} for s, m in measured.items()],
    )
