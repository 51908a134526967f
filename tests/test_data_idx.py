"""Tests for the IDX reader (splitleak.data.idx)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from splitleak.data.idx import read_idx
from splitleak.errors import DatasetError


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped unless ``compress`` is false."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def assert_one_line_error(excinfo: pytest.ExceptionInfo[DatasetError], path: Path) -> None:
    """The message must name the file and fit on one line."""
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message
    assert "--data-dir" in message


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_images_and_labels(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    labels = np.arange(7, dtype=np.uint8)
    image_file = write_idx(tmp_path / "img.idx", images, compress=compress)
    label_file = write_idx(tmp_path / "lbl.idx", labels, compress=compress)

    read_images = read_idx(image_file, ndim=3)
    read_labels = read_idx(label_file, ndim=1)

    assert read_images.dtype == np.uint8 and read_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_images.flags.writeable and read_images.flags.c_contiguous


def test_empty_dataset_round_trip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "empty.gz", np.zeros((0, 28, 28), dtype=np.uint8))
    assert read_idx(path).shape == (0, 28, 28)


def test_truncated_gzip(tmp_path: Path, images: np.ndarray) -> None:
    path = write_idx(tmp_path / "t.gz", images)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)


def test_truncated_payload(tmp_path: Path, images: np.ndarray) -> None:
    path = write_idx(tmp_path / "t.idx", images, compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated") as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)


def test_trailing_bytes(tmp_path: Path, images: np.ndarray) -> None:
    path = write_idx(tmp_path / "t.idx", images, compress=False)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DatasetError, match="trailing") as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)


@pytest.mark.parametrize(
    "header",
    [
        b"\x12\x34\x08\x03",  # not starting with two zero bytes
        b"\x00\x00\x08\x07",  # 7 dimensions
        b"\x00\x00\x0d\x03",  # float32 element type
    ],
)
def test_wrong_magic(tmp_path: Path, images: np.ndarray, header: bytes) -> None:
    path = write_idx(tmp_path / "m.gz", images)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(header + raw[4:]))
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)


def test_wrong_dimension_count(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DatasetError, match="expected 3") as excinfo:
        read_idx(path, ndim=3)
    assert_one_line_error(excinfo, path)


@pytest.mark.parametrize("content", [b"\x1f\x8bnot really gzip at all", b"", b"\x00\x00"])
def test_bad_gzip_or_tiny_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gz"
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path)
