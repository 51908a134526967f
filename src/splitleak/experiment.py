"""The attack pipeline, step by step as in the papers' method sections.

1. load the victim (train it, or reuse its checkpoint);   2. pick the evaluation images;
3. cut the victim at the split point;                    4. the edge computes z = f1(x);
5. hand the attacker only what its threat model allows;  6. give it its own data;
7. fit the attack;   8. reconstruct x̂ from z;   9. score x̂ against x;   10. write the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitleak.attacks.access import (
    Access,
    InputSpec,
    QueryAccess,
    StructureAccess,
    TailAccess,
    WhiteBoxAccess,
)
from splitleak.attacks.base import Reconstruction
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.factory import build_attack
from splitleak.attacks.registry import get_attack
from splitleak.compute import CPU_FP32, Compute
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.data import ImageDataset, load_dataset
from splitleak.data.splits import AttackerSamples, draw_attacker_samples
from splitleak.defenses import DefendedEdge, parse_defense
from splitleak.defenses.deploy import Deployment, TrainingData, deploy, replaced_part
from splitleak.errors import CheckpointError
from splitleak.evaluation import evaluation_indices
from splitleak.metrics import PSNR_CAP, image_metrics, summarize
from splitleak.models import Architecture, SplitModel
from splitleak.models.checkpoint import load_checkpoint
from splitleak.models.train import TrainConfig, train_or_load
from splitleak.models.zoo import default_dataset, resolve_architecture
from splitleak.records import versions
from splitleak.report.grids import save_image_grid
from splitleak.runs import write_run


@dataclass(frozen=True)
class Victim:
    """The trained target network and the data around it."""

    architecture: Architecture
    model: nn.Module
    train: ImageDataset
    test: ImageDataset
    meta: dict[str, Any]
    checkpoint: Path | None

    @property
    def inputs(self) -> InputSpec:
        return InputSpec(shape=self.test.shape, normalization=self.architecture.normalization)

    def normalize(self, data: ImageDataset) -> torch.Tensor:
        return self.architecture.normalization.normalize(data.to_float())


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("SPLITLEAK_CACHE", Path(base) / "splitleak"))


def load_victim(
    cfg: VictimConfig, *, progress: bool = True, compute: Compute | None = None
) -> Victim:
    """Step 1: the victim network, trained with the authors' recipe or loaded.

    ``compute`` is where a victim that is not cached yet is trained (default: the CPU in
    fp32); its resolved precision is part of the checkpoint's identity. The returned model
    is always on the CPU in fp32.
    """
    compute = compute or CPU_FP32
    dataset = cfg.dataset or default_dataset(cfg.model)  # unknown names fail before any I/O
    train = load_dataset(dataset, "train", root=cfg.data_dir, download=cfg.may_download)
    test = load_dataset(dataset, "test", root=cfg.data_dir, download=cfg.may_download)
    arch = resolve_architecture(cfg.model, dataset=dataset, input_shape=test.shape)
    model = arch.build()
    if tuple(arch.input_shape) != test.shape:
        raise CheckpointError(
            f"{arch.name} expects inputs {arch.input_shape} but {dataset} images are {test.shape}; "
            "pick the matching --dataset"
        )
    if cfg.checkpoint is not None:
        meta = load_checkpoint(cfg.checkpoint, model, architecture=arch.name)
        _check_trained_on(meta, train, cfg.checkpoint)
        return Victim(arch, model.eval(), train, test, meta, cfg.checkpoint)
    trained = train_or_load(
        architecture=arch.name,
        model=model,
        normalization=arch.normalization,
        train=train,
        test=test,
        config=train_config(
            cfg.train, dataset=dataset, seed=cfg.train.seed, precision=compute.precision
        ),
        progress=progress,
        compute=compute,
        cache_dir=(cfg.cache_dir or default_cache_dir()) / "models",
    )
    return Victim(arch, trained.model, train, test, trained.meta, trained.directory)


def _check_trained_on(meta: dict[str, Any], train: ImageDataset, directory: Path) -> None:
    # The checkpoint's dataset name and fingerprint must be those of the data given now.
    name, fingerprint = meta.get("dataset"), meta.get("data_fingerprint")
    if name is not None and name != train.name:
        raise CheckpointError(
            f"checkpoint {directory} was trained on {name!r}, not {train.name!r}; pass "
            f"--dataset {name} or a checkpoint trained on {train.name}"
        )
    if fingerprint is not None and fingerprint != train.fingerprint():
        raise CheckpointError(
            f"checkpoint {directory} was trained on other {train.name} data (fingerprint "
            f"{fingerprint} ≠ {train.fingerprint()}); retrain it on this data"
        )


def train_config(
    settings: TrainSettings, *, dataset: str, seed: int = 0, precision: str = "fp32"
) -> TrainConfig:
    augment = settings.augment if settings.augment is not None else dataset == "cifar10"
    return TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        augment=augment,
        max_train_images=settings.max_train_images,
        seed=seed,
        precision=precision,
    )


def make_access(
    kind: str,
    split: SplitModel,
    inputs: InputSpec,
    feature_shape: tuple[int, ...],
    *,
    budget: int | None = None,
    edge: nn.Module | None = None,
    tail_defenses: tuple[Any, ...] = (),
    structure: Callable[[], nn.Module] | None = None,
) -> Access:
    """Step 5: the access object for a threat model — never the split model itself.

    ``edge`` replaces the split's edge part, e.g. by a :class:`DefendedEdge` when the
    attacker knows the defense (white-box) or its queries pass through it (black-box):
    the defense-aware inverse network is trained on defended features this way.
    ``tail_defenses`` are the defenses a defense-aware query-free attacker knows; its
    shadow is trained through ``cloud ∘ defenses``. ``structure`` builds the edge's
    architecture with fresh weights for the data-free attacker (default: the edge part,
    re-initialised by :class:`StructureAccess` so that no weight is reachable).
    """
    if kind == "data-free":
        builder = structure if structure is not None else (lambda: split.edge)
        return StructureAccess(builder, inputs=inputs, feature_shape=feature_shape)
    edge = edge if edge is not None else split.edge
    if kind == "white-box":
        return WhiteBoxAccess(edge, inputs=inputs, feature_shape=feature_shape)
    if kind == "black-box":
        return QueryAccess(edge, inputs=inputs, feature_shape=feature_shape, budget=budget)
    return TailAccess(
        split.cloud, inputs=inputs, feature_shape=feature_shape, defenses=tuple(tail_defenses)
    )


def defended_edge(cfg: AttackConfig, split: SplitModel) -> DefendedEdge:
    """The edge with the configured defenses, none of which trains (see deploy_defenses)."""
    return DefendedEdge(split.edge, [parse_defense(d) for d in cfg.defenses], seed=cfg.seed)


def deploy_defenses(
    victim: Victim,
    *,
    split: str,
    defenses: tuple[str, ...],
    seed: int = 0,
    cache_dir: Path | None = None,
) -> Deployment:
    """Step 3 with the defenses: cut the victim and deploy them, training those that learn.

    Trained state (learned noise, fine-tuned clouds, NoPeek models) is cached under
    ``cache_dir/defenses`` (default: the splitleak cache), keyed by the victim checkpoint,
    the split point and the defense's settings. ``seed`` seeds the defense draws.
    """
    n_train = int(victim.meta.get("train_images", len(victim.train)))

    def data() -> TrainingData:
        inputs = victim.normalize(victim.train)[:n_train]
        return TrainingData(inputs, victim.train.labels[:n_train])

    target = {
        "victim": str(victim.checkpoint.name if victim.checkpoint else None),
        "victim_fingerprint": victim.meta.get("data_fingerprint"),
        "split": split,
    }
    cache = ModuleCache((cache_dir or default_cache_dir()) / "defenses", target)
    specs = [parse_defense(d) for d in defenses]
    return deploy(victim.model, split, specs, data=data, cache=cache, seed=seed)


def attacker_samples(
    cfg: AttackConfig, *, victim: Victim, eval_indices: torch.Tensor
) -> AttackerSamples | None:
    """Step 6: the attacker's own data (none for attacks that need none).

    An attack that tunes its settings (``tuning.budget`` > 0, the ``tuned`` profile) gets
    samples even if it needs none otherwise: the white-box attacker tunes on its own
    images, drawn like attacker samples (never the evaluation images). A data-free attack
    never gets any.
    """
    entry = get_attack(cfg.attack)
    if entry.threat_model == "data-free":
        return None
    if not entry.needs_data and not _tunes(cfg, victim):
        return None
    other = None
    if cfg.attacker_data == "other-distribution":
        other = load_dataset(
            cfg.other_dataset, "test", root=cfg.victim.data_dir, download=cfg.victim.may_download
        )
    n_train = victim.meta.get("train_images", len(victim.train))
    return draw_attacker_samples(
        kind=cfg.attacker_data,
        train=victim.train,
        test=victim.test,
        other=other,
        eval_indices=eval_indices,
        train_indices=torch.arange(int(n_train)),
        n=cfg.attacker_samples,
        seed=cfg.seed,
    )


def _tunes(cfg: AttackConfig, victim: Victim) -> bool:
    from splitleak.attacks.factory import attack_settings

    settings = attack_settings(cfg, architecture=victim.architecture.name)
    return bool(settings.get("tuning", {}).get("budget"))


def attack_cache(cfg: AttackConfig, victim: Victim) -> ModuleCache:
    """Trained decoders and shadows are keyed by the victim checkpoint and the split point."""
    target = {
        "victim": str(victim.checkpoint.name if victim.checkpoint else None),
        "victim_fingerprint": victim.meta.get("data_fingerprint"),
        "split": cfg.split,
        "oracle_defenses": list(cfg.defenses) if cfg.adaptive else [],
    }
    # Fine-tuning and NoPeek change the deployed model itself, which every attacker faces.
    deployed = [d for d in cfg.defenses if replaced_part(parse_defense(d))]
    if deployed:
        target["deployed"] = deployed
    return ModuleCache((cfg.victim.cache_dir or default_cache_dir()) / "attacks", target)


@torch.no_grad()
def defended_accuracy(
    victim: Victim,
    *,
    split: str,
    defenses: tuple[str, ...],
    draws: int = 3,
    seed: int = 0,
    batch_size: int = 1000,
) -> list[float]:
    """Test accuracy of cloud(defended edge(x)) on the full test set, once per draw.

    The cloud is the deployed one (fine-tuned, or NoPeek's). Without defenses one draw is
    enough (the model is deterministic).
    """
    deployment = deploy_defenses(victim, split=split, defenses=defenses, seed=seed)
    parts, edge = deployment.parts, deployment.defended
    x, y = victim.normalize(victim.test), victim.test.labels
    accuracies = []
    for draw in range(draws if defenses else 1):
        edge.reseed(seed + 1000 * draw)
        correct = sum(
            int((parts.cloud(edge(x[i : i + batch_size])).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
        accuracies.append(correct / len(x))
    return accuracies


@dataclass
class AttackRun:
    """What one attack run measured; ``directory`` is where it was written (if anywhere)."""

    config: AttackConfig
    summary: dict[str, dict[str, float | int | None]]
    per_image: dict[str, list[float]]
    reference: torch.Tensor
    reconstruction: Reconstruction
    timings: dict[str, float]
    queries_used: int
    provenance: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None


def run_attack(
    cfg: AttackConfig,
    *,
    out: Path | None = None,
    victim: Victim | None = None,
    progress: bool = True,
    compute: Compute | None = None,
    score: bool = True,
) -> AttackRun:
    """Run one attack end to end and (if ``out``) write its run directory.

    ``compute`` defaults to ``cfg.compute`` resolved on this machine. The global random
    state is left as it was: every random choice derives from ``cfg.seed``. With
    ``score=False`` the recognisability measures are left out (``None`` in the provenance):
    an executor's driver computes them later with :func:`recognisability_record`, so that
    workers need not wait for the evaluator to be trained.
    """
    compute = compute or cfg.compute.resolve()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _run_attack(
            cfg, out=out, victim=victim, progress=progress, compute=compute, score=score
        )


@dataclass
class FittedAttack:
    """Steps 5–8 of the pipeline: the access granted, the attacker's data, the fitted attack."""

    attack: Any
    access: Access
    data: AttackerSamples | None
    reconstruction: Reconstruction
    timings: dict[str, float]


def fit_and_reconstruct(
    cfg: AttackConfig,
    victim: Victim,
    deployment: Any,
    z: torch.Tensor,
    *,
    eval_indices: torch.Tensor,
    progress: bool,
    compute: Compute,
) -> FittedAttack:
    """Grant the threat model's access, draw the attacker's data, fit, reconstruct ``z``.

    ``deployment`` is the output of :func:`deploy_defenses`; ``eval_indices`` are the test
    images the attacker's data must not contain. Shared by :func:`run_attack` and the
    attack on captured features (:mod:`splitleak.runtime.captured`).
    """
    access = make_access(  # 5
        get_attack(cfg.attack).threat_model,
        deployment.parts,
        victim.inputs,
        tuple(z.shape[1:]),
        budget=cfg.query_budget,
        edge=deployment.defended.reseed(cfg.seed + 1) if cfg.adaptive else None,
        tail_defenses=tuple(deployment.defenses) if cfg.adaptive else (),
        structure=_fresh_edge_builder(victim, cfg.split),
    )
    data = attacker_samples(cfg, victim=victim, eval_indices=eval_indices)  # 6
    attack = build_attack(
        cfg,
        architecture=victim.architecture.name,
        structure=victim.architecture.build,
        image_shape=victim.test.shape,
        feature_shape=tuple(z.shape[1:]),
        progress=progress,
        cache=attack_cache(cfg, victim),
        compute=compute,
    )
    started = time.perf_counter()
    attack.fit(access, data)  # 7
    fitted = time.perf_counter()
    rec = attack.reconstruct(z)  # 8
    done = time.perf_counter()
    timings = {"fit_s": round(fitted - started, 3), "reconstruct_s": round(done - fitted, 3)}
    return FittedAttack(attack, access, data, rec, timings)


def _run_attack(
    cfg: AttackConfig,
    *,
    out: Path | None,
    victim: Victim | None,
    progress: bool,
    compute: Compute,
    score: bool = True,
) -> AttackRun:
    victim = victim or load_victim(cfg.victim, progress=progress, compute=compute)  # 1
    eval_idx = evaluation_indices(
        victim.test.labels,
        protocol=cfg.protocol,  # 2
        n=cfg.n_eval,
        seed=cfg.seed,
    )
    deployment = deploy_defenses(  # 3, with the defenses trained if they learn
        victim, split=cfg.split, defenses=cfg.defenses, seed=cfg.seed,
        cache_dir=cfg.victim.cache_dir,
    )  # fmt: skip
    observed = deployment.defended
    pixels = victim.test.subset(eval_idx).to_float()
    with torch.no_grad():
        z = observed(victim.architecture.normalization.normalize(pixels))  # 4
    fitted = fit_and_reconstruct(  # 5-8
        cfg, victim, deployment, z, eval_indices=eval_idx, progress=progress, compute=compute
    )
    attack, access, data, rec = fitted.attack, fitted.access, fitted.data, fitted.reconstruction
    scores = image_metrics(rec.images, pixels)  # 9
    run = AttackRun(
        config=cfg,
        summary={
            "psnr": summarize(scores["psnr"], cap=PSNR_CAP).as_dict(),
            "ssim": summarize(scores["ssim"]).as_dict(),
        },
        per_image={
            "index": eval_idx.tolist(),
            "psnr": scores["psnr"].clamp(max=PSNR_CAP).tolist(),
            "ssim": scores["ssim"].tolist(),
        },
        reference=pixels,
        reconstruction=rec,
        timings=fitted.timings,
        queries_used=access.queries_used,
        provenance={
            "seed": cfg.seed,
            "compute": compute.describe(),
            "versions": versions(),
            "checkpoint": str(victim.checkpoint),
            "victim_test_accuracy": victim.meta.get("test_accuracy"),
            "attack_hyperparameters": attack.hyperparameters(),
            "attacker_data": data.describe() if data else None,
            "evaluation": {
                "source": f"{victim.test.name}:{victim.test.split}",
                "indices": eval_idx.tolist(),
            },
            "tuning": getattr(attack, "tuning_", None),
            "recognisability": recognisability_record(
                victim,
                rec.images,
                pixels,
                victim.test.labels[eval_idx],
                cache_dir=cfg.victim.cache_dir,
            )
            if score
            else None,
            "defense_training": deployment.training,
            "reconstruction_info": {k: v for k, v in rec.info.items() if k != "objective_trace"},
        },
    )
    if out is not None:
        run.directory = write_attack_run(out, run)  # 10
    return run


def _fresh_edge_builder(victim: Victim, split: str) -> Callable[[], nn.Module]:
    """Builds f1's structure from the architecture alone (no victim weights involved)."""
    from splitleak.models import split_model

    return lambda: split_model(victim.architecture.build(), at=split).edge


def recognisability_record(
    victim: Victim,
    images: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    *,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluator accuracy and identification rates of reconstructions (their originals given).

    The evaluator is trained on the victim's training split, disjoint from the evaluation
    images (test split), and cached under ``cache_dir/evaluators``; see
    :mod:`splitleak.recognisability`.
    """
    from splitleak.recognisability import score_run

    return score_run(
        images, reference, labels, train=victim.train, cache_dir=evaluator_cache(cache_dir)
    )


def evaluator_cache(cache_dir: Path | None = None) -> Path:
    """Where the recognisability evaluators live: ``evaluators/`` of the model cache."""
    return (cache_dir or default_cache_dir()) / "evaluators"


def write_attack_run(dest: Path, run: AttackRun) -> Path:
    """Write a run directory: config, metrics, provenance and the image grid."""
    metrics = {
        "summary": run.summary,
        "per_image": run.per_image,
        "timings": run.timings,
        "queries_used": run.queries_used,
    }
    captions = [[], [f"{p:.1f} dB" for p in run.per_image["psnr"]]]

    def grid(tmp: Path) -> None:
        save_image_grid(
            [
                ("input", run.reference),
                (f"{run.config.attack}\n{run.config.split}", run.reconstruction.images),
            ],
            tmp / "grid.png",
            captions=captions,
        )

    return write_run(
        dest,
        {
            "config.json": run.config.model_dump(mode="json"),
            "metrics.json": metrics,
            "provenance.json": run.provenance,
        },
        extra=grid,
    )
