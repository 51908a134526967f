"""The worst-case attacker on MNIST, honestly measured: several victims, every attack, tuned
profiles tuned on attacker-side data only, and recognisability beside PSNR/SSIM.

    python benchmarks/worst_case.py                       # the full grid (resumable)
    python benchmarks/worst_case.py --small               # 1 victim, 20 images, short budgets
    python benchmarks/worst_case.py --max-minutes 25      # stop after 25 minutes; rerun to go on
    python benchmarks/worst_case.py --model cifar10-net   # CIFAR-10: conv11, ReLU22, ReLU32

CIFAR-10 (``--model cifar10-net``): one victim, the 50-epoch bf16 victim of
``cifar10_grid.py`` (its checkpoint is taken from that benchmark's cache; a second CIFAR
victim costs hours of training), split points conv11, ReLU22 and ReLU32, the same attacks,
``results/worst_case_cifar10-net.json``.

Grid: victims (mnist-net trained with ``TrainSettings.seed`` 0, 1, 2) × split points (conv1,
ReLU2, pool2, fc1) × attacks (white-box ``strong`` and ``tuned``, inverse network, model
reconstruction, query-free shadow, the two hybrids, the data-free UnSplit, and the white-box
hybrid ``tuned``), random protocol
(100 test images drawn with seed 0, the same for every victim). Attacker data: the test split
minus the evaluated images (same distribution); the tuned white-box attacker tunes on 16 of
its own images. Every finished cell is written at once into the results JSON (atomic
rename); a rerun skips the cells already there, so the run can be continued at any time.
Cells run in priority order: the two targets first (white-box at ReLU2, every attack at fc1).

Per cell: PSNR/SSIM (mean ± 95 % CI over the images), evaluator accuracy (reconstructions
and originals), identification rates, the verdict and the rule that decided it, convergence,
tuning provenance. Summary: per split point and attack, the per-victim means and the mean ±
95 % CI across victims; the worst attack per split point and victim (highest SSIM among all
attacks, every threat model allowed), and its mean across victims.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

from common import DATA_DIR, RESULTS, print_markdown

from splitleak.attacks.factory import attack_settings
from splitleak.config import AttackConfig, ComputeSettings, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError
from splitleak.experiment import Victim, default_cache_dir, load_victim, run_attack
from splitleak.metrics import summarize
from splitleak.progress import progress_mode
from splitleak.records import read_json, stable_hash, versions, write_json
from splitleak.report.results import verdicts

SPLITS = ("conv1", "ReLU2", "pool2", "fc1")
#: Per model: split points, dataset, victim epochs, default seeds, and the splits that run
#: first (the issue's targets).
MODELS: dict[str, dict[str, Any]] = {
    "mnist-net": {"splits": SPLITS, "dataset": "mnist", "epochs": 20, "seeds": "0,1,2",
                  "first": ("ReLU2", "fc1")},
    "cifar10-net": {"splits": ("conv11", "ReLU22", "ReLU32"), "dataset": "cifar10",
                    "epochs": 50, "seeds": "0", "first": ("ReLU22", "ReLU32")},
}  # fmt: skip
#: name -> (attack, profile); the order is the table's.
VARIANTS: dict[str, tuple[str, str]] = {
    "whitebox-strong": ("whitebox", "strong"),
    "whitebox-tuned": ("whitebox", "tuned"),
    "inverse-network": ("inverse-network", "strong"),
    "model-reconstruction": ("model-reconstruction", "strong"),
    "shadow": ("shadow", "strong"),
    "hybrid-whitebox": ("hybrid-whitebox", "strong"),
    "hybrid-blackbox": ("hybrid-blackbox", "strong"),
    "unsplit": ("unsplit", "paper"),
    "hybrid-whitebox-tuned": ("hybrid-whitebox", "tuned"),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="mnist-net")
    parser.add_argument("--epochs", type=int, default=None, help="victim epochs (20; CIFAR 50)")
    parser.add_argument("--seeds", default=None, help="victim seeds (0,1,2; CIFAR-10: 0)")
    parser.add_argument("--splits", default=None, help="default: the model's")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--attacker-samples", type=int, default=5000)
    parser.add_argument("--attack-epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="rMLE steps (default: profile)")
    parser.add_argument("--unsplit-rounds", type=int, default=None)
    parser.add_argument("--tune-budget", type=int, default=None, help="default: tuning.toml")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this long")
    parser.add_argument(
        "--precision", default="fp32",
        help="the attacks' precision (default fp32 on every machine, so that cells computed on "
        "CPUs with and without fast bf16 are alike; rMLE is fp32 whatever this says)",
    )  # fmt: skip
    parser.add_argument("--small", action="store_true", help="1 victim, 20 images, short")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (and resume store)")
    args = parser.parse_args()
    try:
        progress_mode()  # a bad SPLITLEAK_PROGRESS fails now, not after the victims load
    except SplitleakError as err:
        parser.error(str(err))
    model = MODELS[args.model]
    args.epochs = args.epochs or model["epochs"]
    args.seeds = args.seeds or model["seeds"]
    args.splits = args.splits or ",".join(model["splits"])
    default = RESULTS / f"worst_case_{args.model}.json"
    small = Path(f"/tmp/worst_case_{args.model}_small.json")
    args.out = args.out or (small if args.small else default)
    if args.small:
        args.seeds, args.n_eval, args.attacker_samples, args.attack_epochs = "0", 20, 1000, 3
        args.steps, args.unsplit_rounds = args.steps or 200, args.unsplit_rounds or 20
        args.tune_budget = args.tune_budget or 3
    return args


def cell_config(args: argparse.Namespace, seed: int, split: str, variant: str) -> AttackConfig:
    attack, profile = VARIANTS[variant]
    overrides: dict[str, Any] = {}
    if args.steps and attack not in ("unsplit", "inverse-network"):
        overrides["steps"] = args.steps  # every other attack's primary section is rMLE
    if attack == "unsplit" and args.unsplit_rounds:
        overrides["rounds"] = args.unsplit_rounds
    if profile == "tuned" and (args.tune_budget or args.steps):
        tuning: dict[str, Any] = {}
        if args.tune_budget:
            tuning["budget"] = args.tune_budget
        if args.steps:
            tuning["steps"] = [2 * args.steps]
        overrides["tuning"] = tuning
    return AttackConfig(
        victim=victim_config(args, seed),
        split=split,
        attack=attack,
        compute=ComputeSettings(precision=args.precision),
        profile=profile,
        overrides=overrides,
        protocol="random",
        n_eval=args.n_eval,
        seed=0,
        attacker_samples=args.attacker_samples,
        attack_epochs=args.attack_epochs,
    )


#: The three victims' checkpoints, committed: training the same recipe on another CPU gives
#: other weights (fp32 reductions differ), so every machine installs these instead.
VICTIMS = RESULTS / "worst_case_victims"


def victim_sha(victim: Victim) -> str:
    """The victim's weights fingerprint (sha256 of its safetensors file, 16 hex digits)."""
    assert victim.checkpoint is not None
    return hashlib.sha256((victim.checkpoint / "model.safetensors").read_bytes()).hexdigest()[:16]


def install_victims(model: str) -> None:
    """Copy the committed victims into the model cache, where load_victim finds them."""
    models = default_cache_dir() / "models"
    source = VICTIMS if model == "mnist-net" else RESULTS / "cifar10_grid" / "cache" / "models"
    for folder in sorted(source.glob(f"{model}-*")):
        if folder.name.endswith(".partial"):
            continue
        if not (models / folder.name / "model.json").is_file():
            shutil.copytree(folder, models / folder.name, dirs_exist_ok=True)


def keep_victim(victim: Victim) -> None:
    """Copy an MNIST victim this run trained into the committed folder (commit it)."""
    assert victim.checkpoint is not None
    if victim.architecture.name != "mnist-net":
        return  # the CIFAR-10 victim is cifar10_grid.py's, committed there
    dest = VICTIMS / victim.checkpoint.name
    if not dest.is_dir():
        shutil.copytree(victim.checkpoint, dest)
        print(f"trained a new victim; commit {dest}", flush=True)


def victim_config(args: argparse.Namespace, seed: int) -> VictimConfig:
    return VictimConfig(
        model=args.model,
        dataset=MODELS[args.model]["dataset"],
        data_dir=args.data_dir,
        train=TrainSettings(epochs=args.epochs, seed=seed),
    )


def load(args: argparse.Namespace, seed: int) -> Victim:
    """A victim: MNIST's trained in fp32 (or installed), CIFAR-10's the grid's bf16 one."""
    compute = None
    if args.model == "cifar10-net":
        from splitleak.compute import Compute

        compute = Compute.resolve("cpu", "bf16", 1)  # the committed victim's training precision
    return load_victim(victim_config(args, seed), progress=False, compute=compute)


def priority(
    cells: list[tuple[int, str, str]], model: str = "mnist-net"
) -> list[tuple[int, str, str]]:
    """The targets first: white-box at the first target on every victim, then every attack
    at the second (MNIST: ReLU2 and fc1), then the rest by depth."""
    splits, (white, every) = MODELS[model]["splits"], MODELS[model]["first"]

    def rank(cell: tuple[int, str, str]) -> tuple[int, int, int, int]:
        seed, split, variant = cell
        names = list(VARIANTS)
        if split == white and variant.startswith("whitebox"):
            return (0, seed, 0, names.index(variant))
        if split == every:
            return (1, seed, 0, names.index(variant))
        return (2, seed, splits.index(split), names.index(variant))

    return sorted(cells, key=rank)


def measure(cfg: AttackConfig, victim: Victim) -> dict[str, Any]:
    started = time.perf_counter()
    run = run_attack(cfg, victim=victim, progress=True)  # a terminal, or SPLITLEAK_PROGRESS=log
    prov = run.provenance
    recog = prov["recognisability"]
    decision = verdicts(run.summary["ssim"]["mean"], recog)
    tuning = prov.get("tuning")
    return {
        "summary": run.summary,
        "victim_accuracy": victim.meta.get("test_accuracy"),
        "checkpoint": str(victim.checkpoint),
        "evaluator_accuracy": recog.get("evaluator_accuracy"),
        "evaluator_accuracy_original": recog.get("evaluator_accuracy_original"),
        "identification_pixel": recog.get("identification_pixel"),
        "identification_features": recog.get("identification_features"),
        "identification_chance": recog.get("identification_chance"),
        "lpips": recog.get("lpips"),
        "evaluator": recog.get("evaluator"),
        "verdict": decision["verdict"],
        "decided_by": decision["decided_by"],
        "converged": prov["reconstruction_info"].get("converged"),
        "queries": run.queries_used,
        "hyperparameters": prov["attack_hyperparameters"],
        "tuning": None
        if tuning is None
        else {k: tuning[k] for k in ("space", "budget", "strategy", "metric", "trials", "chosen")}
        | {"tuning_indices": tuning["tuning_data"]["indices"]},
        "evaluation_indices": run.per_image["index"],
        "compute": prov["compute"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(
    cells: dict[str, dict[str, Any]], seeds: list[int], splits: tuple[str, ...] = SPLITS
) -> dict[str, Any]:
    """Per split and variant: per-victim means and mean ± 95 % CI across victims; worst case."""
    table = []
    for split in splits:
        for variant in VARIANTS:
            done = {
                s: cells[_key(s, split, variant)] for s in seeds if _key(s, split, variant) in cells
            }
            if not done:
                continue
            row: dict[str, Any] = {"split": split, "variant": variant, "victims": len(done)}
            for metric in ("psnr", "ssim"):
                per = [done[s]["summary"][metric]["mean"] for s in sorted(done)]
                row[f"{metric}_per_victim"] = per
                row[metric] = summarize(per).as_dict()
            for metric in ("evaluator_accuracy", "identification_pixel", "identification_features"):
                per = [done[s][metric] for s in sorted(done) if done[s].get(metric) is not None]
                row[metric] = summarize(per).as_dict() if per else None
            row["verdicts"] = [
                done[s]["verdict"] + f" ({done[s]['decided_by']})" for s in sorted(done)
            ]
            table.append(row)
    worst = []
    for split in splits:
        per_victim = []
        for s in seeds:
            mine = {v: cells[_key(s, split, v)] for v in VARIANTS if _key(s, split, v) in cells}
            if mine:
                name = max(mine, key=lambda v: mine[v]["summary"]["ssim"]["mean"])
                per_victim.append(
                    {"seed": s, "attack": name, "ssim": mine[name]["summary"]["ssim"]["mean"],
                     "psnr": mine[name]["summary"]["psnr"]["mean"], "attacks_done": len(mine)}
                )  # fmt: skip
        if per_victim:
            worst.append(
                {
                    "split": split,
                    "per_victim": per_victim,
                    "ssim": summarize([p["ssim"] for p in per_victim]).as_dict(),
                    "psnr": summarize([p["psnr"] for p in per_victim]).as_dict(),
                }
            )
    return {"table": table, "worst_case": worst}


def settings_sha(cfg: AttackConfig, model: str) -> str:
    """A hash of the attack's settings as its profile's presets resolve them today.

    Stored with every cell; a cell whose presets have changed since is recomputed. (Cells
    written before this field existed carry none and are kept.)
    """
    return stable_hash(attack_settings(cfg, architecture=model))


def _key(seed: int, split: str, variant: str) -> str:
    return f"victim{seed}/{split}/{variant}"


def main() -> None:
    args = parse()
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = [
        (s, sp, v) for s in seeds for sp in args.splits.split(",") for v in args.variants.split(",")
    ]
    previous = read_json(args.out) if args.out.is_file() else {}
    if previous and previous.get("settings") != _settings(args):
        raise SystemExit(f"{args.out} holds another configuration; use another --out")
    cells: dict[str, dict[str, Any]] = dict(previous.get("cells", {}))
    superseded: dict[str, dict[str, Any]] = dict(previous.get("superseded", {}))
    victims: dict[int, Victim] = {}
    if not args.small:
        install_victims(args.model)
    for seed in seeds:  # cells of another checkpoint than this run's victim are set aside
        if any(k.startswith(f"victim{seed}/") for k in cells):
            victims[seed] = load(args, seed)
            sha = victim_sha(victims[seed])
            for key in [k for k in cells if k.startswith(f"victim{seed}/")]:
                if cells[key].get("victim_sha") != sha:
                    superseded[key] = cells.pop(key)
                    now = victims[seed].meta.get("test_accuracy")
                    print(f"{key}: computed on another checkpoint of this victim (accuracy "
                          f"{superseded[key]['victim_accuracy']}, this one {now}): recomputed",
                          flush=True)  # fmt: skip
    for seed, split, variant in priority(grid, args.model):
        key = _key(seed, split, variant)
        cfg = cell_config(args, seed, split, variant)
        settings = settings_sha(cfg, args.model)
        if key in cells and cells[key].get("settings_sha", settings) != settings:
            superseded[key] = cells.pop(key)  # its profile's presets have changed since
            print(f"{key}: computed with other preset settings: recomputed", flush=True)
        if key in cells:
            continue
        if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
            break
        if seed not in victims:
            victims[seed] = load(args, seed)
            if not args.small:
                keep_victim(victims[seed])
        cells[key] = measure(cfg, victims[seed])
        cells[key]["victim_sha"] = victim_sha(victims[seed])
        cells[key]["settings_sha"] = settings
        c = cells[key]
        psnr, ssim = c["summary"]["psnr"]["mean"], c["summary"]["ssim"]["mean"]
        print(
            f"{key:38s} {psnr:6.2f} dB  SSIM {ssim:.3f}  "
            f"eval {c['evaluator_accuracy']:.2f}/{c['evaluator_accuracy_original']:.2f}  "
            f"id {c['identification_pixel']:.2f}/{c['identification_features']:.2f}  "
            f"{c['verdict']} ({c['decided_by']})  conv {c['converged']}  [{c['seconds']:.0f} s]",
            flush=True,
        )
        _write(args, cells, seeds, grid, started, previous, superseded)
    _write(args, cells, seeds, grid, started, previous, superseded)
    summary = summarise(cells, seeds, tuple(args.splits.split(",")))
    print_markdown(
        [
            {
                "split": r["split"],
                "attack": r["variant"],
                "victims": r["victims"],
                "PSNR": _ci(r["psnr"]),
                "SSIM": _ci(r["ssim"], 3),
                "evaluator": _ci(r["evaluator_accuracy"], 2),
                "identified (px)": _ci(r["identification_pixel"], 2),
            }
            for r in summary["table"]
        ],
        ["split", "attack", "victims", "PSNR", "SSIM", "evaluator", "identified (px)"],
    )
    for w in summary["worst_case"]:
        names = ", ".join(f"{p['attack']} ({p['ssim']:.3f})" for p in w["per_victim"])
        print(f"worst case at {w['split']}: SSIM {_ci(w['ssim'], 3)} — {names}")


def _ci(s: dict[str, Any] | None, digits: int = 2) -> str:
    if not s:
        return "—"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['ci95']:.{digits}f}" if s.get("ci95") else "")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("epochs", "n_eval", "attacker_samples", "attack_epochs", "steps", "unsplit_rounds",
            "tune_budget", "precision")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def _write(
    args: argparse.Namespace,
    cells: dict[str, dict[str, Any]],
    seeds: list[int],
    grid: list[tuple[int, str, str]],
    started: float,
    previous: dict[str, Any],
    superseded: dict[str, dict[str, Any]],
) -> None:
    remaining = [_key(*c) for c in priority(grid, args.model) if _key(*c) not in cells]
    command = "python benchmarks/worst_case.py" + (" --small" if args.small else "")
    command += f" --model {args.model}" if args.model != "mnist-net" else ""
    write_json(
        args.out,
        {
            "benchmark": f"worst_case_{args.model}",
            "settings": _settings(args),
            "seeds": seeds,
            "wall_s": round(float(previous.get("wall_s", 0)) + time.perf_counter() - started, 1),
            "versions": versions(),
            "cells": cells,
            "summary": summarise(cells, seeds, tuple(args.splits.split(","))),
            "remaining": remaining,
            "continue_with": command if remaining else None,
            # Cells measured on an earlier checkpoint of a victim (trained again elsewhere),
            # kept for the record, left out of the summary, and computed again.
            "superseded": superseded,
        },
    )


if __name__ == "__main__":
    main()
