"""Image grids: a reference row, then one row of reconstructions per setting."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from splitleak.records import atomic_path


def save_image_grid(
    rows: list[tuple[str, torch.Tensor]],
    dest: Path,
    *,
    captions: list[list[str]] | None = None,
    cell_inches: float = 0.9,
) -> Path:
    """Write a PNG grid with one labelled row per ``(label, images)`` pair.

    Args:
        rows: (label, images) with images (N, C, H, W) in [0, 1]; every row has the same N.
        dest: the PNG path (written atomically).
        captions: optional per-row, per-image text shown under each cell (e.g. PSNR).
    """
    n_rows, n_cols = len(rows), max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        figsize=(cell_inches * n_cols + 1.4, cell_inches * n_rows * 1.15),
    )
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(images):
                continue
            img = images[c].detach().float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            if captions is not None and captions[r] and c < len(captions[r]):
                ax.set_xlabel(captions[r][c], fontsize=6, labelpad=1)
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
    with atomic_path(dest) as tmp:
        fmt = dest.suffix.lstrip(".") or "png"
        # No version or date in the metadata, so the same images give the same file.
        meta = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else None
        fig.savefig(tmp, format=fmt, dpi=130, metadata=meta)
    plt.close(fig)
    return dest
