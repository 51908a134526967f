"""Safe readers for the CIFAR-10 "python version" batches and archive.

A batch file is a pickled dict with (at least) the keys ``b"data"`` (``uint8`` array of
shape ``(10000, 3072)``: 1024 red, then 1024 green, then 1024 blue values per image,
row-major 32x32) and ``b"labels"`` (a list of ints); str keys are accepted too. The
optional ``b"filenames"`` and ``b"batch_label"`` entries are ignored.

Pickle files can run arbitrary code when loaded, so batches are read with
:class:`RestrictedUnpickler`, which resolves only the few numpy globals needed to rebuild an
array and refuses everything else *before* anything is called.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from splitleak.data.idx import idx_error
from splitleak.errors import DatasetError

__all__ = [
    "CIFAR_ARCHIVE_FOLDER",
    "RestrictedUnpickler",
    "extract_cifar_archive",
    "read_cifar_batch",
    "safe_unpickle",
]

CIFAR_ARCHIVE_FOLDER = "cifar-10-batches-py"
_IMAGE_SHAPE = (3, 32, 32)
_NUM_CLASSES = 10


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes.

    Only the latin-1 codec is accepted, so the pickle cannot reach other codecs.
    """
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in _LATIN1:
        raise DatasetError(f"refusing to load global _codecs.encode with {encoding!r}")
    return text.encode("latin1")


_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """Map the (module, name) pairs found in numpy batch pickles to the objects they denote.

    The objects are taken from numpy's own reduce output so that no private module has to be
    imported by name (``numpy.core`` is deprecated in numpy 2, ``numpy._core`` is absent in
    numpy 1).
    """
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.int64(0).__reduce__()[0]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{package}.multiarray", "scalar")] = scalar
    frombuffer = np.empty(0).__reduce_ex__(5)[0]  # protocol-5 pickles (numpy >= 1.16)
    if getattr(frombuffer, "__name__", "") == "_frombuffer":
        for package in ("numpy.core", "numpy._core"):
            table[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return table


_ALLOWED_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves numpy's array-rebuilding globals.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes, ...) raises
    :class:`~splitleak.errors.DatasetError` when the pickle refers to it, so it is never
    called.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` if it is on the allow-list.

        Args:
            module: Module path stored in the pickle.
            name: Attribute name stored in the pickle.

        Returns:
            The allowed object.

        Raises:
            DatasetError: If the global is not allowed.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(f"refusing to load global {module}.{name}") from None


def safe_unpickle(path: Path) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Args:
        path: Pickle file to read.

    Returns:
        The unpickled object (built only from plain containers and numpy arrays).

    Raises:
        DatasetError: If the file is missing, unreadable, corrupt, truncated or refers to a
            global that is not allowed. The message names the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; pass --data-dir DIR to a good copy") from None
    except DatasetError as exc:
        raise idx_error(path, f"unsafe pickle, {exc}") from None
    except Exception as exc:  # pickle raises many unrelated types on corrupt input
        problem = f"corrupt or truncated pickle ({type(exc).__name__}: {exc})"
        raise idx_error(path, problem) from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch file.

    Args:
        path: A ``data_batch_*`` or ``test_batch`` file.

    Returns:
        ``(images, labels)``: ``uint8`` array of shape ``(N, 3, 32, 32)`` and ``int64``
        array of shape ``(N,)`` with values in ``0..9``.

    Raises:
        DatasetError: If the file cannot be read safely or its content does not have the
            CIFAR-10 batch structure.
    """
    path = Path(path)
    batch = safe_unpickle(path)
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        missing = " and ".join(k for k, v in (("data", data), ("labels", labels)) if v is None)
        found = sorted(map(str, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise idx_error(
            path,
            f"not a CIFAR-10 batch: no {missing!r} entry (found {found}); expected the "
            "python-version batches of cifar-10-python.tar.gz",
        )
    images = _check_images(path, data)
    return images, _check_labels(path, labels, len(images))


def _entry(batch: Any, key: str) -> Any:
    """Return ``batch[key]`` for a bytes or str key, or ``None`` if absent."""
    if not isinstance(batch, dict):
        return None
    return batch.get(key.encode(), batch.get(key))


def _check_images(path: Path, data: Any) -> np.ndarray:
    """Validate the ``data`` entry and reshape it to ``(N, 3, 32, 32)``."""
    size = int(np.prod(_IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise idx_error(path, "CIFAR-10 batch data is not a uint8 numpy array")
    if data.ndim != 2 or data.shape[1] != size:
        raise idx_error(path, f"CIFAR-10 batch data has shape {data.shape}, expected (N, {size})")
    images = np.ascontiguousarray(data).reshape(-1, *_IMAGE_SHAPE)
    return images if images.flags.writeable else images.copy()


def _check_labels(path: Path, labels: Any, count: int) -> np.ndarray:
    """Validate the ``labels`` entry and return it as ``int64``."""
    try:
        array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise idx_error(path, "CIFAR-10 batch labels are not integers") from None
    if array.shape != (count,):
        raise idx_error(path, f"CIFAR-10 batch has {count} images but labels of {array.shape}")
    if count and (array.min() < 0 or array.max() >= _NUM_CLASSES):
        raise idx_error(path, "CIFAR-10 batch labels outside 0..9")
    return array


def extract_cifar_archive(archive: Path, root: Path, *, members: Iterable[str]) -> None:
    """Extract the listed CIFAR-10 files from the official tarball into ``root``.

    Only regular-file members named ``cifar-10-batches-py/<name>`` for ``<name>`` in
    ``members`` are extracted (with ``tarfile``'s ``"data"`` filter where available). They
    are first written to a temporary folder inside ``root`` and then moved into place, so an
    interrupted extraction never leaves a file that looks complete. Files that already exist
    are left untouched.

    Args:
        archive: The ``cifar-10-python.tar.gz`` file.
        root: Data root; files land in ``root / "cifar-10-batches-py"``.
        members: Bare file names to extract, e.g. ``"data_batch_1"``.

    Raises:
        DatasetError: If the archive is corrupt or lacks one of the requested files.
    """
    wanted = {f"{CIFAR_ARCHIVE_FOLDER}/{name}" for name in members}
    target = root / CIFAR_ARCHIVE_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".cifar-extract-") as scratch:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                chosen = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
                _check_complete(archive, wanted, chosen)
                _extract(tar, chosen, Path(scratch))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise idx_error(archive, f"corrupt or truncated archive ({exc})") from None
        for member in chosen:
            final = target / Path(member.name).name
            if not final.exists():
                os.replace(Path(scratch) / member.name, final)


def _check_complete(archive: Path, wanted: set[str], chosen: list[tarfile.TarInfo]) -> None:
    """Raise if some wanted member is absent from the archive."""
    missing = sorted(wanted - {m.name for m in chosen})
    if missing:
        raise idx_error(archive, f"archive lacks {', '.join(missing)}")


def _extract(tar: tarfile.TarFile, chosen: list[tarfile.TarInfo], dest: Path) -> None:
    """Extract ``chosen`` into ``dest`` using the ``"data"`` filter when Python has it."""
    data_filter: Callable[..., Any] | None = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        tar.extractall(dest, members=chosen, filter="data")
        return
    for member in chosen:  # Python < 3.11.4: copy bytes by hand, names were checked above
        out = dest / member.name
        out.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        with contextlib.closing(source or io.BytesIO()) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
