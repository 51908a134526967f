"""Trade-off and split-sweep charts (PNG and SVG), drawn from sweep points only."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from splitleak.records import atomic_path

RECOGNISABLE_SSIM = 0.3  # the papers: SSIM above ~0.3 means a person recognises the input

# Reproducible files: no date and no version in the metadata, fixed SVG ids.
SVG_HASHSALT = "splitleak"
METADATA: dict[str, dict[str, None]] = {
    "svg": {"Date": None, "Creator": None},
    "png": {"Software": None},
}


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically and close the figure."""
    paths = []
    for fmt in ("png", "svg"):
        dest = stem.with_suffix(f".{fmt}")
        with atomic_path(dest) as tmp, plt.rc_context({"svg.hashsalt": SVG_HASHSALT}):
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight", metadata=METADATA[fmt])
        paths.append(dest)
    plt.close(fig)
    return paths


def tradeoff_figure(
    points: list[dict[str, Any]],
    stem: Path,
    *,
    attack: str = "whitebox",
    adaptive: bool = False,
    title: str = "",
) -> list[Path]:
    """Accuracy against SSIM and against PSNR, one line per defense family and location.

    Every line starts at the undefended point (level 0) and follows increasing levels.
    """
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if p["attack"] == attack and (p["adaptive"] == adaptive or p["level"] == 0):
            lines[p["label"]].append(p)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for label, pts in sorted(lines.items()):
        pts = sorted(pts, key=lambda q: q["level"])
        style = "-" if "features" in label else "--"
        for ax, metric in zip(axes, ("ssim", "psnr"), strict=True):
            ax.plot(
                [q[metric] for q in pts],
                [q["accuracy"] for q in pts],
                style,
                marker="o",
                ms=3,
                label=label,
            )
            for q in pts[1:]:
                ax.annotate(
                    f"{q['level']:g}",
                    (q[metric], q["accuracy"]),
                    fontsize=6,
                    xytext=(2, 2),
                    textcoords="offset points",
                )
    axes[0].axvline(RECOGNISABLE_SSIM, color="grey", ls=":", lw=1)
    axes[0].text(
        RECOGNISABLE_SSIM,
        0.02,
        " recognisable →",
        fontsize=7,
        color="grey",
        transform=axes[0].get_xaxis_transform(),
    )
    axes[0].set_xlabel("reconstruction SSIM (lower = more private)")
    axes[1].set_xlabel("reconstruction PSNR, dB (lower = more private)")
    axes[0].set_ylabel("test accuracy under the defense")
    axes[1].legend(fontsize=7, loc="lower right")
    mode = "defense-aware" if adaptive else "non-adaptive"
    fig.suptitle(title or f"accuracy vs privacy — {attack} attack, {mode}", fontsize=10)
    return save_figure(fig, stem)


def split_sweep_figure(points: list[dict[str, Any]], stem: Path, *, title: str = "") -> list[Path]:
    """PSNR and SSIM against split depth, one line per attack."""
    by_attack: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_attack[p["attack"]].append(p)
    depths = sorted({p["depth"] for p in points})
    splits = [next(p["split"] for p in points if p["depth"] == d) for d in depths]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for attack, pts in sorted(by_attack.items()):
        pts = sorted(pts, key=lambda q: q["depth"])
        for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
            ax.plot(
                [q["depth"] for q in pts], [q[metric] for q in pts], marker="o", ms=3, label=attack
            )
    axes[1].axhline(RECOGNISABLE_SSIM, color="grey", ls=":", lw=1)
    axes[1].text(0, RECOGNISABLE_SSIM, "recognisable above", fontsize=7, color="grey", va="bottom")
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM"), strict=True):
        ax.set_xticks(depths, splits, rotation=60, fontsize=7)
        ax.set_xlabel("split point (edge ends after this layer)")
        ax.set_ylabel(f"reconstruction {name}")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "reconstruction quality by split point", fontsize=10)
    return save_figure(fig, stem)
