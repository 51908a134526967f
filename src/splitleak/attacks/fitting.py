"""The training loop every learned attack shares (decoders, shadow edges).

Pure function over in-memory tensors: inputs and targets are computed once (features of
the query set are never recomputed per epoch), then mini-batches with Adam and a step
learning-rate schedule (the authors: lr 1e-3, halved every 10 epochs; their code uses
AMSGrad with eps 1e-3 and reads the query set in order). Forward passes run under the
:class:`~splitleak.compute.Compute`'s autocast with fp32 master weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitleak.compute import CPU_FP32, Compute
from splitleak.models.loop_state import (
    LoopState,
    check_finite,
    load_loop_state,
    save_loop_state,
)
from splitleak.progress import progress_bar


@dataclass(frozen=True)
class FitRecord:
    """What a fit recorded: the mean loss and the seconds of every epoch.

    ``resumed_from_epoch`` is the number of epochs an earlier, interrupted run had finished
    (0 for a fit run in one go); the seconds of those epochs were measured by that run.
    """

    history: list[float]
    epoch_seconds: list[float]
    resumed_from_epoch: int = 0

    def meta(self) -> dict[str, Any]:
        """The record as cache metadata (the ``loss_history`` results keep)."""
        return {
            "loss_history": self.history,
            "epoch_seconds": self.epoch_seconds,
            "train_seconds": round(sum(self.epoch_seconds), 1),
            "resumed_from_epoch": self.resumed_from_epoch,
        }


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
    amsgrad: bool = False,
    adam_eps: float = 1e-8,
    shuffle: bool = True,
    seed: int = 0,
    progress: bool = False,
    desc: str = "fit",
    compute: Compute = CPU_FP32,
    resume_dir: Path | None = None,
) -> FitRecord:
    """Train ``module`` so that ``loss_fn(head(module(inputs)), targets)`` is small.

    ``head`` (optional, frozen by the caller) is applied after ``module``: the query-free
    shadow is trained through the cloud part this way. ``module`` (and ``head``) are moved
    to ``compute``'s device (channels_last under mixed precision) and back to the CPU, in the
    default layout, at the end. Returns the mean loss and the seconds of every epoch.

    ``resume_dir``: if given, the loop state is saved there after every epoch
    (:mod:`splitleak.models.loop_state`) and a run interrupted earlier continues from its last
    finished epoch, ending with the weights an uninterrupted run would have.

    Shapes: inputs (N, ...), targets (N, ...).
    """
    generator = torch.Generator().manual_seed(seed)
    # channels_last under mixed precision (Compute.module): measured here, a CIFAR-10
    # decoder's bf16 training step runs 1.3x (ReLU22) to 2.5x (conv11) faster with it.
    compute.module(module)
    if head is not None:
        compute.module(head)
    # The inputs keep their layout (a channels_last copy of a 50,000-image query set would
    # double its memory); the first convolution converts each mini-batch.
    x, y = compute.tensor(inputs), compute.tensor(targets)
    opt = torch.optim.Adam(module.parameters(), lr=lr, amsgrad=amsgrad, eps=adam_eps)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(halve_every, 1), gamma=0.5)
    settings = {
        "epochs": epochs, "lr": lr, "halve_every": halve_every, "batch_size": batch_size,
        "amsgrad": amsgrad, "adam_eps": adam_eps, "shuffle": shuffle, "seed": seed,
        "precision": compute.precision,
    }  # fmt: skip
    state = LoopState()
    if resume_dir is not None:
        steps = math.ceil(len(x) / batch_size)
        loaded = load_loop_state(
            resume_dir, module, opt, sched, generator, settings, steps_per_epoch=steps
        )
        state = loaded or state
    resumed_from = state.epoch
    bar = progress_bar(
        range(state.epoch, epochs),
        progress=progress,
        desc=desc,
        leave=False,
        unit="epoch",
        initial=state.epoch,
        total=epochs,
    )
    for epoch in bar:
        started = time.perf_counter()
        module.train()
        order = torch.randperm(len(x), generator=generator) if shuffle else torch.arange(len(x))
        order = order.to(x.device)
        total = torch.zeros((), device=x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            with compute.autocast():
                out = module(x[idx])
                loss = loss_fn((head(out) if head is not None else out).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().float() * len(idx)
        sched.step()
        state.history.append(float(total) / max(len(x), 1))
        check_finite(state.history[-1], epoch=epoch, desc=desc)
        state.epoch_seconds.append(round(time.perf_counter() - started, 2))
        state.epoch = epoch + 1
        bar.set_postfix(loss=f"{state.history[-1]:.4g}", refresh=False)  # at the next update
        if resume_dir is not None:
            save_loop_state(resume_dir, module, opt, sched, generator, state, settings)
    # Back on the CPU in the default layout: a fresh module then computes like one loaded
    # from the cache, and ``head`` (often the victim's own cloud part) is left as it came.
    module.eval().to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    if head is not None:
        head.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return FitRecord(state.history, state.epoch_seconds, resumed_from)


class TrainedAttackMixin:
    """For attacks that learn a module: their training hyperparameters as ``fit_module`` kwargs."""

    epochs: int
    lr: float
    halve_every: int
    batch_size: int
    amsgrad: bool
    adam_eps: float
    shuffle: bool
    seed: int
    progress: bool
    compute: Compute

    def _set_training(
        self,
        *,
        epochs: int,
        lr: float,
        halve_every: int,
        batch_size: int,
        amsgrad: bool,
        adam_eps: float,
        shuffle: bool,
        seed: int,
        progress: bool,
        compute: Compute,
    ) -> None:
        self.epochs, self.lr, self.halve_every = epochs, lr, halve_every
        self.batch_size = batch_size
        self.amsgrad, self.adam_eps, self.shuffle = amsgrad, adam_eps, shuffle
        self.seed, self.progress, self.compute = seed, progress, compute

    def training_hyperparameters(self) -> dict[str, object]:
        """What determines the learned module (part of its cache key)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "halve_every": self.halve_every,
            "batch_size": self.batch_size,
            "amsgrad": self.amsgrad,
            "adam_eps": self.adam_eps,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "precision": self.compute.precision,
        }

    def _fit(
        self,
        module: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        head: nn.Module | None = None,
        desc: str,
        resume_dir: Path | None = None,
    ) -> FitRecord:
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
            amsgrad=self.amsgrad,
            adam_eps=self.adam_eps,
            shuffle=self.shuffle,
            seed=self.seed,
            progress=self.progress,
            desc=desc,
            compute=self.compute,
            resume_dir=resume_dir,
        )
