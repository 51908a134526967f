"""`splitleak attack`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from splitleak.cli.app import app
from splitleak.cli.options import (
    CkptOpt,
    DataDirOpt,
    DatasetOpt,
    EpochsOpt,
    ModelOpt,
    SeedOpt,
    parse_overrides,
    print_run,
    victim_config,
)
from splitleak.config import AttackConfig
from splitleak.errors import SplitleakError


@app.command("attack")
def attack_cmd(
    model: ModelOpt = "mnist-net",
    split: Annotated[str, typer.Option("--split", "-s", help="layer name to cut after")] = "ReLU2",
    attack: Annotated[
        str, typer.Option(help="whitebox, inverse-network, model-reconstruction, shadow")
    ] = "whitebox",
    profile: Annotated[
        str, typer.Option(help="white-box settings: paper, authors-code, strong")
    ] = "paper",
    protocol: Annotated[
        str, typer.Option(help="paper (first test image per class) or random")
    ] = "paper",
    n_eval: Annotated[int, typer.Option(help="images for the random protocol")] = 100,
    attacker_data: Annotated[
        str, typer.Option(help="same-set, same-distribution, other-distribution, noise")
    ] = "same-distribution",
    attacker_samples: Annotated[int | None, typer.Option(help="how many attacker samples")] = None,
    other_dataset: Annotated[str, typer.Option(help="dataset for other-distribution")] = "kmnist",
    shadow_arch: Annotated[str, typer.Option(help="query-free shadow: same or different")] = "same",
    query_budget: Annotated[int | None, typer.Option(help="max edge queries (black-box)")] = None,
    decoder: Annotated[str, typer.Option(help="inverse network: paper or auto")] = "paper",
    defense: Annotated[
        list[str] | None,
        typer.Option(
            help="edge defense family:input|features:level[:relative|:rescale]; repeatable"
        ),
    ] = None,
    adaptive: Annotated[bool, typer.Option(help="the attacker knows the defense")] = False,
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow training epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a setting: key=value")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/<attack>-...)")
    ] = None,
) -> None:
    """Attack one split point and write a run directory (config, metrics, grid)."""
    from splitleak.experiment import run_attack
    from splitleak.runs import default_run_dir

    dest = out or default_run_dir(Path("runs"), attack, Path(model).stem, split)
    if dest.exists():
        raise SplitleakError(f"run directory {dest} already exists; choose another --out")
    cfg = AttackConfig.model_validate(
        dict(
            victim=victim_config(model, dataset, data_dir, epochs, checkpoint),
            split=split,
            attack=attack,
            profile=profile,
            protocol=protocol,
            n_eval=n_eval,
            attacker_data=attacker_data,
            attacker_samples=attacker_samples,
            other_dataset=other_dataset,
            shadow_arch=shadow_arch,
            query_budget=query_budget,
            seed=seed,
            decoder=decoder,
            attack_epochs=attack_epochs,
            defenses=tuple(defense or ()),
            adaptive=adaptive,
            overrides=parse_overrides(set_ or []),
        )
    )
    run = run_attack(cfg, out=dest)
    print_run(run)
