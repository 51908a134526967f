"""Attacking features that crossed the wire: the curious cloud's side of an audit.

The pipeline of :func:`splitleak.experiment.run_attack`, with step 4 (the edge computes z)
replaced by reading z from what was captured:

1. resolve the architecture and the split's feature shape (no training yet);
2. read and validate the reference images, if given, and the features (one-line errors,
   nothing written);   3. load the victim;   4. hand the attacker its access object;
5. give it its own data;   6. fit;   7. reconstruct;   8. score against the reference (if
   any);   9. write the run directory (``reconstructions.safetensors`` and the grid always;
   PSNR/SSIM only with a reference).

The attacker never learns the edge's inputs from the capture: the reference is used only to
score. The deployed defenses are the configured ones or, when none are configured, the ones
the edge declared on the wire; an ``adaptive`` attacker knows them, as in ``run_attack``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from splitleak.attacks.base import Reconstruction
from splitleak.compute import Compute
from splitleak.config import AttackConfig
from splitleak.data import load_dataset
from splitleak.errors import SplitleakError
from splitleak.experiment import deploy_defenses, fit_and_reconstruct, load_victim
from splitleak.metrics import PSNR_CAP, image_metrics, summarize
from splitleak.models import split_model
from splitleak.models.zoo import default_dataset, resolve_architecture
from splitleak.records import versions
from splitleak.report.grids import save_image_grid
from splitleak.runs import write_run
from splitleak.runtime.features import (
    LoadedFeatures,
    ReferenceImages,
    file_spec,
    load_features,
    load_images,
)
from splitleak.runtime.service import feature_shape_at


@dataclass
class CapturedRun:
    """An attack on captured features (``summary``, ``per_image``: empty without a reference)."""

    config: AttackConfig
    features: LoadedFeatures
    reconstruction: Reconstruction
    reference: ReferenceImages | None
    summary: dict[str, dict[str, float | int | None]]
    per_image: dict[str, list[float]]
    timings: dict[str, float]
    queries_used: int
    provenance: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None

    def describe(self) -> str:
        """One line for the terminal."""
        n = len(self.features.z)
        head = f"{self.config.attack} at {self.config.split} on {n} captured inputs"
        if not self.summary:
            return (
                f"{head}: reconstructions written (no --reference, not scored) → {self.directory}"
            )
        p, s = self.summary["psnr"], self.summary["ssim"]
        return (
            f"{head}: PSNR {p['mean']:.2f} dB ± {p['ci95'] or 0:.2f}, "
            f"SSIM {s['mean']:.4f} ± {s['ci95'] or 0:.4f} → {self.directory}"
        )


def read_inputs(
    cfg: AttackConfig, features: Path, reference: Path | None
) -> tuple[LoadedFeatures, ReferenceImages | None]:
    """Steps 1–2: validate everything the run reads, before any training.

    Raises:
        SplitleakError: a bad file, or features and reference that do not pair up.
    """
    dataset = cfg.victim.dataset or default_dataset(cfg.victim.model)
    test = load_dataset(dataset, "test", root=cfg.victim.data_dir, download=cfg.victim.may_download)
    arch = resolve_architecture(cfg.victim.model, dataset=dataset, input_shape=test.shape)
    shape = feature_shape_at(split_model(arch.build().eval(), at=cfg.split).edge, arch.input_shape)
    ref = None if reference is None else load_images(reference, image_shape=arch.input_shape)
    select = ref.request_ids if ref is not None and features.is_dir() else None
    loaded = load_features(features, file_spec(arch.name, cfg.split, shape), select=select or None)
    if ref is not None and len(ref.images) != len(loaded.z):
        raise SplitleakError(
            f"{reference} holds {len(ref.images)} images but {features} {len(loaded.z)} "
            "feature rows; give the edge's inputs for exactly these requests"
        )
    return loaded, ref


def attack_captured(
    cfg: AttackConfig,
    *,
    features: Path,
    reference: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
    compute: Compute | None = None,
) -> CapturedRun:
    """Attack captured features with ``cfg``'s attack and threat model; write ``out``.

    The deployed defenses are ``cfg.defenses`` or, when none are configured, the ones the
    edge declared (they decide the deployed model, e.g. after NoPeek, and what an
    ``adaptive`` attacker assumes). The global random state is left as it was.
    """
    if out is not None and out.exists():
        raise SplitleakError(f"run directory {out} already exists; choose another --out")
    loaded, ref = read_inputs(cfg, features, reference)  # 1-2
    deployed = cfg.defenses or _declared(loaded)
    compute = compute or cfg.compute.resolve()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        run = _attack(cfg, loaded, ref, deployed, progress=progress, compute=compute)
    if out is not None:
        run.directory = write_captured_run(out, run)  # 9
    return run


def _declared(loaded: LoadedFeatures) -> tuple[str, ...]:
    if len(loaded.declared_defenses) > 1:
        sets = "; ".join(", ".join(d) or "none" for d in loaded.declared_defenses)
        raise SplitleakError(
            f"{loaded.source} mixes requests sent with different defenses ({sets}); pass "
            "--reference to select one edge's requests, or --defense to say which applies"
        )
    return loaded.declared_defenses[0] if loaded.declared_defenses else ()


def _attack(
    cfg: AttackConfig,
    loaded: LoadedFeatures,
    ref: ReferenceImages | None,
    deployed: tuple[str, ...],
    *,
    progress: bool,
    compute: Compute,
) -> CapturedRun:
    victim = load_victim(cfg.victim, progress=progress, compute=compute)  # 3
    deployment = deploy_defenses(
        victim, split=cfg.split, defenses=deployed, seed=cfg.seed, cache_dir=cfg.victim.cache_dir
    )
    known = ref.indices if ref is not None and ref.indices is not None else torch.empty(0)
    fitted = fit_and_reconstruct(  # 4-7: access, attacker data, fit, reconstruct
        cfg.model_copy(update={"defenses": deployed}),  # the cache is keyed by what was deployed
        victim,
        deployment,
        loaded.z,
        eval_indices=known.long(),
        progress=progress,
        compute=compute,
    )
    attack, access, data, rec = fitted.attack, fitted.access, fitted.data, fitted.reconstruction
    summary, per_image = _scores(rec, ref)  # 8
    return CapturedRun(
        config=cfg,
        features=loaded,
        reconstruction=rec,
        reference=ref,
        summary=summary,
        per_image=per_image,
        timings=fitted.timings,
        queries_used=access.queries_used,
        provenance={
            "seed": cfg.seed,
            "compute": compute.describe(),
            "versions": versions(),
            "checkpoint": str(victim.checkpoint),
            "features": loaded.describe(),
            "reference": None if ref is None else str(ref.source),
            "deployed_defenses": list(deployed),
            "attack_hyperparameters": attack.hyperparameters(),
            "attacker_data": data.describe() if data else None,
            "defense_training": deployment.training,
            "reconstruction_info": {k: v for k, v in rec.info.items() if k != "objective_trace"},
        },
    )


def _scores(
    rec: Reconstruction, ref: ReferenceImages | None
) -> tuple[dict[str, dict[str, float | int | None]], dict[str, list[float]]]:
    if ref is None:
        return {}, {}
    scores = image_metrics(rec.images, ref.images)
    summary = {
        "psnr": summarize(scores["psnr"], cap=PSNR_CAP).as_dict(),
        "ssim": summarize(scores["ssim"]).as_dict(),
    }
    index = ref.indices.tolist() if ref.indices is not None else list(range(len(ref.images)))
    per_image = {
        "index": index,
        "psnr": scores["psnr"].clamp(max=PSNR_CAP).tolist(),
        "ssim": scores["ssim"].tolist(),
    }
    return summary, per_image


def write_captured_run(dest: Path, run: CapturedRun) -> Path:
    """config.json, metrics.json, provenance.json, grid.png and reconstructions.safetensors."""
    metrics = {
        "summary": run.summary,
        "per_image": run.per_image,
        "timings": run.timings,
        "queries_used": run.queries_used,
        "scored": run.reference is not None,
    }
    label = f"{run.config.attack}\n{run.config.split}"
    rows = [(label, run.reconstruction.images)]
    captions = [[f"{p:.1f} dB" for p in run.per_image.get("psnr", [])]]
    if run.reference is not None:
        rows, captions = [("input", run.reference.images), *rows], [[], *captions]

    def extra(tmp: Path) -> None:
        save_image_grid(rows, tmp / "grid.png", captions=captions)
        tensors = {"images": run.reconstruction.images.contiguous()}
        (tmp / "reconstructions.safetensors").write_bytes(safetensors_save(tensors))

    return write_run(
        dest,
        {
            "config.json": run.config.model_dump(mode="json"),
            "metrics.json": metrics,
            "provenance.json": run.provenance,
        },
        extra=extra,
    )
