"""`splitleak attack`: one attack at one split point, written as a run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from splitleak.cli.app import app
from splitleak.cli.executor_options import StoreOpt
from splitleak.cli.options import ATTACK_CHOICES as ATTACK_NAMES
from splitleak.cli.options import PROFILE_CHOICES as PROFILE_NAMES
from splitleak.cli.options import (
    CkptOpt,
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    PrecisionOpt,
    SetOpt,
    ThreadsOpt,
    compute_flags,
    print_run,
    victim_flags,
)


@app.command("attack")
def attack_cmd(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="mnist-net (default), cifar10-net or file.py:factory"),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", "-s", help="layer to cut after (default ReLU2)")
    ] = None,
    attack: Annotated[str | None, typer.Option(help=f"{ATTACK_NAMES} (default whitebox)")] = None,
    profile: Annotated[
        str | None, typer.Option(help=f"settings profile: {PROFILE_NAMES} (default paper)")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option(help="paper (first test image per class, default) or random")
    ] = None,
    n_eval: Annotated[int | None, typer.Option(help="images for the random protocol")] = None,
    attacker_data: Annotated[
        str | None,
        typer.Option(help="same-set, same-distribution (default), other-distribution, noise"),
    ] = None,
    attacker_samples: Annotated[int | None, typer.Option(help="how many attacker samples")] = None,
    other_dataset: Annotated[str | None, typer.Option(help="for other-distribution")] = None,
    shadow_arch: Annotated[
        str | None, typer.Option(help="query-free shadow: same or different")
    ] = None,
    query_budget: Annotated[int | None, typer.Option(help="max edge queries (black-box)")] = None,
    decoder: Annotated[str | None, typer.Option(help="inverse network: paper or auto")] = None,
    defense: Annotated[
        list[str] | None,
        typer.Option(help="edge defense family:input|features:level[:flag[=value]...]; repeatable"),
    ] = None,
    adaptive: Annotated[
        bool | None, typer.Option("--adaptive/--naive", help="the attacker knows the defense")
    ] = None,
    attack_epochs: Annotated[
        int | None, typer.Option(help="decoder/shadow training epochs (default 50)")
    ] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    epochs: Annotated[int | None, typer.Option(help="victim training epochs (default 10)")] = None,
    checkpoint: CkptOpt = None,
    seed: Annotated[int | None, typer.Option(help="seed of every random choice")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/<attack>-...)")
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(help="attack captured features: a capture dir, .safetensors or .npy"),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="the edge's inputs, to score --features reconstructions")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Attack one split point and write a run directory (config, metrics, grid).

    Settings come in layers: defaults < profile < --config FILE < --set KEY=VALUE < flags.
    Everything is checked before the victim is loaded or trained.
    """
    from splitleak.experiment import load_victim
    from splitleak.layering import resolve_attack_config
    from splitleak.preflight import check_attack, check_output_dir
    from splitleak.runs import attack_run, default_run_dir
    from splitleak.store import STORE_ENV, ResultStore, store_dir

    flags = {
        **victim_flags(model, dataset, data_dir, download, checkpoint, epochs),
        "split": split,
        "attack": attack,
        "profile": profile,
        "protocol": protocol,
        "n_eval": n_eval,
        "attacker_data": attacker_data,
        "attacker_samples": attacker_samples,
        "other_dataset": other_dataset,
        "shadow_arch": shadow_arch,
        "query_budget": query_budget,
        "decoder": decoder,
        "defenses": tuple(defense) if defense else None,
        "adaptive": adaptive,
        "attack_epochs": attack_epochs,
        "seed": seed,
        **compute_flags(device, precision, threads),
    }
    cfg = resolve_attack_config(config_file=config, sets=set_, flags=flags)
    dest = out or default_run_dir(Path("runs"), cfg.attack, Path(cfg.victim.model).stem, cfg.split)
    check_output_dir(dest, must_not_exist=True)
    check_attack(cfg)
    # --store (or $SPLITLEAK_STORE): reuse a cell computed by any command or benchmark.
    shared_root = store_dir(store, dest) if store or os.environ.get(STORE_ENV) else None
    compute = cfg.compute.resolve()
    compute.apply_threads()
    if features is not None or reference is not None:  # the curious cloud's capture
        from splitleak.cli.runtime import attack_features

        return attack_features(cfg, features, reference, dest, compute)
    victim = load_victim(cfg.victim, compute=compute)
    shared = ResultStore(shared_root) if shared_root is not None else None
    run = attack_run(cfg, victim=victim, out=dest, store=shared, progress=False)
    print_run(run)
    record = {"config": cfg.model_dump(mode="json"), "summary": run.summary,
              "per_image": run.per_image, "provenance": run.provenance}  # fmt: skip
    print_warnings([record])


def print_warnings(records: list[dict[str, Any]]) -> None:
    """The audit report's sanity checks on these attack records, one line each on stderr."""
    from rich.markup import escape

    from splitleak.checks import check_records
    from splitleak.cli.app import err_console

    for w in check_records(records):
        colour = {"error": "red", "warning": "yellow"}.get(w["severity"], "blue")
        code = escape(f"[{w['code']}]")
        err_console.print(
            f"[{colour}]{w['severity']}[/] {code} {escape(w['message'])} (see docs/checks.md)",
            soft_wrap=True,
            highlight=False,
        )
