"""`splitleak models` and `splitleak splits`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from splitleak.cli.app import app, console
from splitleak.cli.options import DatasetOpt, ModelOpt


@app.command("models")
def models_cmd() -> None:
    """List the built-in networks."""
    from splitleak.models.zoo import ARCHITECTURES

    table = Table("model", "dataset", "input", "description")
    for arch in ARCHITECTURES.values():
        table.add_row(
            arch.name, arch.dataset, "×".join(map(str, arch.input_shape)), arch.description
        )
    console.print(table)


@app.command("splits")
def splits_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="ignored: split points need no data (accepted like the other commands')",
        ),
    ] = None,
) -> None:
    """List a model's split points with the feature shape sent to the cloud."""
    import torch

    from splitleak.config import VictimConfig
    from splitleak.models import split_model
    from splitleak.preflight import check_victim

    checked = check_victim(VictimConfig(model=model, dataset=dataset, data_dir=None))
    net = checked.network.eval()
    shape = checked.input_shape
    table = Table("split point", "feature shape", "values")
    with torch.no_grad():
        for point in checked.split_points:
            z = split_model(net, at=point).edge(torch.zeros(1, *shape))
            table.add_row(point, "×".join(map(str, z.shape[1:])), str(z[0].numel()))
    console.print(table)
