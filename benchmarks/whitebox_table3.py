"""Reproduce ACSAC Table 3 (white-box rMLE) with the paper, authors-code and strong profiles.

    python benchmarks/whitebox_table3.py --model mnist-net --epochs 20
    python benchmarks/whitebox_table3.py --model cifar10-net --epochs 2 --protocols paper

Trains (or reuses) the victim on the full training set, then attacks each split point
with each profile under each protocol, printing every measured cell beside the paper's.
"""

from __future__ import annotations

import time

from common import base_parser, cell, print_markdown, save_results

from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.experiment import load_victim, run_attack
from splitleak.report.published import WHITEBOX

SPLITS = {"mnist-net": ["conv1", "ReLU2"], "cifar10-net": ["conv11", "ReLU22", "ReLU32"]}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--model", default="mnist-net", choices=sorted(SPLITS))
    parser.add_argument("--profiles", default="paper,authors-code,strong")
    parser.add_argument("--splits", default=None, help="comma-separated (default: the paper's)")
    parser.add_argument("--steps", type=int, default=None, help="override every profile's steps")
    args = parser.parse_args()
    started = time.perf_counter()
    victim_cfg = VictimConfig(
        model=args.model, data_dir=args.data_dir, train=TrainSettings(epochs=args.epochs)
    )
    victim = load_victim(victim_cfg)
    print(
        f"victim {args.model}: test accuracy {victim.meta['test_accuracy']:.4f} "
        f"({victim.meta['epochs']} epochs, checkpoint {victim.checkpoint})"
    )
    rows = []
    splits = args.splits.split(",") if args.splits else SPLITS[args.model]
    for protocol in args.protocols.split(","):
        for profile in args.profiles.split(","):
            for split in splits:
                overrides = {"steps": args.steps} if args.steps else {}
                cfg = AttackConfig(
                    victim=victim_cfg,
                    split=split,
                    profile=profile,
                    protocol=protocol,
                    n_eval=args.n_eval,
                    seed=args.seed,
                    overrides=overrides,
                )
                run = run_attack(cfg, victim=victim, progress=False)
                rows.append(
                    {
                        "protocol": protocol,
                        "profile": profile,
                        "split": split,
                        "summary": run.summary,
                        "seconds": run.timings["reconstruct_s"],
                        "published": WHITEBOX.get((args.model, split)),
                        "cell": cell(run.summary, WHITEBOX.get((args.model, split))),
                    }
                )
                print(
                    f"{protocol:6s} {profile:12s} {split:7s} {rows[-1]['cell']}  "
                    f"[{rows[-1]['seconds']:.1f} s]",
                    flush=True,
                )
    dest = save_results(f"table3_{args.model}", rows, args, started, out=args.out)
    print_markdown(rows, ["protocol", "profile", "split", "cell", "seconds"])
    print(f"accuracy {victim.meta['test_accuracy']:.4f}; results in {dest}")


if __name__ == "__main__":
    main()
