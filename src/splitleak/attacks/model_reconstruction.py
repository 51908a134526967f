"""Black-box model-reconstruction attack: imitate f1, then invert the imitation.

Paper: Z. He, T. Zhang, R. B. Lee, "Model Inversion Attacks Against Collaborative
Inference", ACSAC 2019, §5 and Table 8 (model reconstruction, compared with the inverse
network).

Threat model: query access to f1 (:class:`QueryAccess`). The attacker queries f1 with its
samples, trains a shadow f1' (f1's structure, or another CNN) to reproduce the features
with an MSE loss, then runs the white-box rMLE attack on f1' instead of f1.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = ModelReconstruction(shadow=shadow_net, inversion={"steps": 500, "lr": 1e-2})
    x_hat = attack.fit(query_access, samples).reconstruct(z).images
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import nn

from splitleak.attacks.access import QueryAccess, require
from splitleak.attacks.surrogate import SurrogateInversion
from splitleak.data.splits import AttackerSamples
from splitleak.errors import SplitleakError


class ModelReconstruction(SurrogateInversion):
    """Train a shadow edge on (x, f1(x)) pairs, then invert it (see module docstring).

    Hyperparameters: see :class:`~splitleak.attacks.surrogate.SurrogateInversion`.
    """

    name = "model-reconstruction"

    def fit(self, access: QueryAccess, data: AttackerSamples | None = None) -> ModelReconstruction:
        """Query f1 once with the attacker's samples and fit the shadow to its answers."""
        require(access, (QueryAccess,), "the model-reconstruction attack")
        if data is None:
            raise SplitleakError("the model-reconstruction attack needs attacker samples")
        x = access.inputs.normalization.normalize(data.pixels)

        def train(module: nn.Module, resume_dir: Path | None) -> dict[str, Any]:
            z = access.query(x)
            record = self._fit(
                module, x, z, loss_fn=F.mse_loss, desc="shadow (imitate f1)", resume_dir=resume_dir
            )
            return record.meta()

        self._train_shadow("imitation", data, access.inputs, access.feature_shape, train)
        if self.reused_:  # the cached shadow was trained on these same queries
            access.charge(len(x))
        return self
