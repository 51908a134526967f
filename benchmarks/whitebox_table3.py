"""Reproduce ACSAC Table 3 (white-box rMLE) with the paper, authors-code and strong profiles.

    python benchmarks/whitebox_table3.py --model mnist-net --epochs 20
    python benchmarks/whitebox_table3.py --model cifar10-net --epochs 2 --protocols paper

Trains (or reuses) the victim on the full training set, then attacks each split point
with each profile under each protocol, printing every measured cell beside the paper's.
Every row is a cell of the store (``--store``, shared with audits and studies).
"""

from __future__ import annotations

import time

from common import (
    add_cell_options,
    attack_records,
    base_parser,
    cell,
    open_executor,
    open_store,
    print_markdown,
    save_results,
)

from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.experiment import load_victim
from splitleak.report.published import WHITEBOX

SPLITS = {"mnist-net": ["conv1", "ReLU2"], "cifar10-net": ["conv11", "ReLU22", "ReLU32"]}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--model", default="mnist-net", choices=sorted(SPLITS))
    parser.add_argument("--profiles", default="paper,authors-code,strong")
    parser.add_argument("--splits", default=None, help="comma-separated (default: the paper's)")
    parser.add_argument("--steps", type=int, default=None, help="override every profile's steps")
    add_cell_options(parser, store="store_whitebox")
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
    overrides = {"steps": args.steps} if args.steps else {}
    grid = [
        (protocol, profile, split)
        for protocol in args.protocols.split(",")
        for profile in args.profiles.split(",")
        for split in splits
    ]
    configs = [
        AttackConfig(
            victim=victim_cfg,
            split=split,
            profile=profile,
            protocol=protocol,
            n_eval=args.n_eval,
            seed=args.seed,
            overrides=overrides,
        )
        for protocol, profile, split in grid
    ]
    with open_executor(args) as executor:  # each row is a cell of the shared store
        records = attack_records(configs, victim, open_store(args), executor=executor)
    for (protocol, profile, split), record in zip(grid, records, strict=True):
        rows.append(
            {
                "protocol": protocol,
                "profile": profile,
                "split": split,
                "summary": record["summary"],
                "seconds": record["timings"]["reconstruct_s"],
                "published": WHITEBOX.get((args.model, split)),
                "cell": cell(record["summary"], WHITEBOX.get((args.model, split))),
                "key": record["key"],
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
