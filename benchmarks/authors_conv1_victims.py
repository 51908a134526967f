"""``authors-code`` at MNIST conv1 on several victims, beside each victim's conv1 conditioning.

    python benchmarks/authors_conv1_victims.py --threads 1 \\
        --checkpoints results/worst_case_victims/mnist-net-58970a693831a8d0,...

Companion of ``authors_gradient_scale.py``. Under the authors' optimiser (Adam, AMSGrad,
eps 1e-3) rMLE through the linear conv1 is, once the gradients are far below eps, gradient
descent with step ``lr / eps``; after a fixed 5,000 steps the directions of the input that
conv1 barely changes are still unresolved. So the PSNR the profile reaches depends on the
victim's conv1 weights, not only on the attack. For each checkpoint this script runs the
unchanged ``authors-code`` white-box cell (paper protocol) and records the singular values
of conv1 as a linear map from the 784 normalised pixels to its 4,608 outputs (its Jacobian,
computed by pushing the pixel basis through the edge): the smallest one governs the slowest
direction. A diagnostic across victims, not a tuning: nothing is chosen from it.

Writes ``results/authors_conv1_victims.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, base_parser, print_markdown, save_results

from splitleak.compute import Compute
from splitleak.config import AttackConfig, VictimConfig
from splitleak.experiment import load_victim, run_attack
from splitleak.models import split_model


def conv1_singular_values(edge: torch.nn.Module, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Singular values of the affine edge's linear part (descending).

    Shapes: the Jacobian is (feature entries, pixels); the result (pixels,).
    """
    pixels = int(torch.tensor(image_shape).prod())
    with torch.no_grad():
        basis = torch.eye(pixels).reshape(pixels, *image_shape)
        offset = edge(torch.zeros(1, *image_shape))
        jacobian = (edge(basis) - offset).reshape(pixels, -1).T
    return torch.linalg.svdvals(jacobian.double())


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--checkpoints",
        default=",".join(map(str, sorted((RESULTS / "worst_case_victims").glob("mnist-net-*")))),
        help="comma-separated victim checkpoints (default: the committed worst-case victims)",
    )
    parser.set_defaults(protocols="paper")
    args = parser.parse_args()
    Compute(threads=args.threads).apply_threads()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for checkpoint in (Path(c) for c in args.checkpoints.split(",") if c):
        victim_cfg = VictimConfig(model="mnist-net", data_dir=args.data_dir, checkpoint=checkpoint)
        victim = load_victim(victim_cfg)
        sv = conv1_singular_values(split_model(victim.model, at="conv1").edge.eval(), (1, 28, 28))
        for protocol in args.protocols.split(","):
            cfg = AttackConfig(
                victim=victim_cfg, split="conv1", attack="whitebox", profile="authors-code",
                protocol=protocol, n_eval=args.n_eval, seed=args.seed,
            )  # fmt: skip
            begun = time.perf_counter()
            summary = run_attack(cfg, victim=victim, progress=False).summary
            rows.append({
                "checkpoint": checkpoint.name, "protocol": protocol,
                "victim_seed": victim.meta.get("train", {}).get("seed"),
                "victim_accuracy": victim.meta.get("test_accuracy"),
                "sigma_min": round(float(sv[-1]), 4), "sigma_max": round(float(sv[0]), 4),
                "psnr": round(summary["psnr"]["mean"], 2), "psnr_ci95": summary["psnr"]["ci95"],
                "ssim": round(summary["ssim"]["mean"], 4),
                "seconds": round(time.perf_counter() - begun, 1),
            })  # fmt: skip
            print(rows[-1], flush=True)
    save_results("authors_conv1_victims", rows, args, started, args.out)
    columns = ["checkpoint", "protocol", "victim_seed", "victim_accuracy", "sigma_min"]
    print_markdown(rows, [*columns, "sigma_max", "psnr", "ssim"])


if __name__ == "__main__":
    main()
