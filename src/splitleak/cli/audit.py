"""`splitleak audit` and `splitleak report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from splitleak.cli.app import app, console, err_console
from splitleak.cli.executor_options import (
    AddressOpt,
    ExecutorOpt,
    StoreOpt,
    WorkersOpt,
    check_executor,
    open_executor,
)
from splitleak.cli.options import (
    CkptOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    ModelOpt,
    PrecisionOpt,
    SeedOpt,
    ThreadsOpt,
)
from splitleak.errors import SplitleakError


@app.command("audit")
def audit_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    checkpoint: CkptOpt = None,
    budget: Annotated[
        str, typer.Option(help="quick, standard or paper (smoke: tests only)")
    ] = "quick",
    seed: SeedOpt = 0,
    max_edge_macs: Annotated[int | None, typer.Option(help="planner: edge compute budget")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="planner: max bytes per input")] = None,
    max_leakage: Annotated[float | None, typer.Option(help="planner: max worst-case SSIM")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="planner: min accuracy")] = None,
    victims: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="victims trained with seeds 0..N-1; the undefended attacks run on each, "
            "reported as mean ± CI across victims (default: the budget's: 1 quick, 3 standard "
            "and paper)",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="audit folder; rerun to continue")] = Path("audit"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the grid and its cost")] = False,
    executor: ExecutorOpt = "serial",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    store: StoreOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Audit a model: split points × attacks × defenses, then the planner and an HTML report.

    Finished cells are stored as they finish; rerun the same command after an interruption
    (with any --executor) to continue where it stopped.
    """
    from splitleak.audit import AuditConfig, check_out_dir, prepare, run_audit
    from splitleak.config import ComputeSettings
    from splitleak.planner import Constraints
    from splitleak.progress import CellProgress
    from splitleak.store import store_dir

    # The planner's limits, refused with the options' names before anything else.
    Constraints(
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
    )
    cfg = AuditConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        checkpoint=checkpoint,
        budget=budget,
        seed=seed,
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
        victims=victims,
    )
    if checkpoint is not None and victims not in (None, 1):
        raise SplitleakError(
            "--victims trains victims with other seeds, which a given --checkpoint cannot "
            "have; drop --victims (a checkpoint is one victim) or drop --checkpoint"
        )
    check_executor(executor, workers, address)
    from splitleak.config import VictimConfig
    from splitleak.preflight import check_victim

    # The model, dataset, data files and checkpoint, before anything is read in full.
    check_victim(VictimConfig(model=model, dataset=dataset, data_dir=data_dir,
                              download=download, checkpoint=checkpoint))  # fmt: skip
    compute = None
    if (device, precision) != (None, None):
        # Given: where the attacks run and where the victim is trained (its precision is
        # part of its checkpoint's identity); not given: attacks on auto, victim in fp32.
        compute = ComputeSettings(device=device or "auto", precision=precision or "auto")
    # An unavailable device is one line, before any work. --threads is this process's
    # torch threads (the serial executor's cells), not part of any cell's identity: the
    # processes and Ray executors run one thread per cell.
    (compute or ComputeSettings()).model_copy(update={"threads": threads}).resolve().apply_threads()
    if dry_run:
        _print_grid(prepare(cfg, out, compute=compute, download=download)[2])
        return
    check_out_dir(out, cfg)
    cells = store_dir(store, out)
    runner = open_executor(executor, workers, address)  # a bad choice fails before any work
    display = CellProgress()
    try:
        with runner:
            outcome = run_audit(
                cfg, out, progress=display, executor=runner, store=cells, compute=compute,
                download=download,
            )  # fmt: skip
    except KeyboardInterrupt:
        display.stop()
        err_console.print(
            f"interrupted: finished cells are stored in {cells}; rerun the same command to continue"
        )
        raise typer.Exit(130) from None
    display.stop()
    console.print(
        f"computed {len(outcome.computed)} cells, reused {len(outcome.reused)}; "
        f"report: {outcome.report}"
    )
    if outcome.failed:
        for key, why in outcome.failed.items():
            err_console.print(f"[red]failed:[/] {key}: {why}", soft_wrap=True, highlight=False)
        err_console.print(
            f"{len(outcome.failed)} cell(s) failed and are missing from the report; "
            "rerun the same command to retry them"
        )
        raise typer.Exit(1)


def _print_grid(cells: list[Any]) -> None:
    table = Table("#", "section", "cell", "estimate")
    for i, c in enumerate(cells, 1):
        table.add_row(str(i), c.section, c.label, f"{c.estimate_s:.1f} s")
    console.print(table)
    total = sum(c.estimate_s for c in cells)
    console.print(
        f"{len(cells)} cells, estimated {total / 60:.1f} min on this machine "
        "(victim training not included)"
    )


@app.command("report")
def report_cmd(directory: Annotated[Path, typer.Argument(help="an audit folder")]) -> None:
    """Re-render an audit's report from its stored results alone."""
    from splitleak.audit.pipeline import read_manifest
    from splitleak.report.html import render_report

    read_manifest(directory)  # a missing or damaged manifest is one line, not a traceback
    console.print(f"report: {render_report(directory)}")
