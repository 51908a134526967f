"""The training loop every learned attack shares (decoders, shadow edges).

Pure function over in-memory tensors: inputs and targets are computed once (features of
the query set are never recomputed per epoch), then shuffled mini-batches with Adam and a
step learning-rate schedule (the authors: lr 1e-3, halved every 10 epochs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm


def fit_module(
    module: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    head: nn.Module | None = None,
    epochs: int,
    lr: float = 1e-3,
    halve_every: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    desc: str = "fit",
) -> list[float]:
    """Train ``module`` so that ``loss_fn(head(module(inputs)), targets)`` is small.

    ``head`` (optional, frozen by the caller) is applied after ``module``: the query-free
    shadow is trained through the cloud part this way. Returns the mean loss per epoch.

    Shapes: inputs (N, ...), targets (N, ...).
    """
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(halve_every, 1), gamma=0.5)
    history: list[float] = []
    bar = tqdm(
        range(epochs), desc=desc, disable=None if progress else True, leave=False, unit="epoch"
    )
    for _ in bar:
        module.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            out = module(inputs[idx])
            loss = loss_fn(head(out) if head is not None else out, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append(total / max(len(inputs), 1))
        bar.set_postfix(loss=f"{history[-1]:.4g}")
    module.eval()
    return history


class TrainedAttackMixin:
    """For attacks that learn a module: their training hyperparameters as ``fit_module`` kwargs."""

    epochs: int
    lr: float
    halve_every: int
    batch_size: int
    seed: int
    progress: bool

    def _fit(
        self,
        module: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        head: nn.Module | None = None,
        desc: str,
    ) -> list[float]:
        return fit_module(
            module,
            inputs,
            targets,
            loss_fn=loss_fn,
            head=head,
            epochs=self.epochs,
            lr=self.lr,
            halve_every=self.halve_every,
            batch_size=self.batch_size,
            seed=self.seed,
            progress=self.progress,
            desc=desc,
        )
