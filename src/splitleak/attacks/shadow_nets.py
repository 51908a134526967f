"""Shadow edge networks: surrogates of f1 that output a tensor of the features' shape.

* ``same`` – f1's own structure (the attacker knows the architecture, not the weights),
  freshly initialised;
* ``different`` – the authors' small CNNs for their split points (SPEC §5.4), and an
  automatic CNN for any other split point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from splitleak.models import split_model


def _mnist_conv1() -> nn.Module:
    # (N, 1, 28, 28) -> (N, 8, 26, 26) -> (N, 8, 24, 24); no activation, as the authors'.
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3))


def _mnist_relu2() -> nn.Module:
    # 28 -> 26 -> 24 -> pool 12 -> 10 -> 8; (N, 16, 8, 8). One ReLU, at the end, as listed
    # for the authors' net (their CIFAR shadows name a ReLU after every conv; this one does not).
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.Conv2d(8, 16, 3),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3),
        nn.Conv2d(16, 16, 3),
        nn.ReLU(),
    )


def _cifar_conv11() -> nn.Module:
    # (N, 3, 32, 32) -> (N, 64, 32, 32); no activation, like conv11 itself.
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 64, 3, padding=1))


def _cifar_relu22() -> nn.Sequential:
    # (N, 3, 32, 32) -> (N, 64, 32, 32) -> pool (N, 64, 16, 16) -> (N, 128, 16, 16)
    return nn.Sequential(
        nn.Conv2d(3, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 5, padding=2),
        nn.ReLU(),
    )


def _cifar_relu32() -> nn.Module:
    # ReLU22's shadow, then pool (N, 128, 8, 8) and a 5x5 conv.
    return nn.Sequential(
        *_cifar_relu22(), nn.MaxPool2d(2), nn.Conv2d(128, 128, 5, padding=2), nn.ReLU()
    )


PAPER_SHADOWS: dict[tuple[str, str], Callable[[], nn.Module]] = {
    ("mnist-net", "conv1"): _mnist_conv1,
    ("mnist-net", "ReLU2"): _mnist_relu2,
    ("cifar10-net", "conv11"): _cifar_conv11,
    ("cifar10-net", "ReLU22"): _cifar_relu22,
    ("cifar10-net", "ReLU32"): _cifar_relu32,
}


def auto_shadow(image_shape: tuple[int, int, int], feature_shape: tuple[int, ...]) -> nn.Module:
    """A small CNN from images to features of ``feature_shape`` (spatial or flat)."""
    c_img, h_img, _ = image_shape
    layers: list[nn.Module] = [nn.Conv2d(c_img, 32, 3, padding=1), nn.ReLU()]
    if len(feature_shape) == 1:
        layers += [
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.LazyLinear(feature_shape[0]),
        ]
        return nn.Sequential(*layers)
    c, h, w = feature_shape
    size, channels = h_img, 32
    while size // 2 >= h:
        layers += [
            nn.MaxPool2d(2),
            nn.Conv2d(channels, min(channels * 2, 128), 3, padding=1),
            nn.ReLU(),
        ]
        size, channels = size // 2, min(channels * 2, 128)
    layers += [nn.AdaptiveAvgPool2d((h, w)), nn.Conv2d(channels, c, 1)]
    return nn.Sequential(*layers)


def build_shadow(
    kind: str,
    *,
    architecture: str,
    split: str,
    structure: Callable[[], nn.Module],
    image_shape: tuple[int, int, int],
    feature_shape: tuple[int, ...],
    seed: int = 0,
) -> nn.Module:
    """A freshly initialised shadow edge.

    Args:
        kind: ``same`` (f1's structure, from ``structure``) or ``different``.
        structure: builds the victim architecture with fresh weights (no trained values).
    """
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
        torch.manual_seed(seed)
        if kind == "same":
            return split_model(structure(), at=split).edge
        builder = PAPER_SHADOWS.get((architecture, split))
        model = builder() if builder else auto_shadow(image_shape, feature_shape)
        with torch.no_grad():  # materialise lazy layers
            model(torch.zeros(1, *image_shape))
    return model
