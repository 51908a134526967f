"""Download tests against a local HTTP server (no internet needed)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitleak.data import DATASETS, load_dataset
from splitleak.data.download import download_file, download_from_mirrors, md5sum
from splitleak.data.registry import clear_dataset_cache
from splitleak.data.specs import CifarSpec, IdxSpec, RemoteFile
from splitleak.errors import DatasetError, DownloadError

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a folder, records request paths, and cuts ``/cut/...`` transfers short."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/cut/"):
            self._send_half(self.path.removeprefix("/cut/"))
            return
        super().do_GET()

    def _send_half(self, name: str) -> None:
        payload = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server:
    """A running local server: ``url`` of its root, ``folder`` served, ``requests`` seen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[str] = []
        handler = type("Handler", (CountingHandler,), {"requests": self.requests})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=folder))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    folder = tmp_path / "served"
    folder.mkdir()
    srv = Server(folder)
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def publish_mnist_test(server: Server) -> tuple[np.ndarray, np.ndarray]:
    """Put a small MNIST-style test split on the server; return its arrays."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    (server.folder / TEST_IMAGES).write_bytes(idx_bytes(images))
    (server.folder / TEST_LABELS).write_bytes(idx_bytes(labels))
    return images, labels


def patch_mnist(
    monkeypatch: pytest.MonkeyPatch, server: Server, mirrors: tuple[str, ...], **md5: str
) -> None:
    """Point the registry's MNIST test files at ``mirrors`` with the served files' md5."""
    spec = DATASETS["mnist"]
    assert isinstance(spec, IdxSpec)
    files = tuple(
        RemoteFile(name, md5.get(name, md5sum(server.folder / name)))
        for name in (TEST_IMAGES, TEST_LABELS)
    )
    patched = dataclasses.replace(spec, mirrors=mirrors, test=files)  # type: ignore[arg-type]
    monkeypatch.setitem(DATASETS, "mnist", patched)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_verify_load_and_no_second_request(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = publish_mnist_test(server)
    # the first mirror 404s, so the second one must be used
    patch_mnist(monkeypatch, server, (server.url + "gone/", server.url))
    root = tmp_path / "data"

    data = load_dataset("mnist", "test", root=root, progress=False)

    assert data.images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert leftovers(root) == sorted([TEST_IMAGES, TEST_LABELS])
    assert len(server.requests) == 4  # two 404s on the first mirror, two successes

    clear_dataset_cache()
    again = load_dataset("mnist", "test", root=root, progress=False)
    assert again.fingerprint() == data.fingerprint()
    assert len(server.requests) == 4


def test_wrong_md5_leaves_nothing(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_mnist_test(server)
    patch_mnist(monkeypatch, server, (server.url,), **{TEST_IMAGES: "0" * 32})
    root = tmp_path / "data"

    with pytest.raises(DownloadError, match="checksum mismatch") as excinfo:
        load_dataset("mnist", "test", root=root, progress=False)

    message = str(excinfo.value)
    assert server.url + TEST_IMAGES in message and "\n" not in message
    assert "--data-dir" in message and "SPLITLEAK_DATA" in message
    assert leftovers(root) == []


def test_cut_transfer_leaves_nothing(tmp_path: Path, server: Server) -> None:
    publish_mnist_test(server)
    dest = tmp_path / "data" / TEST_IMAGES

    with pytest.raises(DownloadError, match="cut/") as excinfo:
        download_file(server.url + "cut/" + TEST_IMAGES, dest, md5=None, progress=False)

    assert "\n" not in str(excinfo.value)
    assert leftovers(dest.parent) == []


def test_download_file_http_error_and_scheme(tmp_path: Path, server: Server) -> None:
    dest = tmp_path / "x.gz"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "missing.gz", dest, md5=None, progress=False)
    with pytest.raises(DownloadError, match="only http"):
        download_file("file:///etc/passwd", dest, md5=None, progress=False)
    with pytest.raises(DownloadError, match=r"missing\.gz.*\|.*other\.gz"):
        download_from_mirrors(
            [server.url + "missing.gz", server.url + "other.gz"], dest, md5=None, progress=False
        )
    assert leftovers(tmp_path) == []


def test_download_file_with_progress_and_md5(tmp_path: Path, server: Server) -> None:
    payload = bytes(range(256)) * 100
    (server.folder / "blob.bin").write_bytes(payload)
    digest = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "sub" / "blob.bin"

    assert download_file(server.url + "blob.bin", dest, md5=digest.upper()) == dest
    assert dest.read_bytes() == payload and md5sum(dest) == digest


def test_missing_without_download_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as excinfo:
        load_dataset("mnist", "test", root=tmp_path, download=False)
    expected = (
        f"MNIST file {tmp_path.resolve() / 'mnist' / TEST_IMAGES} not found; pass --data-dir "
        "DIR (or set SPLITLEAK_DATA) to a folder holding mnist/, or allow download"
    )
    assert str(excinfo.value) == expected


def cifar_tarball(path: Path) -> None:
    """Write a tiny CIFAR-10-style tarball with 3 images per batch and a hostile member."""
    rng = np.random.default_rng(2)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            batch = {
                b"labels": [int(v) for v in rng.integers(0, 10, size=3)],
                b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8),
            }
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("../outside")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))


def test_cifar_archive_download_and_extract(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = server.folder / "cifar-10-python.tar.gz"
    cifar_tarball(archive)
    spec = DATASETS["cifar10"]
    assert isinstance(spec, CifarSpec)
    patched = dataclasses.replace(
        spec, archive_urls=(server.url + archive.name,), archive_md5=md5sum(archive)
    )
    monkeypatch.setitem(DATASETS, "cifar10", patched)
    root = tmp_path / "data"

    test = load_dataset("cifar10", "test", root=root, progress=False)
    train = load_dataset("cifar10", "train", root=root, progress=False)

    assert test.images.shape == (3, 3, 32, 32) and len(train) == 15
    assert len(server.requests) == 1
    assert not (root / archive.name).exists()  # downloaded archive removed after unpacking
    assert not (tmp_path / "outside").exists()
    assert len(leftovers(root)) == 7


def test_unwritable_destination(tmp_path: Path, server: Server) -> None:
    (server.folder / "blob.bin").write_bytes(b"abc")
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    with pytest.raises(DownloadError, match="cannot write"):
        download_file(server.url + "blob.bin", blocker / "blob.bin", md5=None, progress=False)
