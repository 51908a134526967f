"""The in-memory image dataset returned by :func:`splitleak.data.load_dataset`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from splitleak.errors import DatasetError

__all__ = ["ImageDataset"]


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image classification split held in memory.

    Datasets returned by :func:`~splitleak.data.load_dataset` are cached and shared between
    callers: treat ``images`` and ``labels`` as read-only (use :meth:`to_float` or
    ``.clone()`` to get a tensor you may modify).

    Attributes:
        name: Registry name, e.g. ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        images: ``uint8`` tensor of shape ``(N, C, H, W)``.
        labels: ``int64`` tensor of shape ``(N,)`` with values in ``0..len(classes)-1``.
        classes: Human-readable class names, indexed by label.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        """Check dtypes, shapes and label range.

        Raises:
            DatasetError: If the tensors do not form a valid dataset.
        """
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(
                f"{self.name} {self.split}: images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise DatasetError(
                f"{self.name} {self.split}: labels must be int64 of shape "
                f"({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DatasetError(
                f"{self.name} {self.split}: labels outside 0..{len(self.classes) - 1}"
            )

    def __len__(self) -> int:
        """Return the number of images."""
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape of one image."""
        _, channels, height, width = self.images.shape
        return int(channels), int(height), int(width)

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ImageDataset:
        """Return a new dataset with the images at ``indices`` (in that order).

        Args:
            indices: 1-D integer indices; repeats are allowed, negative values count from the
                end.

        Returns:
            A dataset with the same name, split and classes and copied tensors.

        Raises:
            IndexError: If the indices are not 1-D integers or some index is out of range.
        """
        array = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise IndexError(
                f"subset indices must be 1-D integers, got {array.dtype} {tuple(array.shape)}"
            )
        index = torch.as_tensor(array.astype(np.int64))
        count = len(self)
        if len(index) and (int(index.min()) < -count or int(index.max()) >= count):
            raise IndexError(f"subset index out of range for a dataset of {count} images")
        return ImageDataset(
            name=self.name,
            split=self.split,
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
        )

    def fingerprint(self) -> str:
        """Return a short content hash of the images and labels.

        Returns:
            The first 16 hex characters of the sha256 of the shape, image bytes and label
            bytes. Equal fingerprints mean identical data in identical order.
        """
        digest = hashlib.sha256()
        digest.update(repr(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().data)
        digest.update(self.labels.contiguous().numpy().astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    def to_float(self) -> torch.Tensor:
        """Return the images as a new ``float32`` tensor scaled to ``[0, 1]``."""
        return self.images.to(torch.float32).div_(255.0)
