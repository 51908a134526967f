"""fp32 against ``--precision auto``: the MNIST Table 3/4 cells and one CIFAR-10 epoch.

    python benchmarks/precision.py --threads 1
    python benchmarks/precision.py --threads 1 --attack-epochs 10 --cifar-images 10000

For every cell (white-box rMLE with the authors-code and strong profiles, inverse network
with same-set / same-distribution / noise queries; MNIST conv1 and ReLU2; random protocol)
the attack runs once in fp32 and once under ``auto`` on the same fp32-trained victim, and
the file records both summaries, the wall time of each, the speed ratio and whether the
auto mean lies inside the fp32 95 % interval (PSNR and SSIM). ``auto`` keeps rMLE in fp32
by design (reduced precision caps it), so white-box cells must agree exactly; learned
attacks train under bf16 autocast where the CPU has fast bf16. Then one CIFAR-10 training
epoch (or ``--cifar-images`` of it) is timed under both precisions (and those of
``--also``), and, separately, one MNIST victim epoch. Writes ``results/precision.json``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from common import base_parser, save_results

from splitleak.compute import Compute
from splitleak.config import AttackConfig, ComputeSettings, TrainSettings, VictimConfig
from splitleak.data import load_dataset
from splitleak.experiment import load_victim, run_attack
from splitleak.models.train import TrainConfig, train_classifier
from splitleak.models.zoo import get_architecture

CELLS = [
    ("3", "whitebox", "authors-code", None),
    ("3", "whitebox", "strong", None),
    ("4", "inverse-network", "paper", "same-set"),
    ("4", "inverse-network", "paper", "same-distribution"),
    ("4", "inverse-network", "paper", "noise"),
]


def _inside(value: float, summary: dict[str, Any]) -> bool:
    ci = summary.get("ci95") or 0.0
    return abs(value - summary["mean"]) <= ci + 1e-9


def attack_rows(victim: Any, victim_cfg: VictimConfig, args: Any) -> list[dict[str, Any]]:
    rows = []
    for table, attack, profile, data in CELLS:
        for split in ("conv1", "ReLU2"):
            result: dict[str, Any] = {"table": table, "attack": attack, "profile": profile,
                                      "attacker_data": data, "split": split}  # fmt: skip
            for precision in ("fp32", "auto", *args.also):
                cfg = AttackConfig(
                    victim=victim_cfg, split=split, attack=attack, profile=profile,
                    attacker_data=data or "same-distribution", protocol="random",
                    n_eval=args.n_eval, seed=args.seed, attack_epochs=args.attack_epochs,
                    attacker_samples=args.attacker_samples,
                    compute=ComputeSettings(precision=precision, threads=args.threads),
                )  # fmt: skip
                started = time.perf_counter()
                run = run_attack(cfg, victim=victim, progress=False)
                result[precision] = {
                    "summary": run.summary,
                    "seconds": round(time.perf_counter() - started, 2),
                    "compute": run.provenance["compute"],
                }
            a, f = result["auto"], result["fp32"]
            result["speed_ratio"] = round(f["seconds"] / max(a["seconds"], 1e-9), 3)
            for metric in ("psnr", "ssim"):
                diff = a["summary"][metric]["mean"] - f["summary"][metric]["mean"]
                result[f"{metric}_difference"] = round(diff, 4)
                result[f"{metric}_within_ci"] = _inside(a["summary"][metric]["mean"],
                                                        f["summary"][metric])  # fmt: skip
            fp, ap = f["summary"]["psnr"]["mean"], a["summary"]["psnr"]["mean"]
            print(f"T{table} {attack:16s} {profile:12s} {data or '':18s} {split:6s} "
                  f"fp32 {fp:.2f} dB / auto {ap:.2f} dB, speed x{result['speed_ratio']}",
                  flush=True)  # fmt: skip
            rows.append(result)
    return rows


def epoch_rows(args: Any) -> list[dict[str, Any]]:
    rows = []
    for model, dataset, images in (("cifar10-net", "cifar10", args.cifar_images),
                                   ("mnist-net", "mnist", args.mnist_images)):  # fmt: skip
        arch = get_architecture(model)
        train = load_dataset(dataset, "train", root=args.data_dir)
        x = arch.normalization.normalize(train.subset(range(images)).to_float())
        y = train.labels[:images]
        row: dict[str, Any] = {"model": model, "images": images}
        for precision in ("fp32", "auto", *args.also):
            compute = Compute.resolve("auto", precision, args.threads)
            torch.manual_seed(0)
            net = compute.module(arch.build())
            cfg = TrainConfig(epochs=1, augment=dataset == "cifar10", precision=compute.precision)
            started = time.perf_counter()
            log = train_classifier(net, x, y, config=cfg, progress=False, compute=compute)
            seconds = time.perf_counter() - started
            row[precision] = {"seconds": round(seconds, 1),
                              "images_per_s": round(images / seconds, 1),
                              "precision": compute.precision, "loss": log["loss"][0]}  # fmt: skip
        row["speed_ratio"] = round(row["fp32"]["seconds"] / row["auto"]["seconds"], 3)
        full = len(train) / row["auto"]["images_per_s"]
        row["auto_epoch_s_projected"] = round(full, 1)
        auto = row["auto"]
        print(f"{model}: one epoch on {images} images: fp32 {row['fp32']['seconds']} s, "
              f"auto ({auto['precision']}) {auto['seconds']} s, x{row['speed_ratio']}",
              flush=True)  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--attack-epochs", type=int, default=50)
    parser.add_argument("--attacker-samples", type=int, default=None)
    parser.add_argument("--cifar-images", type=int, default=50000)
    parser.add_argument("--skip-attacks", action="store_true")
    parser.add_argument(
        "--also",
        type=lambda t: [p for p in t.split(",") if p],
        default=[],
        help="more precisions to time the epochs under (e.g. bf16 where auto is fp32)",
    )
    parser.add_argument("--mnist-images", type=int, default=60000)
    args = parser.parse_args()
    started = time.perf_counter()
    Compute.resolve("auto", "auto", args.threads).apply_threads()
    rows: list[dict[str, Any]] = []
    if not args.skip_attacks:
        victim_cfg = VictimConfig(
            model="mnist-net", data_dir=args.data_dir, train=TrainSettings(epochs=args.epochs)
        )
        victim = load_victim(victim_cfg)  # fp32-trained: the same victim for both precisions
        print(f"victim: test accuracy {victim.meta['test_accuracy']:.4f}", flush=True)
        rows += attack_rows(victim, victim_cfg, args)
    rows += epoch_rows(args)
    dest = save_results("precision", rows, args, started, out=args.out)
    print(f"results in {dest}")


if __name__ == "__main__":
    main()
