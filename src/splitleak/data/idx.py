"""Reader for the IDX format used by MNIST, Fashion-MNIST and KMNIST.

An IDX file starts with a 4-byte magic number ``0x0000TTNN`` (``TT`` = element type code,
``NN`` = number of dimensions), then one big-endian ``uint32`` per dimension, then the
row-major payload. Only unsigned-byte payloads (type code ``0x08``) are accepted, which covers
image files (magic ``0x00000803``, shape ``(N, H, W)``) and label files (magic
``0x00000801``, shape ``(N,)``). Files may be gzip-compressed or plain; the gzip signature
is detected from the content, not from the file name.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from splitleak.errors import DatasetError

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "read_idx"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

_GZIP_SIGNATURE = b"\x1f\x8b"
_UBYTE_CODE = 0x08
_ALLOWED_NDIM = (1, 3)
_FIX_HINT = "delete it and rerun to download again, or pass --data-dir DIR to a good copy"


def idx_error(path: Path, problem: str) -> DatasetError:
    """Build the one-line error for a damaged dataset file.

    Args:
        path: The offending file.
        problem: What is wrong with it (one line, no trailing period).

    Returns:
        A :class:`DatasetError` naming the file and saying how to recover.
    """
    problem = " ".join(problem.split())
    return DatasetError(f"{path}: {problem}; {_FIX_HINT}")


def read_idx(path: Path, *, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or plain) into a numpy array.

    Args:
        path: File to read.
        ndim: If given, the number of dimensions the file must have (3 for images,
            1 for labels).

    Returns:
        A writable, C-contiguous ``uint8`` array with the shape stored in the header.

    Raises:
        DatasetError: If the file is missing, unreadable, not gzip although it looks like it,
            truncated, has the wrong magic number, element type or dimension count, or its
            payload size differs from the size the header announces.
    """
    path = Path(path)
    raw = _read_bytes(path)
    shape, offset = _parse_header(path, raw)
    if ndim is not None and len(shape) != ndim:
        raise idx_error(path, f"IDX file has {len(shape)} dimensions, expected {ndim}")
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - offset
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise idx_error(
            path, f"IDX file {kind}: header announces {expected} payload bytes, found {actual}"
        )
    flat = np.frombuffer(raw, dtype=np.uint8, count=expected, offset=offset)
    return flat.reshape(shape).copy()


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``, mapping failures to DatasetError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; pass --data-dir DIR to a good copy") from None
    except OSError as exc:
        raise idx_error(path, f"cannot read file ({exc.strerror or exc})") from None
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise idx_error(path, f"corrupt or truncated gzip data ({exc})") from None


def _parse_header(path: Path, raw: bytes) -> tuple[tuple[int, ...], int]:
    """Validate the IDX header and return ``(shape, payload_offset)``."""
    if len(raw) < 4:
        raise idx_error(path, f"IDX file truncated: only {len(raw)} bytes, no header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = int.from_bytes(raw[:4], "big")
    if zero != 0 or ndim not in _ALLOWED_NDIM:
        raise idx_error(
            path,
            f"not an IDX image or label file: magic 0x{magic:08x}, expected 0x00000803 "
            "(images) or 0x00000801 (labels); is it the right file, and gunzipped only once?",
        )
    if type_code != _UBYTE_CODE:
        raise idx_error(path, f"IDX element type 0x{type_code:02x} is not unsigned byte (0x08)")
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise idx_error(path, f"IDX file truncated inside its {ndim}-dimension header")
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    return tuple(int(d) for d in shape), offset
