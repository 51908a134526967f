"""Inverse-network decoders: features at a split point -> images (normalised input space).

The paper's decoders (ACSAC §5, the authors' code) for their split points, and an automatic
decoder built from the feature shape for any other split point or user model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _paper_mnist_conv1() -> nn.Module:
    # (N, 8, 24, 24) -> (N, 1, 28, 28): one 5x5 conv with padding 4.
    return nn.Conv2d(8, 1, kernel_size=5, padding=4)


def _paper_mnist_relu2() -> nn.Module:
    # (N, 16, 8, 8) -> (N, 8, 12, 12) -> (N, 1, 28, 28)
    return nn.Sequential(
        nn.ConvTranspose2d(16, 8, kernel_size=5),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 1, kernel_size=5, stride=2, output_padding=1),
    )


def _up(c_in: int, c_out: int) -> nn.Module:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1)


def _paper_cifar_conv11() -> nn.Module:
    # (N, 64, 32, 32) -> (N, 3, 32, 32)
    return nn.ConvTranspose2d(64, 3, kernel_size=3, padding=1)


def _paper_cifar_relu22() -> nn.Module:
    # (N, 128, 16, 16) -> (N, 64, 32, 32) -> (N, 3, 32, 32)
    return nn.Sequential(_up(128, 64), nn.ReLU(), nn.ConvTranspose2d(64, 3, 3, padding=1))


def _paper_cifar_relu32() -> nn.Module:
    # (N, 128, 8, 8) -> (N, 128, 16, 16) -> (N, 64, 32, 32) -> (N, 3, 32, 32)
    return nn.Sequential(
        _up(128, 128), nn.ReLU(), _up(128, 64), nn.ReLU(), nn.ConvTranspose2d(64, 3, 3, padding=1)
    )


PAPER_DECODERS: dict[tuple[str, str], Callable[[], nn.Module]] = {
    ("mnist-net", "conv1"): _paper_mnist_conv1,
    ("mnist-net", "ReLU2"): _paper_mnist_relu2,
    ("cifar10-net", "conv11"): _paper_cifar_conv11,
    ("cifar10-net", "ReLU22"): _paper_cifar_relu22,
    ("cifar10-net", "ReLU32"): _paper_cifar_relu32,
}


class _Resize(nn.Module):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            x
            if tuple(x.shape[-2:]) == self.size
            else F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        )


def auto_decoder(feature_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> nn.Module:
    """A decoder for any feature shape.

    Spatial features (C, h, w): a 3x3 conv, then one stride-2 transposed conv per factor of
    two between h and H (channels halved, at least 16), a resize to (H, W) if the factor is
    not a power of two, and a 3x3 conv to the image channels. Flat features (F,): a
    two-layer MLP to a (64, H/4, W/4) map, then the spatial decoder.
    """
    c_img, h_img, w_img = image_shape
    if len(feature_shape) == 1:
        h0, w0 = max(h_img // 4, 1), max(w_img // 4, 1)
        mlp = nn.Sequential(
            nn.Linear(feature_shape[0], 1024),
            nn.ReLU(),
            nn.Linear(1024, 64 * h0 * w0),
            nn.ReLU(),
            nn.Unflatten(1, (64, h0, w0)),
        )
        return nn.Sequential(mlp, auto_decoder((64, h0, w0), image_shape))
    if len(feature_shape) != 3:
        raise ValueError(f"cannot build a decoder for features of shape {feature_shape}")
    c, h, _ = feature_shape
    layers: list[nn.Module] = [nn.Conv2d(c, c, 3, padding=1), nn.ReLU()]
    for _ in range(max(round(math.log2(h_img / h)), 0)):
        c_next = max(c // 2, 16)
        layers += [_up(c, c_next), nn.ReLU()]
        c = c_next
    layers += [_Resize((h_img, w_img)), nn.Conv2d(c, c_img, 3, padding=1)]
    return nn.Sequential(*layers)


def build_decoder(
    kind: str,
    *,
    architecture: str,
    split: str,
    feature_shape: tuple[int, ...],
    image_shape: tuple[int, int, int],
) -> nn.Module:
    """``paper`` (the authors' decoder where one exists, else automatic) or ``auto``."""
    if kind == "paper" and (architecture, split) in PAPER_DECODERS:
        return PAPER_DECODERS[(architecture, split)]()
    return auto_decoder(feature_shape, image_shape)
