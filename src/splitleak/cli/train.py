"""`splitleak train`: train a victim (or reuse its checkpoint) and report its accuracy."""

from __future__ import annotations

from typing import Annotated

import typer

from splitleak.cli.app import app, console
from splitleak.cli.options import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    EpochsOpt,
    ModelOpt,
    PrecisionOpt,
    SeedOpt,
    ThreadsOpt,
)


@app.command("train")
def train_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    epochs: EpochsOpt = 10,
    max_train: Annotated[
        int | None, typer.Option(min=1, help="train on the first N images only")
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train a victim network (or reuse its cached checkpoint) and report its accuracy.

    An interrupted training run continues from its last finished epoch when the same
    command is run again.
    """
    from splitleak.config import ComputeSettings, TrainSettings, VictimConfig
    from splitleak.experiment import load_victim
    from splitleak.layering import validate_config
    from splitleak.preflight import check_victim

    cfg = validate_config(
        VictimConfig,
        {
            "model": model,
            "dataset": dataset,
            "data_dir": data_dir,
            "download": download,
            "train": TrainSettings(epochs=epochs, max_train_images=max_train, seed=seed),
        },
        source="the command line",
    )
    compute = validate_config(
        ComputeSettings,
        {k: v for k, v in {"device": device, "precision": precision, "threads": threads}.items()
         if v is not None},
        source="the command line",
    ).resolve()  # fmt: skip
    check_victim(cfg)
    compute.apply_threads()
    victim = load_victim(cfg, compute=compute)
    acc = victim.meta["test_accuracy"]
    console.print(
        f"{victim.architecture.name}: test accuracy {acc:.2%} "
        f"({victim.meta['test_images']} images); checkpoint {victim.checkpoint}"
    )
