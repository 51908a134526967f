"""Tests for the restricted CIFAR-10 batch reader and archive extraction."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitleak.data.cifar import extract_cifar_archive, read_cifar_batch, safe_unpickle
from splitleak.errors import DatasetError


def make_batch(count: int = 6, *, filenames: bool = True, seed: int = 0) -> dict[bytes, Any]:
    """A CIFAR-style batch dict with random pixels."""
    rng = np.random.default_rng(seed)
    batch: dict[bytes, Any] = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in rng.integers(0, 10, size=count)],
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
    }
    if filenames:
        batch[b"filenames"] = [f"img_{i}.png".encode() for i in range(count)]
    return batch


def write_pickle(path: Path, obj: Any, protocol: int = 2) -> Path:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)
    return path


@pytest.mark.parametrize("filenames", [True, False])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_batch_layout(tmp_path: Path, filenames: bool, protocol: int) -> None:
    batch = make_batch(filenames=filenames)
    path = write_pickle(tmp_path / "data_batch_1", batch, protocol)

    images, labels = read_cifar_batch(path)

    assert images.shape == (6, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == batch[b"labels"]
    data = batch[b"data"]
    # channel-major layout: 1024 red, 1024 green, 1024 blue values, row-major 32x32
    assert images[2, 1, 5, 7] == data[2, 1024 + 5 * 32 + 7]
    np.testing.assert_array_equal(images.reshape(6, -1), data)


def test_labels_as_array_and_str_keys(tmp_path: Path) -> None:
    batch = make_batch()
    as_str = {"data": batch[b"data"], "labels": np.asarray(batch[b"labels"])}
    images, labels = read_cifar_batch(write_pickle(tmp_path / "b", as_str, 4))
    assert images.shape == (6, 3, 32, 32)
    assert labels.tolist() == batch[b"labels"]


class Exploit:
    """Pickles to a call of ``os.system`` that would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class EvalExploit:
    """Pickles to a call of ``builtins.exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [Exploit, EvalExploit])
def test_refuses_disallowed_globals(tmp_path: Path, exploit: type) -> None:
    marker = tmp_path / "pwned"
    batch = make_batch()
    batch[b"data"] = exploit(marker)
    path = write_pickle(tmp_path / "evil_batch", batch)

    with pytest.raises(DatasetError, match="refusing") as excinfo:
        read_cifar_batch(path)

    assert not marker.exists()
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_truncated_batch(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "data_batch_2", make_batch(count=50))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as excinfo:
        read_cifar_batch(path)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]},
        {b"data": np.zeros((4, 3072), dtype=np.float32), b"labels": [0, 1, 2, 3]},
        {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2]},
        {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 10]},
        {b"labels": [0]},
    ],
    ids=["not-dict", "bad-shape", "bad-dtype", "label-count", "label-range", "no-data"],
)
def test_bad_structure(tmp_path: Path, obj: Any) -> None:
    path = write_pickle(tmp_path / "batch", obj)
    with pytest.raises(DatasetError) as excinfo:
        read_cifar_batch(path)
    assert str(path) in str(excinfo.value)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x80\x02this is not a pickle")
    with pytest.raises(DatasetError, match="garbage"):
        safe_unpickle(garbage)
    with pytest.raises(DatasetError, match="absent"):
        safe_unpickle(tmp_path / "absent")


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def test_extract_only_expected_members(tmp_path: Path) -> None:
    archive = tmp_path / "cifar.tar.gz"
    good = pickle.dumps(make_batch(count=2), protocol=2)
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "cifar-10-batches-py/test_batch", good)
        add_member(tar, "cifar-10-batches-py/readme.html", b"<html>")
        add_member(tar, "../escape", b"bad")
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    root = tmp_path / "root"
    root.mkdir()

    extract_cifar_archive(archive, root, members=["test_batch"])

    assert sorted(p.name for p in root.rglob("*")) == ["cifar-10-batches-py", "test_batch"]
    assert read_cifar_batch(root / "cifar-10-batches-py" / "test_batch")[0].shape[0] == 2
    assert not (tmp_path / "escape").exists()
    # a symlink is not a regular file, so a member that is only present as a link is missing
    with pytest.raises(DatasetError, match="lacks"):
        extract_cifar_archive(archive, root, members=["data_batch_1"])
    assert not (root / "cifar-10-batches-py" / "data_batch_1").exists()


def test_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError, match=r"cifar\.tar\.gz"):
        extract_cifar_archive(archive, tmp_path, members=["test_batch"])
