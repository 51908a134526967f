"""Train a target network with the authors' recipe, and reuse checkpoints when possible.

Recipe (He et al.): cross-entropy, Adam (lr 1e-3, eps 1e-3, AMSGrad), batch 32, learning
rate halved every 20 epochs. Inputs are normalised with the architecture's mean/std; the
CIFAR recipe adds random horizontal flips and a small random affine transform.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from splitleak.models.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from splitleak.models.normalization import Normalization
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


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a small random affine (rotation <= 5 deg, shift <= 2 px).

    Shapes: x (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, _ = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(5)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / h)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` on normalised inputs ``x`` (N, C, H, W) and labels ``y`` (N,)."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / max(len(x), 1)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    config: TrainConfig,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` in place on normalised inputs; returns the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(
        model.parameters(), lr=config.lr, eps=config.adam_eps, amsgrad=config.amsgrad
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_halve_every, gamma=0.5)
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        batches = range(0, len(x), config.batch_size)
        bar = tqdm(
            batches,
            desc=f"{desc} {epoch + 1}/{config.epochs}",
            disable=None if progress else True,
            leave=False,
            unit="batch",
        )
        total = 0.0
        for start in bar:
            idx = order[start : start + config.batch_size]
            xb = augment_batch(x[idx], generator) if config.augment else x[idx]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append(total / len(x))
    model.eval()
    return history


@dataclass(frozen=True)
class TrainedModel:
    """A trained network with its checkpoint directory and metadata."""

    model: nn.Module
    directory: Path
    meta: dict[str, Any]
    reused: bool


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
) -> TrainedModel:
    """Train ``model`` (in place) or load the checkpoint of an identical earlier run.

    The checkpoint lives in ``cache_dir / f"{architecture}-{key}"``, where ``key`` hashes the
    architecture, the training data's fingerprint and ``config``.
    """
    identity = {
        "architecture": architecture,
        "dataset": train.name,
        "data_fingerprint": train.fingerprint(),
        "train": asdict(config),
    }
    directory = cache_dir / f"{architecture}-{stable_hash(identity)}"
    if (directory / META_FILE).is_file():
        meta = load_checkpoint(directory, model, architecture=architecture)
        return TrainedModel(model=model.eval(), directory=directory, meta=meta, reused=True)

    _reset(model, config.seed)
    subset = (
        train
        if config.max_train_images is None
        else train.subset(range(min(config.max_train_images, len(train))))
    )
    x = normalization.normalize(subset.to_float())
    started = time.perf_counter()
    history = train_classifier(
        model, x, subset.labels, config=config, progress=progress, desc=architecture
    )
    seconds = time.perf_counter() - started
    acc = accuracy(model, normalization.normalize(test.to_float()), test.labels)
    meta = {
        **identity,
        "test_dataset": f"{test.name}:{test.split}",
        "test_images": len(test),
        "test_accuracy": acc,
        "train_images": len(subset),
        "loss_history": history,
        "train_seconds": round(seconds, 2),
        "seed": config.seed,
        "epochs": config.epochs,
        "versions": versions(),
    }
    save_checkpoint(directory, model, meta)
    return TrainedModel(model=model, directory=directory, meta=meta, reused=False)


def _reset(model: nn.Module, seed: int) -> None:
    # Re-initialise every layer from the seed so the weights depend on the seed alone.
    torch.manual_seed(seed)
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
