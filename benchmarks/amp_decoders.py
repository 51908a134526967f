"""bf16 mixed precision against fp32 for the paper's inverse-network decoders, step by step.

    python benchmarks/amp_decoders.py --threads 1
    python benchmarks/amp_decoders.py --threads 1 --repeats 5 --samples 2048

``precision.py`` times whole attacks; this one isolates the decoder's training, the part
that ``--precision`` changes for the inverse network. For each of the five paper decoders
(MNIST conv1 and ReLU2, CIFAR-10 conv11, ReLU22 and ReLU32) it runs
:func:`splitleak.attacks.fitting.fit_module` — the training loop every learned attack
uses, with the authors' optimiser and batch 32 — for one epoch over ``--samples`` synthetic
feature/image pairs (speed does not depend on the values), once in fp32 and once in bf16
(autocast + channels_last, what ``auto`` resolves to on CPUs with fast bf16), alternating
the two ``--repeats`` times and keeping each one's best rate. Also records the decoder's
multiply-accumulates per sample and its narrowest layer. Writes
``results/amp_decoders.json``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from common import base_parser, save_results
from torch import nn

from splitleak.attacks.decoders import PAPER_DECODERS
from splitleak.attacks.fitting import fit_module
from splitleak.compute import Compute

#: The feature shape at each paper split point, and the image shape, per model.
FEATURES = {
    ("mnist-net", "conv1"): (8, 24, 24),
    ("mnist-net", "ReLU2"): (16, 8, 8),
    ("cifar10-net", "conv11"): (64, 32, 32),
    ("cifar10-net", "ReLU22"): (128, 16, 16),
    ("cifar10-net", "ReLU32"): (128, 8, 8),
}
IMAGES = {"mnist-net": (1, 28, 28), "cifar10-net": (3, 32, 32)}


def macs_per_sample(module: nn.Module, z: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers)."""
    total = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += out[0].numel() * layer.in_channels // layer.groups * k
        elif isinstance(layer, nn.ConvTranspose2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += inputs[0][0].numel() * layer.out_channels // layer.groups * k
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features

    hooks = [m.register_forward_hook(count) for m in module.modules()]
    with torch.no_grad():
        module(z[:1])
    for hook in hooks:
        hook.remove()
    return total


def narrowest(module: nn.Module) -> int:
    """The smallest channel count on either side of any convolution."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return min(min(m.in_channels, m.out_channels) for m in convs)


def rate(key: tuple[str, str], compute: Compute, z: torch.Tensor, x: torch.Tensor) -> float:
    """Images per second of one fit_module epoch (after a short warm-up epoch)."""
    torch.manual_seed(0)
    module = PAPER_DECODERS[key]()
    kwargs: dict[str, Any] = {"loss_fn": F.mse_loss, "batch_size": 32, "amsgrad": True,
                              "adam_eps": 1e-3, "shuffle": False, "compute": compute}  # fmt: skip
    fit_module(module, z[:256], x[:256], epochs=1, **kwargs)  # warm-up: oneDNN kernels
    started = time.perf_counter()
    fit_module(module, z, x, epochs=1, **kwargs)
    return len(z) / (time.perf_counter() - started)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1024, help="pairs per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="alternations; best rate kept")
    args = parser.parse_args()
    started = time.perf_counter()
    fp32 = Compute.resolve("cpu", "fp32", args.threads)
    bf16 = Compute.resolve("cpu", "bf16", args.threads)
    fp32.apply_threads()
    rows: list[dict[str, Any]] = []
    for key, shape in FEATURES.items():
        generator = torch.Generator().manual_seed(0)
        z = torch.randn(args.samples, *shape, generator=generator).relu()
        x = torch.randn(args.samples, *IMAGES[key[0]], generator=generator)
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            rates["fp32"].append(rate(key, fp32, z, x))
            rates["bf16"].append(rate(key, bf16, z, x))
        module = PAPER_DECODERS[key]()
        macs = macs_per_sample(module, z)
        row: dict[str, Any] = {
            "model": key[0],
            "split": key[1],
            "macs_per_sample": macs,
            "narrowest_channels": narrowest(module),
            "fp32_images_per_s": [round(r, 1) for r in rates["fp32"]],
            "bf16_images_per_s": [round(r, 1) for r in rates["bf16"]],
            "bf16_speedup": round(max(rates["bf16"]) / max(rates["fp32"]), 3),
        }
        print(f"{key[0]:12s} {key[1]:7s} {macs / 1e6:7.2f} MMAC/sample, "
              f"narrowest {row['narrowest_channels']:3d} channels: fp32 "
              f"{max(rates['fp32']):7.0f} img/s, bf16 {max(rates['bf16']):7.0f} img/s, "
              f"bf16 x{row['bf16_speedup']}", flush=True)  # fmt: skip
        rows.append(row)
    dest = save_results("amp_decoders", rows, args, started, out=args.out)
    print(f"results in {dest}")


if __name__ == "__main__":
    main()
