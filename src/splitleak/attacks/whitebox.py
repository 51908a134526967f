"""White-box model inversion by regularised maximum likelihood estimation (rMLE).

Paper: Z. He, T. Zhang, R. B. Lee, "Model Inversion Attacks Against Collaborative
Inference", ACSAC 2019, §4 (white-box attack); also IoTJ 2020.

Threat model: the cloud knows the edge part f1 (structure and weights) — :class:`WhiteBoxAccess`.
It searches for the input whose features match the observed ones:
``x̂ = argmin_x MSE(f1(x), z) + λ·TV_β(x) (+ λ₂·mean(x²))``, starting from a constant image
(the dataset mean colour, i.e. zero in normalised space), with Adam.

Arguments: see :class:`WhiteBoxInversion`. Settings profiles (``paper``, ``authors-code``,
``strong``) live in ``presets/whitebox.toml``.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    split = split_model(model, at="ReLU2")
    attack = WhiteBoxInversion(steps=500, lr=1e-2, tv_weight=1.0)
    attack.fit(WhiteBoxAccess(split.edge, inputs=spec, feature_shape=(16, 8, 8)))
    x_hat = attack.reconstruct(split.edge(x)).images
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from splitleak.attacks.access import InputSpec, WhiteBoxAccess, require
from splitleak.attacks.base import Reconstruction, check_features
from splitleak.attacks.inversion import invert_features
from splitleak.compute import CPU_FP32, Compute
from splitleak.errors import NotFittedError, SplitleakError

# Constant start images: the dataset mean colour (the papers) or black (pixel value 0).
_INITS = ("mean", "black")


class WhiteBoxInversion:
    """rMLE inversion of the edge part (see module docstring).

    Args:
        steps: optimisation steps.
        lr: Adam learning rate.
        tv_weight: λ, weight of the total-variation prior.
        tv_beta: β, the TV smoothness exponent (1 = papers, 2 = authors' code).
        l2_weight: λ₂, weight of an L2 prior on the normalised input.
        clip_to_pixel_range: project onto pixel values in [0, 1] after every step.
        cosine: anneal the learning rate to zero with a cosine schedule.
        init: constant start image, ``mean`` (the papers' mean colour) or ``black``.
        ignore_zero_features: match only the non-zero entries of z — the defense-aware
            attack on feature dropout (a dropped entry is zero; a kept one is exact).
        amsgrad, adam_eps: the Adam variant (the authors' code: AMSGrad, eps 1e-3).
        progress: show a progress bar.
        compute: the device it runs on (always in fp32: reduced precision caps rMLE).
    """

    name = "whitebox"

    def __init__(
        self,
        *,
        steps: int = 500,
        lr: float = 1e-2,
        tv_weight: float = 0.0,
        tv_beta: float = 1.0,
        l2_weight: float = 0.0,
        clip_to_pixel_range: bool = False,
        cosine: bool = False,
        init: str = "mean",
        ignore_zero_features: bool = False,
        amsgrad: bool = False,
        adam_eps: float = 1e-8,
        progress: bool = False,
        compute: Compute = CPU_FP32,
    ) -> None:
        self.steps, self.lr = steps, lr
        self.tv_weight, self.tv_beta, self.l2_weight = tv_weight, tv_beta, l2_weight
        self.clip_to_pixel_range, self.cosine, self.progress = clip_to_pixel_range, cosine, progress
        if init not in _INITS:
            raise SplitleakError(f"unknown init {init!r}; valid: {', '.join(_INITS)}")
        self.init, self.ignore_zero_features = init, ignore_zero_features
        self.amsgrad, self.adam_eps, self.compute = amsgrad, adam_eps, compute.exact()

    def fit(self, access: WhiteBoxAccess, data: object = None) -> WhiteBoxInversion:
        """Take the edge part; nothing is learned and no attacker data is needed."""
        require(access, (WhiteBoxAccess,), "white-box inversion")
        self._bind(access.edge, access.inputs, access.feature_shape)
        return self

    def _bind(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        inputs: InputSpec,
        feature_shape: tuple[int, ...],
    ) -> None:
        # Shadow-model attacks reuse this inversion on their own surrogate edge.
        self.forward_, self.inputs_, self.feature_shape_ = forward, inputs, feature_shape

    def reconstruct(self, z: torch.Tensor, *, x0: torch.Tensor | None = None) -> Reconstruction:
        """Invert a batch of features in one optimisation (on the attack's device, in fp32).

        ``x0`` (optional) is an explicit start image in the normalised input space, e.g. a
        decoder's output (the hybrid attacks); without it the start is ``init``'s constant
        image. Shapes: z (N, *feature_shape), x0 (N, C, H, W).
        """
        if not hasattr(self, "forward_"):
            raise NotFittedError("call fit(access) before reconstruct(z)")
        check_features(z, self.feature_shape_)
        norm = self.inputs_.normalization
        device = self.compute.device
        forward = self.forward_
        if isinstance(forward, torch.nn.Module):
            forward = forward.to(device)
        z = z.to(device)
        start = torch.zeros(len(z), *self.inputs_.shape, device=device)  # zero = the mean colour
        low, high = (b.to(device) for b in norm.bounds(start.cpu()))
        if x0 is not None:
            if tuple(x0.shape) != tuple(start.shape):
                raise SplitleakError(
                    f"start image x0 has shape {tuple(x0.shape)}, expected {tuple(start.shape)}"
                )
            start = x0.detach().to(device=device, dtype=start.dtype)
            if self.clip_to_pixel_range:
                start = torch.maximum(torch.minimum(start, high), low)
        elif self.init == "black":
            start = low.expand_as(start).clone()
        x0_given, x0 = x0 is not None, start
        bounds = (low, high) if self.clip_to_pixel_range else None
        result = invert_features(
            forward,
            z.detach(),
            x0,
            steps=self.steps,
            lr=self.lr,
            tv_weight=self.tv_weight,
            tv_beta=self.tv_beta,
            l2_weight=self.l2_weight,
            bounds=bounds,
            cosine=self.cosine,
            progress=self.progress,
            desc="white-box",
            mask=(z != 0).to(z.dtype) if self.ignore_zero_features else None,
            amsgrad=self.amsgrad,
            adam_eps=self.adam_eps,
        )
        info = {
            "feature_mse": result.feature_loss.cpu().tolist(),
            "converged": result.converged,
            "objective_trace": result.history,
            "feature_trace": result.feature_history,
            "start": "given" if x0_given else self.init,
        }
        x = result.x.cpu()
        return Reconstruction(images=norm.denormalize(x), x=x, info=info)

    def hyperparameters(self) -> dict[str, float | int | bool]:
        return {
            k: getattr(self, k)
            for k in (
                "steps",
                "lr",
                "tv_weight",
                "tv_beta",
                "l2_weight",
                "clip_to_pixel_range",
                "cosine",
                "init",
                "ignore_zero_features",
                "amsgrad",
                "adam_eps",
            )
        }
