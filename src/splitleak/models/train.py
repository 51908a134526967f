"""Train a target network with the authors' recipe, and reuse checkpoints when possible.

Recipe (He et al.): cross-entropy, Adam (lr 1e-3, eps 1e-3, AMSGrad), batch 32, learning
rate halved every 20 epochs. Inputs are normalised with the architecture's mean/std; the
CIFAR recipe adds random horizontal flips and a small random affine transform.

Training runs on a :class:`~splitleak.compute.Compute` (device, mixed precision with fp32
master weights, channels_last for conv nets). A long run is resumable: after every epoch the
weights, optimiser, scheduler and random-generator state are written atomically to a
``.partial`` directory beside the checkpoint, and an identical later run continues from there
with the same random stream, so a resumed run gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.compute import CPU_FP32, Compute
from splitleak.models.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from splitleak.models.loop_state import (
    LoopState,
    check_finite,
    load_loop_state,
    save_loop_state,
)
from splitleak.models.normalization import Normalization
from splitleak.progress import progress_bar
from splitleak.records import stable_hash, versions

if TYPE_CHECKING:
    from splitleak.data import ImageDataset


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines the trained weights (and so the checkpoint's cache key)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    adam_eps: float = 1e-3
    amsgrad: bool = True
    lr_halve_every: int = 20
    augment: bool = False
    max_train_images: int | None = None
    seed: int = 0
    precision: str = "fp32"  # the resolved precision of the forward passes (changes weights)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a small random affine (rotation <= 5 deg, shift <= 2 px).

    Random draws come from ``generator`` (on the CPU) and are moved to ``x``'s device.
    Shapes: x (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, _ = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(5)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / h)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    compute: Compute = CPU_FP32,
) -> float:
    """Top-1 accuracy of ``model`` on normalised inputs ``x`` (N, C, H, W) and labels ``y`` (N,).

    Batches are moved to ``model``'s device; forward passes run under ``compute``'s autocast.
    """
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    correct = 0
    for i in range(0, len(x), batch_size):
        with compute.autocast():
            logits = model(x[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[i : i + batch_size].cpu()).sum())
    return correct / max(len(x), 1)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, eps=config.adam_eps, amsgrad=config.amsgrad
    )


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: TrainConfig,
    progress: bool = True,
    desc: str = "train",
    compute: Compute | None = None,
    evaluate: tuple[torch.Tensor, torch.Tensor] | None = None,
    resume_dir: Path | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place on normalised inputs.

    Args:
        model: already on ``compute``'s device (see :meth:`Compute.module`).
        x, y: normalised training inputs (N, C, H, W) and labels (N,), on any device.
        compute: device and precision; default: the CPU in ``config.precision``.
        evaluate: test inputs and labels; their accuracy is recorded after every epoch.
        resume_dir: if given, the loop state is saved there after every epoch and a run
            interrupted earlier continues from its last finished epoch.

    Returns:
        ``loss`` (mean training loss of each epoch), ``test_accuracy`` (per epoch, if
        ``evaluate``) and ``epoch_seconds``.
    """
    compute = compute or Compute(precision=config.precision)
    generator = torch.Generator().manual_seed(config.seed)  # CPU stream: same order everywhere
    opt = _optimizer(model, config)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_halve_every, gamma=0.5)
    state = LoopState()
    if resume_dir is not None:
        steps = math.ceil(len(x) / config.batch_size)
        state = (
            load_loop_state(
                resume_dir, model, opt, sched, generator, asdict(config), steps_per_epoch=steps
            )
            or state
        )
    x_dev, y_dev = compute.tensor(x), compute.tensor(y)
    channels_last = compute.amp_dtype is not None and x.dim() == 4
    for epoch in range(state.epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator)
        batches = range(0, len(x), config.batch_size)
        bar = progress_bar(
            batches,
            progress=progress,
            desc=f"{desc} {epoch + 1}/{config.epochs}",
            leave=False,
            unit="batch",
        )
        total = torch.zeros((), device=compute.device)
        for start in bar:
            idx = order[start : start + config.batch_size]
            xb = x_dev[idx.to(x_dev.device)]
            if config.augment:
                xb = augment_batch(xb, generator)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with compute.autocast():
                loss = F.cross_entropy(model(xb), y_dev[idx.to(y_dev.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().float() * len(idx)
        sched.step()
        state.history.append(float(total) / len(x))
        check_finite(state.history[-1], epoch=epoch, desc=desc)
        if evaluate is not None:
            state.test_history.append(accuracy(model, *evaluate, compute=compute))
        state.epoch_seconds.append(round(time.perf_counter() - started, 2))
        state.epoch = epoch + 1
        if resume_dir is not None:
            save_loop_state(resume_dir, model, opt, sched, generator, state, asdict(config))
    model.eval()
    out = {"loss": state.history, "epoch_seconds": state.epoch_seconds}
    if evaluate is not None:
        out["test_accuracy"] = state.test_history
    return out


@dataclass(frozen=True)
class TrainedModel:
    """A trained network with its checkpoint directory and metadata."""

    model: nn.Module
    directory: Path
    meta: dict[str, Any]
    reused: bool


def checkpoint_identity(
    architecture: str, train: ImageDataset, config: TrainConfig
) -> dict[str, Any]:
    """What determines a victim's weights; its hash names the checkpoint directory."""
    return {
        "architecture": architecture,
        "dataset": train.name,
        "data_fingerprint": train.fingerprint(),
        "train": asdict(config),
    }


def train_or_load(
    *,
    architecture: str,
    model: nn.Module,
    normalization: Normalization,
    train: ImageDataset,
    test: ImageDataset,
    config: TrainConfig,
    cache_dir: Path,
    progress: bool = True,
    compute: Compute | None = None,
) -> TrainedModel:
    """Train ``model`` (in place) or load the checkpoint of an identical earlier run.

    The checkpoint lives in ``cache_dir / f"{architecture}-{key}"``, where ``key`` hashes the
    architecture, the training data's fingerprint and ``config``. An interrupted run resumes
    from ``<checkpoint>.partial``.
    """
    compute = compute or Compute(precision=config.precision)
    identity = checkpoint_identity(architecture, train, config)
    directory = cache_dir / f"{architecture}-{stable_hash(identity)}"
    if (directory / META_FILE).is_file():
        meta = load_checkpoint(directory, model, architecture=architecture)
        return TrainedModel(model=model.eval(), directory=directory, meta=meta, reused=True)

    _reset(model, config.seed)
    model = compute.module(model)
    subset = (
        train
        if config.max_train_images is None
        else train.subset(range(min(config.max_train_images, len(train))))
    )
    x = normalization.normalize(subset.to_float())
    x_test = normalization.normalize(test.to_float())
    partial = directory.with_name(directory.name + ".partial")
    started = time.perf_counter()
    log = train_classifier(
        model,
        x,
        subset.labels,
        config=config,
        progress=progress,
        desc=architecture,
        compute=compute,
        evaluate=(x_test, test.labels),
        resume_dir=partial,
    )
    seconds = time.perf_counter() - started
    model = model.to(torch.device("cpu"), memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    acc = accuracy(model, x_test, test.labels)  # the reported accuracy: fp32 on the CPU
    meta = {
        **identity,
        "test_dataset": f"{test.name}:{test.split}",
        "test_images": len(test),
        "test_accuracy": acc,
        "train_images": len(subset),
        "loss_history": log["loss"],
        "test_accuracy_history": log["test_accuracy"],
        "epoch_seconds": log["epoch_seconds"],
        "train_seconds": round(seconds, 2),
        "seed": config.seed,
        "epochs": config.epochs,
        "compute": compute.describe(),
        "versions": versions(),
    }
    save_checkpoint(directory, model, meta)
    shutil.rmtree(partial, ignore_errors=True)
    return TrainedModel(model=model.eval(), directory=directory, meta=meta, reused=False)


def _reset(model: nn.Module, seed: int) -> None:
    # Re-initialise every layer from the seed so the weights depend on the seed alone.
    torch.manual_seed(seed)
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
