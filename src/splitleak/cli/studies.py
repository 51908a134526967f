"""`splitleak defend`, `splitleak sweep-splits` and `splitleak plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from splitleak.cli.app import app, console
from splitleak.cli.executor_options import (
    AddressOpt,
    ExecutorOpt,
    StoreOpt,
    WorkersOpt,
    check_executor,
    run_study,
)
from splitleak.cli.options import (
    AttacksOpt,
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
    SplitOpt,
    ThreadsOpt,
    compute_flags,
    parse_attacks,
    victim_and_base,
)
from splitleak.preflight import check_output_dir
from splitleak.store import store_dir


@app.command("defend")
def defend_cmd(
    model: ModelOpt = "mnist-net",
    split: SplitOpt = "ReLU2",
    profile: ProfileOpt = "paper",
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="family:input|features:l1,l2,...[:flag[=value]...], e.g. "
            "dropout:features:0.5,0.9:finetune; repeatable (default: the IoTJ families)"
        ),
    ] = None,
    attacks: AttacksOpt = "whitebox",
    draws: Annotated[int, typer.Option(min=1, help="defense draws for accuracy")] = 3,
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
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
    out: OutDirOpt = Path("runs/defend"),
    executor: ExecutorOpt = "serial",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    store: StoreOpt = None,
) -> None:
    """Sweep defense levels: accuracy vs PSNR/SSIM plots (naive and defense-aware) + grids."""
    from splitleak.studies import DEFAULT_FAMILIES, defense_study, parse_family

    check_executor(executor, workers, address)
    families = [parse_family(f) for f in family] if family else list(DEFAULT_FAMILIES)
    attack_list = parse_attacks(attacks)
    check_output_dir(out, must_not_exist=False)
    store_dir(store, out)  # a bad --store fails here, not after the victim is trained
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
        download=download,
        config_file=config,
        attacks=attack_list,
    )
    points = run_study(
        defense_study, victim, base, out, families=families, attacks=attack_list, draws=draws,
        executor=executor, workers=workers, address=address, store=store, out=out,
        noun="defense sweep",
    )  # fmt: skip
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
    _print_warnings(out, points, store)


def _print_warnings(out: Path, points: list[dict], cells: Path | None = None) -> None:
    """The audit's sanity checks on the cells a study ran, on stderr.

    ``cells``: the ``--store`` the study used (default: ``$SPLITLEAK_STORE``, else ``out``).
    """
    from splitleak.cli.attack import print_warnings
    from splitleak.store import ResultStore

    store = ResultStore(store_dir(cells, out))
    keys = list(dict.fromkeys(p["key"] for p in points))
    print_warnings([{**store.get(k), "key": k} for k in keys])


@app.command("sweep-splits")
def sweep_splits_cmd(
    model: ModelOpt = "mnist-net",
    profile: ProfileOpt = "paper",
    attacks: AttacksOpt = "whitebox,inverse-network,shadow",
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
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
    out: OutDirOpt = Path("runs/splits"),
    set_: SetOpt = None,
    executor: ExecutorOpt = "serial",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    store: StoreOpt = None,
) -> None:
    """Attack every split point; chart PSNR/SSIM against depth with one grid row per split."""
    from splitleak.studies import split_study

    check_executor(executor, workers, address)
    attack_list = parse_attacks(attacks)
    check_output_dir(out, must_not_exist=False)
    store_dir(store, out)  # a bad --store fails here, not after the victim is trained
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
        download=download,
        config_file=config,
        attacks=attack_list,
    )
    points = run_study(
        split_study, victim, base, out, attacks=attack_list,
        executor=executor, workers=workers, address=address, store=store, out=out,
        noun="split sweep",
    )  # fmt: skip
    table = Table("split", "attack", "PSNR", "SSIM")
    for p in points:
        table.add_row(p["split"], p["attack"], f"{p['psnr']:.2f}", f"{p['ssim']:.3f}")
    console.print(table)
    console.print(f"figures and records in {out}")
    _print_warnings(out, points, store)


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
    download: DownloadOpt = False,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    out: OutDirOpt = Path("runs/plan"),
    set_: SetOpt = None,
    measured: Annotated[
        list[Path] | None,
        typer.Option(help="edge report (`splitleak edge --out`) of a split; repeatable"),
    ] = None,
    executor: ExecutorOpt = "serial",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    store: StoreOpt = None,
) -> None:
    """Pick a split point: compute, bytes, accuracy and worst-case leakage per split."""
    from splitleak.planner import Constraints, check_feature_dtype, format_table
    from splitleak.runtime.planning import measured_columns, read_measured, write_measured
    from splitleak.studies import plan_study

    check_executor(executor, workers, address)
    measured_cost = read_measured(measured or [], feature_dtype=feature_dtype)
    attack_list = parse_attacks(attacks)
    check_feature_dtype(feature_dtype)
    constraints = Constraints(
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
    )
    check_output_dir(out, must_not_exist=False)
    store_dir(store, out)  # a bad --store fails here, not after the victim is trained
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
        download=download,
        config_file=config,
        attacks=attack_list,
    )
    plan = run_study(
        plan_study, victim, base, out, constraints=constraints, attacks=attack_list,
        defenses=tuple(defense or ()), feature_dtype=feature_dtype,
        executor=executor, workers=workers, address=address, store=store, out=out,
        noun="planner",
    )  # fmt: skip
    rows = measured_columns(format_table(plan.rows, pareto=plan.pareto), measured_cost)
    if measured_cost:
        computed = {r.split: r.feature_bytes for r in plan.rows}
        write_measured(out / "measured.json", measured_cost, computed)
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    rec = plan.recommendation
    console.print(
        f"recommended split: [bold]{rec.row.cost.split if rec.row else 'none'}[/] — {rec.reason}"
    )
    console.print(f"chart and records in {out}")
