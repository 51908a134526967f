"""`splitleak defend`, `splitleak sweep-splits` and `splitleak plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from splitleak.cli.app import app, console
from splitleak.cli.options import (
    AttacksOpt,
    CkptOpt,
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    ModelOpt,
    OutDirOpt,
    PrecisionOpt,
    ProfileOpt,
    SeedOpt,
    SetOpt,
    SplitOpt,
    ThreadsOpt,
    compute_flags,
    parse_attacks,
    victim_and_base,
)
from splitleak.preflight import check_output_dir


@app.command("defend")
def defend_cmd(
    model: ModelOpt = "mnist-net",
    split: SplitOpt = "ReLU2",
    profile: ProfileOpt = "paper",
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="family:input|features:l1,l2,...[:relative|:rescale]; repeatable "
            "(default: the IoTJ families)"
        ),
    ] = None,
    attacks: AttacksOpt = "whitebox",
    draws: Annotated[int, typer.Option(help="defense draws for accuracy")] = 3,
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutDirOpt = Path("runs/defend"),
) -> None:
    """Sweep defense levels: accuracy vs PSNR/SSIM plots (naive and defense-aware) + grids."""
    from splitleak.studies import DEFAULT_FAMILIES, defense_study, parse_family

    families = [parse_family(f) for f in family] if family else list(DEFAULT_FAMILIES)
    attack_list = parse_attacks(attacks)
    check_output_dir(out, must_not_exist=False)
    victim, base = victim_and_base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        split=split,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        sets=set_,
        compute=compute_flags(device, precision, threads),
        config_file=config,
    )
    points = defense_study(
        victim, base, out, families=families, attacks=attack_list, draws=draws, progress=True
    )
    table = Table("defense", "level", "attack", "aware", "accuracy", "PSNR", "SSIM")
    for p in points:
        table.add_row(
            p["label"],
            f"{p['level']:g}",
            p["attack"],
            "yes" if p["adaptive"] else "no",
            f"{p['accuracy']:.4f}",
            f"{p['psnr']:.2f}",
            f"{p['ssim']:.3f}",
        )
    console.print(table)
    console.print(f"figures and records in {out}")


@app.command("sweep-splits")
def sweep_splits_cmd(
    model: ModelOpt = "mnist-net",
    profile: ProfileOpt = "paper",
    attacks: AttacksOpt = "whitebox,inverse-network,shadow",
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    out: OutDirOpt = Path("runs/splits"),
    set_: SetOpt = None,
) -> None:
    """Attack every split point; chart PSNR/SSIM against depth with one grid row per split."""
    from splitleak.studies import split_study

    attack_list = parse_attacks(attacks)
    check_output_dir(out, must_not_exist=False)
    victim, base = victim_and_base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        sets=set_,
        compute=compute_flags(device, precision, threads),
        config_file=config,
    )
    points = split_study(victim, base, out, attacks=attack_list, progress=True)
    table = Table("split", "attack", "PSNR", "SSIM")
    for p in points:
        table.add_row(p["split"], p["attack"], f"{p['psnr']:.2f}", f"{p['ssim']:.3f}")
    console.print(table)
    console.print(f"figures and records in {out}")


@app.command("plan")
def plan_cmd(
    model: ModelOpt = "mnist-net",
    profile: ProfileOpt = "paper",
    attacks: AttacksOpt = "whitebox",
    max_edge_macs: Annotated[int | None, typer.Option(help="edge compute budget")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="max bytes sent per input")] = None,
    max_leakage: Annotated[float | None, typer.Option(help="max worst-case SSIM")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="min test accuracy")] = None,
    feature_dtype: Annotated[str, typer.Option(help="dtype of the sent features")] = "float32",
    defense: Annotated[list[str] | None, typer.Option(help="family:location:level")] = None,
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    out: OutDirOpt = Path("runs/plan"),
    set_: SetOpt = None,
) -> None:
    """Pick a split point: compute, bytes, accuracy and worst-case leakage per split."""
    from splitleak.planner import Constraints, check_feature_dtype, format_table
    from splitleak.studies import plan_study

    attack_list = parse_attacks(attacks)
    check_feature_dtype(feature_dtype)
    check_output_dir(out, must_not_exist=False)
    victim, base = victim_and_base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        sets=set_,
        compute=compute_flags(device, precision, threads),
        config_file=config,
    )
    constraints = Constraints(
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
    )
    plan = plan_study(
        victim,
        base,
        out,
        constraints=constraints,
        attacks=attack_list,
        defenses=tuple(defense or ()),
        feature_dtype=feature_dtype,
        progress=True,
    )
    rows = format_table(plan.rows, pareto=plan.pareto)
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    rec = plan.recommendation
    console.print(
        f"recommended split: [bold]{rec.row.cost.split if rec.row else 'none'}[/] — {rec.reason}"
    )
    console.print(f"chart and records in {out}")
