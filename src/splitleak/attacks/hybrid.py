"""Hybrid attacks: rMLE started from a decoder's reconstruction instead of a constant image.

Combines ACSAC §5 (the inverse network) with ACSAC §4 (rMLE): a decoder g trained on
pairs (f1(x), x) gives a first guess x0 = g(z), and rMLE then refines x0 so that the
features match z. Two threat models:

* ``hybrid-whitebox`` (:class:`WhiteBoxAccess`): the attacker computes f1(x) for its own
  images itself (no queries), trains the decoder on them and runs rMLE through f1;
* ``hybrid-blackbox`` (:class:`QueryAccess`): it queries f1 once with its samples, trains
  on those pairs both the decoder and an imitation f1' of f1 (ACSAC Table 8) and runs
  rMLE through the imitation.

Per image, the result is whichever of x0 and the refined image explains z better (lower
feature error through the attacker's forward model): a quantity the attacker can compute,
so the hybrid never ends worse than its decoder on that criterion.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = HybridInversion(inversion={"steps": 500, "lr": 0.02}, architecture="mnist-net",
                             split="ReLU2", epochs=20)
    x_hat = attack.fit(WhiteBoxAccess(edge, ...), samples).reconstruct(z).images
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from splitleak.attacks.access import (
    QueryAccess,
    WhiteBoxAccess,
    features_in_batches,
    require,
)
from splitleak.attacks.base import Reconstruction
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.inverse_network import InverseNetwork
from splitleak.attacks.model_reconstruction import ModelReconstruction
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.compute import CPU_FP32, Compute
from splitleak.data.splits import AttackerSamples
from splitleak.errors import NotFittedError, SplitleakError


class _PaidQueries(QueryAccess):
    """Query pairs the attacker already holds, replayed to the attacks it trains on them.

    A repeated query of the same inputs is answered from memory and charges nothing: the
    hybrid pays once for its samples, however many modules it trains on the pairs.
    """

    def __init__(self, x: torch.Tensor, z: torch.Tensor, template: Any) -> None:
        # The base initialiser is deliberately not called: there is no edge behind this.
        self._x, self._z = x, z
        self.inputs, self.feature_shape = template.inputs, template.feature_shape
        self.budget, self.queries_used = None, 0

    def charge(self, n: int) -> None:  # already paid by the hybrid
        del n

    def query(
        self,
        x: torch.Tensor,
        *,
        batch_size: int = 1024,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> torch.Tensor:
        del batch_size  # nothing is computed
        if x.shape != self._x.shape or not torch.equal(x, self._x):
            raise SplitleakError("the hybrid attack only replays the queries it paid for")
        layout = torch.channels_last if channels_last and self._z.dim() == 4 else None
        return self._z.to(dtype=dtype or self._z.dtype,
                          memory_format=layout or torch.preserve_format)  # fmt: skip


class HybridInversion:
    """Decoder-initialised rMLE (see module docstring).

    Args:
        inversion: :class:`~splitleak.attacks.whitebox.WhiteBoxInversion` settings of the
            refinement.
        decoder, architecture, split: the decoder (see
            :class:`~splitleak.attacks.inverse_network.InverseNetwork`).
        shadow, shadow_kind: the untrained imitation of f1 (black-box only).
        training: decoder and imitation training (``epochs``, ``lr``, ... of
            :class:`~splitleak.attacks.specs.TrainingSpec`, ``batch_size``).
        keep_better: per image, keep x0 where the refinement explains z worse.
        cache, seed, progress, compute: as the other learned attacks.
    """

    name = "hybrid"

    def __init__(
        self,
        *,
        inversion: dict[str, Any],
        decoder: str = "paper",
        architecture: str = "",
        split: str = "",
        shadow: nn.Module | None = None,
        shadow_kind: str = "same",
        training: dict[str, Any] | None = None,
        keep_better: bool = True,
        cache: ModuleCache | None = None,
        seed: int = 0,
        progress: bool = False,
        compute: Compute = CPU_FP32,
    ) -> None:
        self.inversion, self.decoder, self.training = dict(inversion), decoder, dict(training or {})
        self.architecture, self.split = architecture, split
        self.shadow, self.shadow_kind, self.keep_better = shadow, shadow_kind, keep_better
        self.cache, self.seed, self.progress, self.compute = cache, seed, progress, compute

    def fit(
        self, access: WhiteBoxAccess | QueryAccess, data: AttackerSamples | None = None
    ) -> HybridInversion:
        """Pair the attacker's samples with their features once; train decoder (+ imitation)."""
        require(access, (WhiteBoxAccess, QueryAccess), "the hybrid attack")
        if data is None:
            raise SplitleakError("the hybrid attack needs attacker samples to train its decoder")
        x = access.inputs.normalization.normalize(data.pixels)
        if isinstance(access, WhiteBoxAccess):
            z = features_in_batches(access.edge, x)
        else:
            z = access.query(x)  # the only queries the hybrid makes
        paid = _PaidQueries(x, z, access)
        common = {**self.training, "cache": self.cache, "seed": self.seed,
                  "progress": self.progress, "compute": self.compute}  # fmt: skip
        self.decoder_ = InverseNetwork(
            decoder=self.decoder, architecture=self.architecture, split=self.split, **common
        ).fit(paid, data)
        if isinstance(access, WhiteBoxAccess):
            self.inverter_ = WhiteBoxInversion(
                **self.inversion, progress=self.progress, compute=self.compute
            ).fit(access)
            self.forward_: Any = access.edge
        else:
            if self.shadow is None:
                raise SplitleakError("the black-box hybrid needs a shadow edge to imitate f1")
            imitation = ModelReconstruction(
                shadow=self.shadow, shadow_kind=self.shadow_kind, inversion=self.inversion,
                **common,
            ).fit(paid, data)  # fmt: skip
            self.inverter_ = imitation.inverter_
            self.forward_ = imitation.shadow_
        return self

    def reconstruct(self, z: torch.Tensor) -> Reconstruction:
        """x0 = g(z), then rMLE from x0; per image the better of the two (feature error)."""
        if not hasattr(self, "inverter_"):
            raise NotFittedError("call fit(access, data) before reconstruct(z)")
        start = self.decoder_.reconstruct(z)
        refined = self.inverter_.reconstruct(z, x0=start.x)
        x = refined.x
        kept = torch.zeros(len(z), dtype=torch.bool)
        if self.keep_better:
            with torch.no_grad():
                device = self.inverter_.compute.device
                kept = _feature_error(self.forward_, start.x, z, device) < _feature_error(
                    self.forward_, refined.x, z, device
                )
            x = torch.where(kept.view(-1, *([1] * (x.dim() - 1))), start.x, refined.x)
        info = {
            **refined.info,
            "decoder_reused": start.info.get("decoder_reused"),
            "start": "decoder",
            "kept_decoder_output": int(kept.sum()),
        }
        norm = self.decoder_.inputs_.normalization
        return Reconstruction(images=norm.denormalize(x), x=x, info=info)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "decoder": self.decoder,
            "shadow": self.shadow_kind if self.shadow is not None else None,
            "training": {k: v for k, v in self.training.items() if k != "compute"},
            "inversion": self.inversion,
            "keep_better": self.keep_better,
            "seed": self.seed,
        }


def _feature_error(forward: Any, x: torch.Tensor, z: torch.Tensor, device: Any) -> torch.Tensor:
    """Per-image MSE between forward(x) and z. Shapes: x (N, C, H, W), z (N, ...) -> (N,)."""
    return (forward(x.to(device)) - z.to(device)).pow(2).flatten(1).mean(1).cpu()
