"""The shared inversion loop: find x with f(x) close to z (regularised maximum likelihood).

Pure functions; :class:`~splitleak.attacks.whitebox.WhiteBoxInversion` and the shadow-model
attacks call :func:`invert_features` with their own forward function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


def total_variation(x: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Per-image total variation ``mean((dh² + dw²)^(β/2))`` over the (H-1)×(W-1) grid.

    β = 1 is the papers' isotropic TV; β = 2 equals the authors' code (mean squared vertical
    plus horizontal differences). Shapes: x (N, C, H, W) -> (N,).
    """
    dh = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dw = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    sq = dh.pow(2) + dw.pow(2)
    # The epsilon keeps the gradient of sqrt finite where the image is flat.
    tv = sq if beta == 2 else (sq + 1e-8).pow(beta / 2)
    return tv.flatten(1).mean(1)


@dataclass(frozen=True)
class InversionResult:
    """Outcome of :func:`invert_features`: the normalised inputs and the loss trace."""

    x: torch.Tensor  # (N, C, H, W), normalised input space
    feature_loss: torch.Tensor  # (N,) final per-image feature MSE
    history: list[float]  # mean objective every ~1 % of the steps
    converged: bool  # relative improvement of the last 10 % of steps below 1 %


def invert_features(
    forward: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    x0: torch.Tensor,
    *,
    steps: int,
    lr: float,
    tv_weight: float = 0.0,
    tv_beta: float = 1.0,
    l2_weight: float = 0.0,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    cosine: bool = False,
    mask: torch.Tensor | None = None,
    amsgrad: bool = False,
    adam_eps: float = 1e-8,
    progress: bool = False,
    desc: str = "invert",
) -> InversionResult:
    """Minimise ``MSE(forward(x), z) + tv_weight·TV_β(x) + l2_weight·mean(x²)`` per image.

    The whole batch is optimised at once with Adam; each image's objective is independent
    of the others. ``bounds`` (low, high), if given, projects x back into the valid pixel
    range after every step. ``cosine`` anneals the learning rate to zero. ``mask`` (same
    shape as z, 0/1) restricts the feature error to the entries it marks — the attack on
    feature dropout uses it to ignore the dropped entries. ``amsgrad`` and ``adam_eps`` set
    the Adam variant (the authors' code: AMSGrad, eps 1e-3). Everything runs on ``x0``'s
    device, in the dtype of ``x0`` (callers keep rMLE in fp32).

    Shapes: z (N, *F), x0 (N, C, H, W) -> result.x (N, C, H, W).
    """
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, amsgrad=amsgrad, eps=adam_eps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    every = max(steps // 100, 1)
    history: list[float] = []
    for step in tqdm(range(steps), desc=desc, disable=None if progress else True, leave=False):
        per_image = _feature_error(forward(x), z, mask)
        objective = per_image + tv_weight * total_variation(x, beta=tv_beta)
        if l2_weight:
            objective = objective + l2_weight * x.pow(2).flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        objective.sum().backward()
        opt.step()
        if sched is not None:
            sched.step()
        if bounds is not None:
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, bounds[1]), bounds[0]))
        if step % every == 0 or step == steps - 1:
            history.append(float(objective.detach().mean()))
    with torch.no_grad():
        final = _feature_error(forward(x), z, mask)
    return InversionResult(
        x=x.detach(), feature_loss=final, history=history, converged=_converged(history)
    )


def _feature_error(out: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Per-image mean squared error, over the entries ``mask`` keeps (all if None).
    sq = (out - z).pow(2)
    if mask is None:
        return sq.flatten(1).mean(1)
    return (sq * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def _converged(history: list[float]) -> bool:
    if len(history) < 10:
        return True
    tail = history[-max(len(history) // 10, 2) :]
    start, end = tail[0], tail[-1]
    if not (math.isfinite(start) and math.isfinite(end)):
        return False
    if end <= 1e-8 * max(abs(history[0]), 1e-12):  # solved to numerical precision
        return True
    return (start - end) <= 0.01 * max(abs(start), 1e-12)
