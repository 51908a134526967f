"""Image grids: a reference row, then one row of reconstructions per setting."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from splitleak.records import atomic_path

_GAP = 2  # pixels between two images of a row
_CAPTION = 0.45  # the height of a caption line, as a share of the image height


def mosaic(
    rows: list[torch.Tensor], *, gap: int = _GAP, caption_px: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """The images of every row tiled on a white canvas, as one (H', W', 3) float array.

    Args:
        rows: one (N, C, H, W) tensor in [0, 1] per row (C is 1 or 3; N may differ by row).
        gap: white pixels between images.
        caption_px: white pixels below each row (room for a caption line).

    Returns:
        The canvas and the pitch ``(dy, dx)``: image ``(r, c)`` starts at ``(r*dy, c*dx)``.
    """
    height, width = rows[0].shape[-2:]
    n_cols = max(len(images) for images in rows)
    dy, dx = height + caption_px + gap, width + gap
    canvas = np.ones((len(rows) * dy - gap, n_cols * dx - gap, 3), dtype=np.float32)
    for r, images in enumerate(rows):
        pixels = images.detach().float().clamp(0, 1).expand(-1, 3, -1, -1)
        for c, img in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
            canvas[r * dy : r * dy + height, c * dx : c * dx + width] = img
    return canvas, (dy, dx)


def save_image_grid(
    rows: list[tuple[str, torch.Tensor]],
    dest: Path,
    *,
    captions: list[list[str]] | None = None,
    cell_inches: float = 0.9,
) -> Path:
    """Write a PNG grid with one labelled row per ``(label, images)`` pair.

    The images are tiled into one array and drawn once (one axes, not one per image), so
    a grid of hundreds of images takes a fraction of a second.

    Args:
        rows: (label, images) with images (N, C, H, W) in [0, 1]; rows may hold fewer images.
        dest: the PNG path (written atomically).
        captions: optional per-row, per-image text shown under each cell (e.g. PSNR).
    """
    height = rows[0][1].shape[-2]
    caption_px = round(height * _CAPTION) if captions is not None else 0
    canvas, (dy, dx) = mosaic([images for _, images in rows], caption_px=caption_px)
    n_cols, margin, label_inches = max(len(images) for _, images in rows), 0.05, 1.2
    w_in = cell_inches * n_cols  # the canvas in inches, at its own aspect ratio
    h_in = w_in * canvas.shape[0] / canvas.shape[1]
    size = (label_inches + w_in + margin, h_in + 2 * margin)
    fig = plt.figure(figsize=size)
    ax = fig.add_axes((label_inches / size[0], margin / size[1], w_in / size[0], h_in / size[1]))
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for r, (label, images) in enumerate(rows):
        top = r * dy
        ax.text(-_GAP * 2, top + height / 2, label, fontsize=7, ha="right", va="center")
        if captions is not None and r < len(captions):
            for c, text in enumerate(captions[r][: len(images)]):
                ax.text(c * dx + (dx - _GAP) / 2, top + height + 1, text, fontsize=6,
                        ha="center", va="top")  # fmt: skip
    with atomic_path(dest) as tmp:
        fmt = dest.suffix.lstrip(".") or "png"
        # No version or date in the metadata, so the same images give the same file.
        meta = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else None
        fig.savefig(tmp, format=fmt, dpi=130, metadata=meta)
    plt.close(fig)
    return dest
