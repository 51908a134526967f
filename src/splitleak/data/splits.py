"""The attacker's own data (SPEC §2), kept disjoint from the evaluation images.

* ``same-set`` – the victim's training images (those it was actually trained on);
* ``same-distribution`` – the victim's test split minus the evaluation images: disjoint
  from the training data and from what is attacked;
* ``other-distribution`` – another dataset of the same image shape (e.g. KMNIST for MNIST);
* ``noise`` – uniform random pixels (no labels, so no query-free shadow training).

The indices drawn are saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from splitleak.data.dataset import ImageDataset
from splitleak.errors import InputError

NOISE_SAMPLES = 10_000


@dataclass(frozen=True)
class AttackerSamples:
    """The attacker's samples in pixel space [0, 1], with labels where the source has them.

    Shapes: pixels (N, C, H, W); labels (N,) or None.
    """

    kind: str
    source: str
    pixels: torch.Tensor
    labels: torch.Tensor | None
    indices: list[int] | None

    def __len__(self) -> int:
        return len(self.pixels)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "n": len(self), "indices": self.indices}


def draw_attacker_samples(
    *,
    kind: str,
    train: ImageDataset,
    test: ImageDataset,
    eval_indices: torch.Tensor,
    train_indices: torch.Tensor | None = None,
    other: ImageDataset | None = None,
    n: int | None = None,
    seed: int = 0,
) -> AttackerSamples:
    """Draw the attacker's samples; ``n`` (None = all available) are picked with ``seed``."""
    generator = torch.Generator().manual_seed(seed + 7919)  # distinct from the eval draw
    if kind == "noise":
        count = n or NOISE_SAMPLES
        pixels = torch.rand(count, *test.shape, generator=generator)
        return AttackerSamples(kind, f"uniform[0,1] seed={seed}", pixels, None, None)
    if kind == "same-set":
        pool, base = (
            train,
            (train_indices if train_indices is not None else torch.arange(len(train))),
        )
    elif kind == "same-distribution":
        keep = torch.ones(len(test), dtype=torch.bool)
        keep[eval_indices] = False
        pool, base = test, keep.nonzero().flatten()
    elif kind == "other-distribution":
        if other is None:
            raise InputError("other-distribution attacker data needs --other-dataset")
        if other.shape != test.shape:
            raise InputError(
                f"{other.name} images are {other.shape}, the victim's are {test.shape}; "
                "pick an --other-dataset of the same shape"
            )
        pool, base = other, torch.arange(len(other))
    else:
        raise InputError(
            f"unknown attacker data {kind!r}; valid: same-set, same-distribution, "
            "other-distribution, noise"
        )
    if n is not None and n < len(base):
        base = base[torch.randperm(len(base), generator=generator)[:n]].sort().values
    chosen = pool.subset(base)
    return AttackerSamples(
        kind, f"{pool.name}:{pool.split}", chosen.to_float(), chosen.labels, base.tolist()
    )
