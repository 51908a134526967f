"""Would a person recognise the reconstruction? Metrics beyond PSNR and SSIM.

The papers' own criterion is recognition; PSNR and SSIM only approximate it (on MNIST a
blurred mean digit scores 11–12 dB). Three measures, each with its chance level:

* **evaluator accuracy** — an independent classifier of *another* architecture than the
  victim (3×3 convolutions with batch norm and global average pooling; the paper networks
  use 5×5 or plain 3×3 convolutions and fully-connected heads), trained by splitleak on
  the victim's *training* split, so disjoint from the evaluation images (test split).
  Its accuracy on the reconstructions is reported next to its accuracy on the originals;
* **identification rate** — the share of reconstructions whose nearest evaluation image
  is their own original, in pixel space and in the evaluator's feature space (chance:
  one over the number of evaluation images);
* **LPIPS** — only when the ``lpips`` package and the AlexNet weights it needs are
  already on disk; nothing is ever downloaded. Otherwise the record says it was skipped.

:func:`recognition_verdict` turns them into verdicts beside the SSIM rule.

Shapes: images, reference (N, C, H, W) in [0, 1]; labels (N,).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.fitting import fit_module
from splitleak.data.dataset import ImageDataset

EVALUATOR_EPOCHS = 2
EVALUATOR_IMAGES = 20_000  # at most this many training images (a seeded subset)
EVALUATOR_SEED = 0
_EVALUATOR_LOCK = threading.RLock()
# Verdict thresholds on chance-normalised scores: (score - chance) / (perfect - chance).
EXPOSED_SCORE, HIDDEN_EVALUATOR, HIDDEN_IDENTIFICATION = 0.5, 0.2, 0.1


class Evaluator(nn.Module):
    """A small classifier of its own architecture: 3 blocks of 3×3 conv + BN + ReLU, GAP, linear.

    Each image is standardised first (zero mean, unit variance), so a global change of
    brightness or contrast — a grey background, a faint reconstruction — does not change
    what it sees; it is trained on clean and on degraded copies (see :func:`degraded`).

    Shapes: x (N, C, H, W) pixels in [0, 1] -> logits (N, classes); features (N, 64).
    """

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(channels, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
            *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1).clamp_min(1e-3).view(-1, 1, 1, 1)
        return self.body((x - mean) / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def evaluator_for(
    train: ImageDataset,
    *,
    cache_dir: Path | None,
    epochs: int = EVALUATOR_EPOCHS,
    max_images: int = EVALUATOR_IMAGES,
    seed: int = EVALUATOR_SEED,
) -> tuple[Evaluator, dict[str, Any]]:
    """The evaluator for ``train``'s dataset, trained once and cached (safetensors + JSON).

    Thread-safe: an executor's driver trains evaluators in a thread of its own while it
    scores cells with others, and both seed the process-wide generator here.
    """
    with _EVALUATOR_LOCK:
        return _evaluator_for(train, cache_dir, epochs, max_images, seed)


def _evaluator_for(
    train: ImageDataset, cache_dir: Path | None, epochs: int, max_images: int, seed: int
) -> tuple[Evaluator, dict[str, Any]]:
    classes = len(train.classes)
    generator = torch.Generator().manual_seed(seed)
    n = min(max_images, len(train))
    rows = torch.randperm(len(train), generator=generator)[:n].sort().values
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Evaluator(train.shape[0], classes)
    settings = {"epochs": epochs, "images": n, "seed": seed, "net": repr(module), "degraded": 1}
    target = {"dataset": train.name, "split": train.split, "fingerprint": train.fingerprint()}

    def fit(net: nn.Module, _resume: Path | None) -> dict[str, Any]:
        # Not resumable: a few minutes at most, and processes sharing one cache (one
        # evaluator for every split) would otherwise share its .partial folder too.
        subset = train.subset(rows)
        clean = subset.to_float()
        inputs = torch.cat([clean, degraded(clean, seed=seed)])
        labels = torch.cat([subset.labels, subset.labels])
        record = fit_module(
            net, inputs, labels, loss_fn=F.cross_entropy,
            epochs=epochs, lr=1e-3, halve_every=10, batch_size=64, seed=seed,
        )  # fmt: skip
        return record.meta()

    cache = ModuleCache(cache_dir, target)
    net, meta, _ = cache.get_or_train("evaluator", module, settings, fit)
    record = {
        "architecture": "evaluator-cnn (per-image standardisation, 3×[3×3 conv, BN, ReLU], "
        "GAP, linear; trained on clean and degraded copies)",
        "trained_on": {"source": f"{train.name}:{train.split}", "n": n, "seed": seed},
        "epochs": epochs,
        "final_loss": (meta.get("loss_history") or [None])[-1],
    }
    return net.eval(), record  # type: ignore[return-value]


def degraded(pixels: torch.Tensor, *, seed: int) -> torch.Tensor:
    """Copies a person would still recognise: blurred (half of them), lower contrast on a
    random background level, Gaussian noise (σ up to 0.2), clipped to [0, 1].

    Shapes: pixels (N, C, H, W) in [0, 1] -> the same.
    """
    g = torch.Generator().manual_seed(seed + 31)
    n = len(pixels)
    blur = F.avg_pool2d(pixels, 3, stride=1, padding=1, count_include_pad=False)
    pick = (torch.rand(n, 1, 1, 1, generator=g) < 0.5).float()
    x = pick * blur + (1 - pick) * pixels
    contrast = 0.3 + 0.7 * torch.rand(n, 1, 1, 1, generator=g)
    x = contrast * x + (1 - contrast) * torch.rand(n, 1, 1, 1, generator=g)
    x = x + 0.2 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


@torch.no_grad()
def evaluator_accuracy(evaluator: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` the evaluator assigns to ``labels``."""
    predicted = torch.cat(
        [evaluator(images[i : i + 512]).argmax(1) for i in range(0, len(images), 512)]
    )
    return float((predicted == labels).float().mean())


def identification_rate(candidates: torch.Tensor, originals: torch.Tensor) -> float:
    """Share of rows whose nearest original (Euclidean) is the original of the same index.

    Shapes: candidates, originals (N, ...) -> a rate in [0, 1]; chance is 1/N.
    """
    a, b = candidates.flatten(1).double(), originals.flatten(1).double()
    nearest = torch.cdist(a, b).argmin(1)
    return float((nearest == torch.arange(len(a))).double().mean())


def lpips_score(images: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """LPIPS (AlexNet) if its package and weights are on disk; else why it was skipped."""
    try:
        import lpips  # type: ignore[import-not-found]
    except ImportError:
        return {"skipped": "the lpips package is not installed (its weights are never downloaded)"}
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not weights.is_file():
        return {
            "skipped": f"AlexNet weights not on disk ({weights}); splitleak never downloads them"
        }
    model = lpips.LPIPS(net="alex", verbose=False).eval()

    def rgb(x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x) * 2 - 1

    with torch.no_grad():
        values = model(rgb(images), rgb(reference)).flatten()
    return {"mean": float(values.mean()), "per_image": values.tolist()}


def score_run(
    images: torch.Tensor,
    reference: torch.Tensor,
    labels: torch.Tensor,
    *,
    train: ImageDataset,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """Every recognisability measure of one run's reconstructions, with chance levels."""
    if len(train.classes) < 2 or len(images) < 2:
        return {"skipped": "needs at least two classes and two evaluation images"}
    evaluator, record = evaluator_for(train, cache_dir=cache_dir)
    with torch.no_grad():
        feats_hat, feats = evaluator.features(images), evaluator.features(reference)
    return {
        "evaluator": record,
        "evaluator_accuracy": evaluator_accuracy(evaluator, images, labels),
        "evaluator_accuracy_original": evaluator_accuracy(evaluator, reference, labels),
        "evaluator_chance": 1 / len(train.classes),
        "identification_pixel": identification_rate(images, reference),
        "identification_features": identification_rate(feats_hat, feats),
        "identification_chance": 1 / len(images),
        "lpips": lpips_score(images, reference),
    }


def normalised(value: float, chance: float, perfect: float = 1.0) -> float:
    """``(value - chance) / (perfect - chance)``: 0 at chance, 1 at the perfect score."""
    span = perfect - chance
    return (value - chance) / span if span > 1e-12 else 0.0


def recognition_verdict(record: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The evaluator and identification verdicts (``exposed``/``borderline``/``hidden``).

    Evaluator: its accuracy on the reconstructions, normalised between chance and its
    accuracy on the originals — exposed at ≥ 0.5, hidden below 0.2. Identification: the
    better of the pixel and feature rates, normalised between chance (1/N) and 1 — exposed
    at ≥ 0.5, hidden below 0.1. Missing measures give no verdict.
    """
    out: dict[str, dict[str, Any]] = {}
    if not record or "skipped" in record:
        return out
    evaluator = normalised(
        record["evaluator_accuracy"],
        record["evaluator_chance"],
        record["evaluator_accuracy_original"],
    )
    out["evaluator"] = {"score": evaluator, "verdict": _level(evaluator, HIDDEN_EVALUATOR)}
    rate = max(record["identification_pixel"], record["identification_features"])
    ident = normalised(rate, record["identification_chance"])
    out["identification"] = {"score": ident, "verdict": _level(ident, HIDDEN_IDENTIFICATION)}
    return out


def _level(score: float, hidden_below: float) -> str:
    if score >= EXPOSED_SCORE:
        return "exposed"
    return "hidden" if score < hidden_below else "borderline"
