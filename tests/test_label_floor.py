"""The label-floor benchmark's class means (oracle: hand-built images with known means)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import label_floor  # the benchmark itself

from splitleak.metrics import image_metrics


def test_class_means_are_the_per_class_pixel_means():
    images = torch.tensor([0, 255, 100, 200], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 7, 7)
    labels = torch.tensor([0, 0, 1, 1])
    means = label_floor.class_means(images, labels, 2)
    assert means.shape == (2, 1, 7, 7)
    torch.testing.assert_close(means[:, 0, 0, 0], torch.tensor([0.5, 150 / 255]))


def test_an_image_equal_to_its_class_mean_is_rebuilt_exactly():
    generator = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, 1, 8, 8), generator=generator, dtype=torch.uint8)
    images = one.expand(3, 1, 8, 8)  # a class of identical images: its mean is each of them
    means = label_floor.class_means(images, torch.zeros(3, dtype=torch.long), 1)
    metrics = image_metrics(means, one.float() / 255)
    assert metrics["ssim"].item() > 0.999
    assert metrics["psnr"].item() > 60
