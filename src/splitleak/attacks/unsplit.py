"""Data-free model inversion: UnSplit, the input and a clone of f1 optimised together.

Paper: E. Erdoğan, A. Küpçü, A. E. Çiçek, "UnSplit: Data-Oblivious Model Inversion, Model
Stealing, and Label Inference Attacks against Split Learning", WPES 2022.

Threat model: the cloud knows f1's *architecture* but not its weights, has no data and
cannot query f1 (:class:`~splitleak.attacks.access.StructureAccess`). It starts a clone
f̃1 of the known structure from fresh weights and a constant image x̃, and alternates
(as in the paper): ``input_steps`` Adam steps on x̃ for
``MSE(f̃1(x̃), z) + λ·TV_β(x̃)`` with f̃1 fixed, then ``model_steps`` Adam steps on f̃1's
weights for ``MSE(f̃1(x̃), z)`` with x̃ fixed; ``rounds`` times. One clone serves the whole
batch of observed features (they all come from the same f1), which constrains it more
than one image would.

What this can recover: only what the structure and the priors pin down. The joint problem
has the symmetries of the weights: through a 1×1 convolution of a grey image, x̃ = a·x + c
with f̃1's weights rescaled to match gives the same features for any a ≠ 0 and c, so the
image is identified up to a global affine map of its intensities (and its sign); an edge
without learned weights is known entirely and is inverted exactly. The TV prior and the
pixel-range projection choose among the equivalent solutions.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = UnSplit(rounds=200, input_steps=10, model_steps=10)
    x_hat = attack.fit(StructureAccess(build_edge, inputs=spec, feature_shape=(8, 24, 24)))
                  .reconstruct(z).images
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from splitleak.attacks.access import StructureAccess, require
from splitleak.attacks.base import Reconstruction, check_features
from splitleak.attacks.inversion import feature_converged, total_variation
from splitleak.attacks.specs import NonNegativeFinite, PositiveFinite, Spec
from splitleak.compute import CPU_FP32, Compute
from splitleak.errors import NotFittedError
from splitleak.progress import progress_bar


class DataFreeSpec(Spec):
    """UnSplit settings (``--set rounds=…``; the ``data_free`` section)."""

    rounds: int = Field(200, ge=0, le=100_000)
    input_steps: int = Field(10, ge=1, le=10_000)
    model_steps: int = Field(10, ge=0, le=10_000)
    input_lr: PositiveFinite = 0.05
    model_lr: PositiveFinite = 1e-3
    tv_weight: NonNegativeFinite = 0.05
    tv_beta: float = Field(1.0, gt=0, le=4, allow_inf_nan=False)
    clip_to_pixel_range: bool = True
    init: Literal["mean", "black"] = "mean"


class UnSplit:
    """Joint optimisation of the input and a fresh clone of f1 (see module docstring).

    Args:
        rounds: alternations of input and clone updates.
        input_steps, input_lr: Adam steps and learning rate on x̃ per round.
        model_steps, model_lr: Adam steps and learning rate on the clone per round.
        tv_weight, tv_beta: the TV prior on x̃.
        clip_to_pixel_range: project x̃ onto the valid pixel range after every step.
        init: constant start image, ``mean`` or ``black``.
        seed: the clone's initial weights.
        progress, compute: progress bar; where it runs (always fp32).
    """

    name = "unsplit"

    def __init__(
        self,
        *,
        rounds: int = 200,
        input_steps: int = 10,
        model_steps: int = 10,
        input_lr: float = 0.05,
        model_lr: float = 1e-3,
        tv_weight: float = 0.05,
        tv_beta: float = 1.0,
        clip_to_pixel_range: bool = True,
        init: str = "mean",
        seed: int = 0,
        progress: bool = False,
        compute: Compute = CPU_FP32,
    ) -> None:
        self.rounds, self.input_steps, self.model_steps = rounds, input_steps, model_steps
        self.input_lr, self.model_lr = input_lr, model_lr
        self.tv_weight, self.tv_beta = tv_weight, tv_beta
        self.clip_to_pixel_range, self.init = clip_to_pixel_range, init
        self.seed, self.progress, self.compute = seed, progress, compute.exact()

    def fit(self, access: StructureAccess, data: object = None) -> UnSplit:
        """Take the structure; there is nothing to learn before the features arrive."""
        require(access, (StructureAccess,), "the data-free UnSplit attack")
        self.access_ = access
        return self

    def reconstruct(self, z: torch.Tensor) -> Reconstruction:
        """Alternate input and clone updates on the whole batch."""
        if not hasattr(self, "access_"):
            raise NotFittedError("call fit(access) before reconstruct(z)")
        access = self.access_
        check_features(z, access.feature_shape)
        device = self.compute.device
        norm = access.inputs.normalization
        z = z.detach().to(device)
        clone = access.fresh_edge(seed=self.seed).to(device)
        start = torch.zeros(len(z), *access.inputs.shape, device=device)  # the mean colour
        low, high = (b.to(device) for b in norm.bounds(start.cpu()))
        x = (low.expand_as(start).clone() if self.init == "black" else start).requires_grad_(True)
        opt_x = torch.optim.Adam([x], lr=self.input_lr)
        weights = list(clone.parameters())  # none: the structure is all there is to know
        opt_m = torch.optim.Adam(weights, lr=self.model_lr) if weights else None
        history: list[float] = []
        for _ in progress_bar(range(self.rounds), progress=self.progress, desc="unsplit"):
            clone.requires_grad_(False)
            for _ in range(self.input_steps):
                error = (clone(x) - z).pow(2).flatten(1).mean(1)
                objective = error + self.tv_weight * total_variation(x, beta=self.tv_beta)
                opt_x.zero_grad(set_to_none=True)
                objective.sum().backward()
                opt_x.step()
                if self.clip_to_pixel_range:
                    with torch.no_grad():
                        x.copy_(torch.maximum(torch.minimum(x, high), low))
            clone.requires_grad_(True)
            for _ in range(self.model_steps if opt_m is not None else 0):
                assert opt_m is not None
                loss = (clone(x.detach()) - z).pow(2).flatten(1).mean(1).sum()
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                opt_m.step()
            history.append(float(error.detach().mean()))
        with torch.no_grad():
            final = (clone(x) - z).pow(2).flatten(1).mean(1)
            energy = z.pow(2).flatten(1).mean(1)
        x = x.detach().cpu()
        info: dict[str, Any] = {
            "feature_mse": final.cpu().tolist(),
            "converged": feature_converged(history, final=final, energy=energy),
            "feature_trace": history[:: max(len(history) // 100, 1)],
        }
        return Reconstruction(images=norm.denormalize(x), x=x, info=info)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "rounds",
                "input_steps",
                "model_steps",
                "input_lr",
                "model_lr",
                "tv_weight",
                "tv_beta",
                "clip_to_pixel_range",
                "init",
                "seed",
            )
        }
