"""`splitleak plan-defenses`: pick a split point and a defense together.

A separate command rather than a flag on ``plan``: it searches a different space (split ×
defense family × level), scores every configuration against naive and defense-aware
attackers over several defense draws, trains the defenses that learn, and writes a
deployable ``plan.json`` (``recommended = {"split", "defenses"}``) whose schema differs
from ``plan``'s. Keeping ``plan`` as it is keeps its output stable for existing users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from splitleak.cli.app import app, console
from splitleak.cli.options import (
    ATTACK_CHOICES,
    CkptOpt,
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    EpochsOpt,
    ModelOpt,
    OutDirOpt,
    PrecisionOpt,
    ProfileOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    compute_flags,
    parse_attacks,
    victim_and_base,
    victim_config,
)


@app.command("plan-defenses")
def plan_defenses_cmd(
    model: ModelOpt = "mnist-net",
    splits: Annotated[
        str, typer.Option(help="comma-separated split points, or 'all'")
    ] = "pool1,ReLU2,pool2,fc1",
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="family:input|features:l1,l2,...[:flag[=value]...]; repeatable "
            "(default: every family at MNIST-scale levels, see docs/defenses.md)"
        ),
    ] = None,
    profile: ProfileOpt = "strong",
    # rMLE alone flatters defenses that move the features away from what an optimiser can
    # invert: NoPeek at MNIST ReLU2 hides the input from it (SSIM 0.096) but not from a
    # decoder trained on the defended features (0.585; BENCHMARKS.md).
    attacks: Annotated[
        str,
        typer.Option(
            help=f"comma-separated, of: {ATTACK_CHOICES} (default: the white-box attack and "
            "the inverse network; rMLE alone flatters some defenses, see docs/defenses.md)"
        ),
    ] = "whitebox,inverse-network",
    modes: Annotated[
        str, typer.Option(help="attacker modes scored: naive, aware or naive,aware")
    ] = "naive,aware",
    draws: Annotated[int, typer.Option(min=1, help="defense draws (accuracy and attacks)")] = 3,
    max_edge_macs: Annotated[int | None, typer.Option(help="edge compute budget")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="max bytes sent per input")] = None,
    max_edge_memory: Annotated[
        int | None, typer.Option(help="max edge parameter bytes (weights + defense)")
    ] = None,
    max_leakage: Annotated[float | None, typer.Option(help="max worst-case SSIM")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="min test accuracy")] = None,
    feature_dtype: Annotated[str, typer.Option(help="dtype of the sent features")] = "float32",
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 20,
    attacker_samples: Annotated[
        int | None, typer.Option(min=1, help="attacker samples for learned attacks (default all)")
    ] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutDirOpt = Path("runs/plan-defenses"),
) -> None:
    """Search split × defense × level; Pareto front and a deployable recommendation."""
    from splitleak.errors import unknown_name
    from splitleak.joint_planner import DEFAULT_FAMILIES, run_joint_plan
    from splitleak.planner import Constraints, check_feature_dtype
    from splitleak.preflight import check_output_dir, check_victim
    from splitleak.studies import parse_family

    families = [parse_family(f) for f in family] if family else list(DEFAULT_FAMILIES)
    mode_names = [m.strip() for m in modes.split(",") if m.strip()]
    for name in mode_names:
        if name not in ("naive", "aware"):
            raise unknown_name("attacker mode", name, ["naive", "aware"])
    attack_list = parse_attacks(attacks)
    dtype = check_feature_dtype(feature_dtype)
    constraints = Constraints(
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
        max_edge_param_bytes=max_edge_memory,
    )
    check_output_dir(out, must_not_exist=False)
    checked = check_victim(
        victim_config(model, dataset, data_dir, epochs, checkpoint, download=download)
    )
    split_list = list(checked.split_points) if splits == "all" else splits.split(",")
    for split in split_list:
        if split not in checked.split_points:
            raise unknown_name("split point", split, list(checked.split_points))
    victim, base = victim_and_base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        attacker_samples=attacker_samples,
        sets=set_,
        compute=compute_flags(device, precision, threads),
        download=download,
        config_file=config,
    )
    result = run_joint_plan(
        victim,
        base,
        out,
        constraints=constraints,
        splits=split_list,
        families=families,
        attacks=attack_list,
        modes=[name == "aware" for name in mode_names],
        draws=draws,
        feature_dtype=dtype,
        progress=True,
    )
    table = Table("", "split", "defense", "accuracy", "leakage", "worst attack", "edge MACs",
                  "sent")  # fmt: skip
    chosen = result.recommendation.row
    for row in result.pareto:
        worst = row.worst_attack
        table.add_row(
            "→" if row is chosen else "★",
            row.split,
            ", ".join(row.defenses) or "none",
            f"{row.accuracy:.4f}" if row.accuracy is not None else "—",
            f"{row.leakage:.3f}" if row.leakage is not None else "—",
            f"{worst['attack']} ({'aware' if worst['aware'] else 'naive'})" if worst else "—",
            f"{row.edge_macs:,}",
            f"{row.feature_bytes:,} B",
        )
    console.print(f"Pareto front ({len(result.pareto)} of {len(result.rows)} configurations):")
    console.print(table)
    console.print(f"recommendation: {result.recommendation.reason}")
    console.print(f"plan.json (deployable recommendation), front.png and cells in {out}")
