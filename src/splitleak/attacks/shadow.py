"""Query-free shadow-model attack: learn an f1 substitute through the frozen cloud part.

Paper: Z. He, T. Zhang, R. B. Lee, "Model Inversion Attacks Against Collaborative
Inference", ACSAC 2019, §6 (query-free attack, shadow model reconstruction).

Threat model: the cloud cannot query f1 (:class:`TailAccess` — it only holds f2). It
trains a shadow f1' so that the frozen f2 classifies its own labelled samples correctly
through it (cross-entropy at f2's output; only f1' learns; the authors: 50 epochs, Adam
lr 1e-3), then inverts f1' with rMLE (the authors: 500 steps, lr 0.1, λ_TV 2).

Defense-aware (``TailAccess.defenses`` not empty): the attacker knows the edge's defenses,
so the shadow plays the *defended* edge — it is trained so that f2(defenses(f1'(x)))
classifies its data (fresh defense draws every batch), and rMLE then inverts the same
randomised defended shadow (expectation over the defense draws).

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = ShadowModelInversion(shadow=net, inversion={"steps": 500, "lr": 0.1, "tv_weight": 2})
    x_hat = attack.fit(TailAccess(cloud, inputs=spec, feature_shape=(16, 8, 8)), samples)
                  .reconstruct(z).images
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.attacks.access import TailAccess, require
from splitleak.attacks.surrogate import SurrogateInversion
from splitleak.data.splits import AttackerSamples
from splitleak.defenses.base import DefendedEdge
from splitleak.errors import SplitleakError


class ShadowModelInversion(SurrogateInversion):
    """Train a shadow edge through the frozen cloud, then invert it (see module docstring).

    Hyperparameters: see :class:`~splitleak.attacks.surrogate.SurrogateInversion`.
    """

    name = "shadow"

    def fit(self, access: TailAccess, data: AttackerSamples | None = None) -> ShadowModelInversion:
        """Train the shadow so that f2(shadow(x)) predicts the attacker's labels."""
        require(access, (TailAccess,), "the query-free shadow attack")
        if data is None or data.labels is None:
            raise SplitleakError(
                "the query-free attack needs labelled attacker data; "
                "noise samples have no labels (use another --attacker-data)"
            )
        x = access.inputs.normalization.normalize(data.pixels)
        labels = data.labels

        def train(module: nn.Module, resume_dir: Path | None) -> dict[str, Any]:
            record = self._fit(
                module,
                x,
                labels,
                loss_fn=F.cross_entropy,
                head=access.cloud,
                desc="shadow (via f2)",
                resume_dir=resume_dir,
            )
            return {
                **record.meta(),
                "train_accuracy": self._accuracy(module, access, x, data),
            }

        if not access.defenses:
            self._train_shadow("shadow", data, access.inputs, access.feature_shape, train)
            return self
        # Defense-aware: train and invert the shadow wrapped in the known defenses. The
        # wrapper stands in for the shadow only while it is trained (and cached).
        plain = self.shadow
        self.shadow = DefendedEdge(plain, list(access.defenses), seed=self.seed)
        try:
            self._train_shadow("shadow-aware", data, access.inputs, access.feature_shape, train)
        finally:
            self.shadow = plain
        return self

    @staticmethod
    @torch.no_grad()
    def _accuracy(
        module: nn.Module, access: TailAccess, x: torch.Tensor, data: AttackerSamples
    ) -> float:
        module.eval()
        assert data.labels is not None
        hits = sum(
            int(
                (access.cloud(module(x[i : i + 1000])).argmax(1) == data.labels[i : i + 1000]).sum()
            )
            for i in range(0, len(x), 1000)
        )
        return hits / max(len(x), 1)
