"""The split planner's figure: leakage against edge compute, and feature size per split."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from splitleak.errors import InputError
from splitleak.planner import RECOGNISABLE_SSIM, PlanRow, pareto_front
from splitleak.records import atomic_path
from splitleak.report.plots import METADATA, SVG_HASHSALT

_PLAIN, _PARETO, _CHOSEN = "#9aa5b1", "#1f6feb", "#d1242f"


def _leakage_panel(
    ax: Axes, rows: list[PlanRow], front: list[PlanRow], recommended: PlanRow | None
) -> None:
    """Leakage (worst-case SSIM) against edge MACs; rows without leakage are left out."""
    points = [(r, r.edge_macs, r.leakage) for r in rows if r.leakage is not None]
    for on_front, colour, label in (
        (False, _PLAIN, "split point"),
        (True, _PARETO, "Pareto front"),
    ):
        group = [(x, y) for r, x, y in points if (r in front) == on_front]
        if group:
            xs, ys = zip(*group, strict=True)
            ax.scatter(xs, ys, s=28, color=colour, label=label, zorder=3)
    for r, x, y in points:
        ax.annotate(r.split, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    chosen = [(x, y) for r, x, y in points if r == recommended]
    if chosen:
        ax.scatter(
            *chosen[0],
            s=260,
            facecolors="none",
            edgecolors=_CHOSEN,
            linewidths=1.8,
            label="recommended",
            zorder=4,
        )
    _leakage_axes(ax, measured=bool(points), zero_macs=any(x == 0 for _, x, _ in points))


def _leakage_axes(ax: Axes, *, measured: bool, zero_macs: bool) -> None:
    """Threshold line, scales, labels and legend of the leakage panel."""
    ax.axhline(RECOGNISABLE_SSIM, color="0.4", linestyle="--", linewidth=1)
    ax.text(
        0.01,
        RECOGNISABLE_SSIM,
        " recognisable above (paper)",
        color="0.3",
        fontsize=7,
        va="bottom",
        transform=ax.get_yaxis_transform(),
    )
    # A split before any weighted layer costs 0 MACs, which a log axis cannot show.
    if zero_macs:
        ax.set_xscale("symlog", linthresh=1)
    else:
        ax.set_xscale("log")
    ax.set_xlabel("edge MACs per input (log)")
    ax.set_ylabel("leakage: worst-case SSIM (higher is worse)")
    ax.set_title("privacy against edge compute", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if measured:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no leakage measured", ha="center", transform=ax.transAxes)


def _bytes_panel(ax: Axes, rows: list[PlanRow], front: list[PlanRow]) -> None:
    """Feature bytes sent per input at each split, in depth order (log scale)."""
    ordered = sorted(rows, key=lambda r: r.cost.depth)
    colours = [_PARETO if r in front else _PLAIN for r in ordered]
    ax.bar(range(len(ordered)), [r.feature_bytes for r in ordered], color=colours)
    ax.set_xticks(range(len(ordered)), [r.split for r in ordered], rotation=90, fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("split point (in forward order)")
    ax.set_ylabel("feature bytes sent per input")
    ax.set_title("bandwidth per split", fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(
        handles=[
            Patch(color=_PLAIN, label="split point"),
            Patch(color=_PARETO, label="Pareto front"),
        ],
        fontsize=7,
    )


def plot_plan(
    rows: list[PlanRow], dest_stem: Path, *, recommended: PlanRow | None = None, title: str = ""
) -> list[Path]:
    """Write the planner figure as ``dest_stem.png`` and ``dest_stem.svg``, atomically.

    Left: leakage (worst-case SSIM) against edge MACs on a log axis, each split labelled,
    the Pareto front highlighted, the recommended split circled and the paper's
    recognisability threshold (SSIM 0.3) dashed. Right: feature bytes per input by split.

    Args:
        rows: from :func:`splitleak.planner.plan_rows`.
        dest_stem: output path without suffix; ``.png`` and ``.svg`` are appended.
        recommended: the row to circle, e.g. ``recommend(...).row``.
        title: figure title.

    Returns:
        The PNG and SVG paths.

    Raises:
        InputError: ``rows`` is empty.
    """
    if not rows:
        raise InputError("no split points to plot; give at least one PlanRow")
    front = pareto_front(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    try:
        _leakage_panel(left, rows, front, recommended)
        _bytes_panel(right, rows, front)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        paths = []
        for fmt in ("png", "svg"):
            dest = dest_stem.with_name(f"{dest_stem.name}.{fmt}")
            with atomic_path(dest) as tmp, plt.rc_context({"svg.hashsalt": SVG_HASHSALT}):
                fig.savefig(tmp, format=fmt, dpi=130, metadata=METADATA[fmt])
            paths.append(dest)
    finally:
        plt.close(fig)
    return paths
