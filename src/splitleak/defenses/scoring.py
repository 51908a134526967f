"""Score a deployed defense against one attack over several defense draws.

:func:`~splitleak.experiment.run_attack` scores an attack on one draw of a random defense.
Here the attack is fitted once (the white-box attack binds the edge, the inverse network
and the shadow are trained — on defended features and through ``f2 ∘ defenses`` when the
attack is defense-aware), then reconstructs the evaluation images from ``draws``
independent draws of the defended features in one batch. Each image's PSNR/SSIM is
averaged over the draws; the summary is mean ± 95 % CI over images, and ``per_draw``
gives the mean of every draw, so the spread due to the defense's randomness is visible.
Deterministic defenses (learned noise, NoPeek, none) are scored on one draw.

Draw k uses the defended edge seeded ``cfg.seed + 1000·k``: draw 0 is the draw
``run_attack`` scores. The defense-aware attacker's own queries and optimisation use other
seeds, never the evaluation draws.

Results are cells of a :class:`~splitleak.store.ResultStore` (kind ``scored-attack``).

Shapes: reconstructions (draws·N, C, H, W); per-image scores (N,).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from splitleak.attacks.factory import build_attack
from splitleak.attacks.registry import get_attack
from splitleak.config import AttackConfig
from splitleak.defenses import parse_defense
from splitleak.defenses.dropout import Dropout
from splitleak.defenses.finetune import FineTuned
from splitleak.evaluation import evaluation_indices
from splitleak.experiment import (
    Victim,
    attack_cache,
    attacker_samples,
    deploy_defenses,
    make_access,
)
from splitleak.metrics import PSNR_CAP, image_metrics, summarize
from splitleak.store import ResultStore, cell_key
from splitleak.sweep import attack_key

DRAW_SEED_STEP = 1000


def aware_overrides(
    attack: str, defenses: tuple[str, ...], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The defense-aware rMLE against plain feature dropout matches only the kept entries."""
    parsed = [parse_defense(d) for d in defenses]
    inner = [d.inner if isinstance(d, FineTuned) else d for d in parsed]
    features = [d for d in inner if d.location == "features"]
    plain_dropout = bool(features) and all(
        isinstance(d, Dropout) and not d.rescale for d in features
    )
    sections = get_attack(attack).sections
    if not plain_dropout or "inversion" not in sections:
        return dict(overrides)
    if sections[0] == "inversion":  # bare --set keys go to the primary section
        return {**overrides, "ignore_zero_features": True}
    nested = {**overrides.get("inversion", {}), "ignore_zero_features": True}
    return {**overrides, "inversion": nested}


def score_over_draws(
    cfg: AttackConfig, victim: Victim, *, draws: int = 3, progress: bool = False
) -> dict[str, Any]:
    """Fit ``cfg``'s attack once and score it over ``draws`` defense draws (see module)."""
    compute = cfg.compute.resolve()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _score(cfg, victim, draws=draws, progress=progress, compute=compute)


def _score(
    cfg: AttackConfig, victim: Victim, *, draws: int, progress: bool, compute: Any
) -> dict[str, Any]:
    eval_idx = evaluation_indices(
        victim.test.labels, protocol=cfg.protocol, n=cfg.n_eval, seed=cfg.seed
    )
    deployment = deploy_defenses(
        victim, split=cfg.split, defenses=cfg.defenses, seed=cfg.seed,
        cache_dir=cfg.victim.cache_dir,
    )  # fmt: skip
    pixels = victim.test.subset(eval_idx).to_float()
    x = victim.architecture.normalization.normalize(pixels)
    n_draws = draws if deployment.stochastic else 1
    with torch.no_grad():
        zs = [deployment.defended.reseed(cfg.seed + DRAW_SEED_STEP * k)(x) for k in range(n_draws)]
    feature_shape = tuple(zs[0].shape[1:])
    access = make_access(
        get_attack(cfg.attack).threat_model,
        deployment.parts,
        victim.inputs,
        feature_shape,
        budget=cfg.query_budget,
        edge=deployment.defended.reseed(cfg.seed + 1) if cfg.adaptive else None,
        tail_defenses=tuple(deployment.defenses) if cfg.adaptive else (),
    )
    attack = build_attack(
        cfg,
        architecture=victim.architecture.name,
        structure=victim.architecture.build,
        image_shape=victim.test.shape,
        feature_shape=feature_shape,
        progress=progress,
        cache=attack_cache(cfg, victim),
        compute=compute,
    )
    started = time.perf_counter()
    attack.fit(access, attacker_samples(cfg, victim=victim, eval_indices=eval_idx))
    fitted = time.perf_counter()
    rec = attack.reconstruct(torch.cat(zs))
    done = time.perf_counter()
    scores = image_metrics(rec.images, pixels.repeat(n_draws, 1, 1, 1))
    psnr = scores["psnr"].clamp(max=PSNR_CAP).view(n_draws, len(pixels))
    ssim = scores["ssim"].view(n_draws, len(pixels))
    return {
        "summary": {
            "psnr": summarize(psnr.mean(0)).as_dict(),
            "ssim": summarize(ssim.mean(0)).as_dict(),
        },
        "per_draw": [
            {"psnr": float(p.mean()), "ssim": float(s.mean())}
            for p, s in zip(psnr, ssim, strict=True)
        ],
        "draws": n_draws,
        "per_image": {
            "index": eval_idx.tolist(),
            "psnr": psnr.mean(0).tolist(),
            "ssim": ssim.mean(0).tolist(),
        },
        "timings": {"fit_s": round(fitted - started, 3), "reconstruct_s": round(done - fitted, 3)},
        "queries_used": access.queries_used,
        "defense_training": deployment.training,
        "converged": rec.info.get("converged"),
        "images": rec.images[: len(pixels)],
        "reference": pixels,
    }


def scored_attack_cell(
    cfg: AttackConfig,
    victim: Victim,
    store: ResultStore,
    *,
    draws: int = 3,
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or read) :func:`score_over_draws` as a stored cell; draw 0's images as uint8."""
    identity = {**attack_key(cfg, victim)[1], "draws": draws}
    key = cell_key("scored-attack", identity)
    if store.has(key):
        return store.get(key)
    result = score_over_draws(cfg, victim, draws=draws, progress=progress)
    images, reference = result.pop("images"), result.pop("reference")
    record = {"kind": "scored-attack", "identity": identity, "config": cfg.model_dump(mode="json"),
              **result}  # fmt: skip
    to_uint8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    store.put(key, record, {"x_hat": to_uint8(images), "x": to_uint8(reference)})
    return store.get(key) if store.root else {**record, "key": key}
