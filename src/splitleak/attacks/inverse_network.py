"""Black-box inverse-network attack.

Paper: Z. He, T. Zhang, R. B. Lee, "Model Inversion Attacks Against Collaborative
Inference", ACSAC 2019, §5 (black-box attack, inverse network).

Threat model: the cloud may query f1 with inputs of its choice (:class:`QueryAccess`) but
cannot see f1. It queries f1 once with its own samples, trains a decoder g on the pairs
(f1(x), x) with an L2 loss (Adam lr 1e-3, halved every 10 epochs; the authors train 50
epochs), and reconstructs with one forward pass: x̂ = g(z). The decoder's architecture is
unrelated to f1: the paper's decoders where they exist, otherwise built from z's shape.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = InverseNetwork(epochs=50).fit(QueryAccess(edge, inputs=spec, feature_shape=(16, 8, 8)),
                                           samples)
    x_hat = attack.reconstruct(z).images
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from splitleak.attacks.access import QueryAccess, require
from splitleak.attacks.base import Reconstruction, check_features
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.decoders import build_decoder
from splitleak.attacks.fitting import TrainedAttackMixin
from splitleak.compute import CPU_FP32, Compute
from splitleak.data.splits import AttackerSamples
from splitleak.errors import NotFittedError, SplitleakError


class InverseNetwork(TrainedAttackMixin):
    """Train a decoder from queried features to inputs (see module docstring).

    Args:
        decoder: ``paper`` (the authors' decoder for their split points, else automatic)
            or ``auto``.
        epochs, lr, halve_every, batch_size, amsgrad, adam_eps, shuffle: decoder training
            (:class:`~splitleak.attacks.specs.TrainingSpec`).
        architecture, split: names used to pick the paper's decoder (public knowledge of
            where the cut is, not of f1's weights).
        cache: where trained decoders are stored and reused.
        seed: initialisation and shuffling.
    """

    name = "inverse-network"

    def __init__(
        self,
        *,
        decoder: str = "paper",
        epochs: int = 50,
        lr: float = 1e-3,
        halve_every: int = 10,
        batch_size: int = 128,
        amsgrad: bool = False,
        adam_eps: float = 1e-8,
        shuffle: bool = True,
        architecture: str = "",
        split: str = "",
        cache: ModuleCache | None = None,
        seed: int = 0,
        progress: bool = False,
        compute: Compute = CPU_FP32,
    ) -> None:
        self.decoder = decoder
        self.architecture, self.split, self.cache = architecture, split, cache
        self._set_training(
            epochs=epochs, lr=lr, halve_every=halve_every, batch_size=batch_size,
            amsgrad=amsgrad, adam_eps=adam_eps, shuffle=shuffle, seed=seed,
            progress=progress, compute=compute,
        )  # fmt: skip

    def fit(self, access: QueryAccess, data: AttackerSamples | None = None) -> InverseNetwork:
        """Query f1 once with the attacker's samples and train the decoder."""
        require(access, (QueryAccess,), "the inverse-network attack")
        if data is None:
            raise SplitleakError("the inverse-network attack needs attacker samples")
        self.inputs_, self.feature_shape_ = access.inputs, access.feature_shape
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(self.seed)
            decoder = build_decoder(
                self.decoder,
                architecture=self.architecture,
                split=self.split,
                feature_shape=access.feature_shape,
                image_shape=access.inputs.shape,
            )
        x = access.inputs.normalization.normalize(data.pixels)

        def train(module: torch.nn.Module, resume_dir: Path | None) -> dict[str, Any]:
            # Features computed once, reused every epoch; stored in the autocast dtype the
            # decoder's first layer would cast them to anyway (half the memory under bf16),
            # in the decoder's layout (channels_last under mixed precision, Compute.module).
            z = access.query(
                x, dtype=self.compute.amp_dtype, channels_last=self.compute.channels_last(module)
            )
            record = self._fit(
                module, z, x, loss_fn=F.mse_loss, desc="inverse network", resume_dir=resume_dir
            )
            return record.meta()

        cache = self.cache or ModuleCache(None, {})
        self.decoder_, self.meta_, self.reused_ = cache.get_or_train(
            "decoder",
            decoder,
            {**self.hyperparameters(), "data": data.describe(), "net": repr(decoder)},
            train,
        )
        if self.reused_:  # the cached decoder was trained on these same queries
            access.charge(len(x))
        return self

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor) -> Reconstruction:
        """One forward pass of the decoder."""
        if not hasattr(self, "decoder_"):
            raise NotFittedError("call fit(access, data) before reconstruct(z)")
        check_features(z, self.feature_shape_)
        x = self.decoder_(z)
        history = self.meta_.get("loss_history") or [None]
        info = {
            "decoder_reused": self.reused_,
            "final_train_loss": history[-1],
            "loss_history": history,  # per epoch: the convergence record kept with results
            "train_seconds": self.meta_.get("train_seconds"),
            "resumed_from_epoch": self.meta_.get("resumed_from_epoch"),
        }
        return Reconstruction(images=self.inputs_.normalization.denormalize(x), x=x, info=info)

    def hyperparameters(self) -> dict[str, Any]:
        return {"decoder": self.decoder, **self.training_hyperparameters()}
