"""`splitleak train`."""

from __future__ import annotations

from typing import Annotated

import typer

from splitleak.cli.app import app, console
from splitleak.cli.options import (
    DataDirOpt,
    DatasetOpt,
    EpochsOpt,
    ModelOpt,
    victim_config,
)


@app.command("train")
def train_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    max_train: Annotated[int | None, typer.Option(help="train on the first N images only")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores)")] = None,
) -> None:
    """Train a victim network (or reuse its cached checkpoint) and report its accuracy."""
    from splitleak.compute import Compute
    from splitleak.experiment import load_victim

    compute = Compute.resolve(device, precision, threads)
    compute.apply_threads()
    victim = load_victim(
        victim_config(model, dataset, data_dir, epochs, None, max_train), compute=compute
    )
    acc = victim.meta["test_accuracy"]
    console.print(
        f"{victim.architecture.name}: test accuracy {acc:.2%} "
        f"({victim.meta['test_images']} images); checkpoint {victim.checkpoint}"
    )
