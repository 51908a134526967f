"""The label floor: how much SSIM a cloud gets from the predicted label alone.

    python benchmarks/label_floor.py                      # MNIST and CIFAR-10
    python benchmarks/label_floor.py --datasets mnist

The cloud computes the class of every input anyway. Its "reconstruction" here is the mean
training image of that class (the true label: an accurate classifier's answer), scored with
the same PSNR/SSIM as every attack, on the paper protocol (first test image of each class)
and the random protocol (``--n-eval`` test images drawn with ``--seed``). A leakage limit
below this floor cannot be met by any accurate classifier against an attacker who uses the
label. No model is trained; writes ``results/label_floor.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import DATA_DIR, cell, print_markdown, save_results

from splitleak.data import load_dataset
from splitleak.evaluation import evaluation_indices
from splitleak.metrics import image_metrics, summarize


def class_means(images: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """The mean image of each class, in [0, 1]: (classes, C, H, W)."""
    pixels = images.float() / 255
    return torch.stack([pixels[labels == c].mean(dim=0) for c in range(classes)])


def floor(dataset: str, protocol: str, args: argparse.Namespace) -> dict:
    train = load_dataset(dataset, "train", root=args.data_dir, download=False)
    test = load_dataset(dataset, "test", root=args.data_dir, download=False)
    means = class_means(train.images, train.labels, len(train.classes))
    index = evaluation_indices(test.labels, protocol=protocol, n=args.n_eval, seed=args.seed)  # type: ignore[arg-type]
    x = test.images[index].float() / 255
    metrics = image_metrics(means[test.labels[index]], x)
    return {
        "dataset": dataset,
        "protocol": protocol,
        "n": len(index),
        "psnr": summarize(metrics["psnr"]).as_dict(),
        "ssim": summarize(metrics["ssim"]).as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--datasets", default="mnist,cifar10")
    parser.add_argument("--protocols", default="paper,random")
    parser.add_argument("--n-eval", type=int, default=100, help="images, random protocol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default results/label_floor.json")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [
        floor(dataset, protocol, args)
        for dataset in args.datasets.split(",")
        for protocol in args.protocols.split(",")
    ]
    table = [{**row, "label floor (PSNR / SSIM)": cell(row, None)} for row in rows]
    print_markdown(table, ["dataset", "protocol", "n", "label floor (PSNR / SSIM)"])
    print(f"→ {save_results('label_floor', rows, args, started, args.out)}")


if __name__ == "__main__":
    main()
