"""Which test images are attacked: the paper protocol and the robust random protocol."""

from __future__ import annotations

from typing import Literal

import torch

from splitleak.errors import InputError

Protocol = Literal["paper", "random"]


def evaluation_indices(
    labels: torch.Tensor,
    *,
    protocol: Protocol,
    n: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """Indices of the evaluation images in a test set.

    ``paper``: the first test image of each class, in class order (10 images for 10 classes).
    ``random``: ``n`` distinct images drawn with ``seed`` (report mean ± 95 % CI).

    Shapes: labels (N,) -> indices (K,).
    """
    if protocol == "paper":
        classes = torch.unique(labels).tolist()
        return torch.tensor([int((labels == c).nonzero()[0]) for c in classes])
    if protocol == "random":
        if not 1 <= n <= len(labels):
            raise InputError(f"--n-eval must be between 1 and {len(labels)}, got {n}")
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(labels), generator=generator)[:n]
    raise InputError(f"unknown evaluation protocol {protocol!r}; valid: paper, random")
