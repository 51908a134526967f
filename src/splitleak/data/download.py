"""Checksummed, atomic file downloads with mirror fallback.

A download is streamed into a temporary ``<name>.<random>.part`` file next to the
destination, its md5 is checked, and only then is it renamed into place with
:func:`os.replace`. An interrupted or failed download therefore never leaves a file under the
final name, and partial files are removed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from splitleak.errors import DownloadError
from splitleak.progress import progress_bar

__all__ = ["download_file", "download_from_mirrors", "md5sum"]

_CHUNK = 1 << 20
_USER_AGENT = "splitleak (+https://pypi.org/project/splitleak)"
_HINT = "download it by hand and pass --data-dir DIR (or set SPLITLEAK_DATA)"


def md5sum(path: Path, *, chunk_size: int = _CHUNK) -> str:
    """Return the hex md5 digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk_size: Bytes read at a time.

    Returns:
        The 32-character lowercase hex digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str, dest: Path, *, md5: str | None, progress: bool = True, timeout: float = 60
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its md5.

    Args:
        url: ``http://`` or ``https://`` address.
        dest: Final path. Parent folders are created. An existing file is replaced only
            after the new one is complete and verified.
        md5: Expected hex md5 of the file, or ``None`` to skip the check.
        progress: Show a tqdm progress bar on stderr.
        timeout: Socket timeout in seconds for connecting and for each read.

    Returns:
        ``dest``.

    Raises:
        DownloadError: On a bad URL scheme, HTTP or network error, early end of data, or
            checksum mismatch. Nothing is left at ``dest`` (or as a ``.part`` file).
    """
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise _error(url, "only http and https URLs are supported")
    tmp = _temporary_file(url, dest)
    try:
        with tmp.open("wb") as out:
            digest = _fetch(url, out, progress=progress, timeout=timeout, label=dest.name)
        if md5 is not None and digest != md5.lower():
            raise _error(url, f"checksum mismatch: md5 {digest}, expected {md5.lower()}")
        os.replace(tmp, dest)
    except OSError as exc:  # local disk problems (full, read-only, ...)
        raise _error(url, f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_from_mirrors(
    urls: Sequence[str],
    dest: Path,
    *,
    md5: str | None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Try :func:`download_file` with each URL in turn until one succeeds.

    Args:
        urls: Addresses of the same file, best first.
        dest: Final path.
        md5: Expected hex md5 (a mirror serving other bytes counts as failed).
        progress: Show a progress bar.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest``.

    Raises:
        DownloadError: If every mirror fails; the message lists each failure on one line.
    """
    failures: list[str] = []
    for url in urls:
        try:
            return download_file(url, dest, md5=md5, progress=progress, timeout=timeout)
        except DownloadError as exc:
            failures.append(getattr(exc, "summary", str(exc)))
    if not failures:
        raise DownloadError(f"no download address known for {dest.name}; {_HINT}")
    raise DownloadError(f"{' | '.join(failures)}; {_HINT}")


def _temporary_file(url: str, dest: Path) -> Path:
    """Create an empty ``.part`` file next to ``dest`` (and its parent folders)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise _error(url, f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    return Path(name)


def _fetch(url: str, out: IO[bytes], *, progress: bool, timeout: float, label: str) -> str:
    """Stream ``url`` into ``out`` and return the md5 of the bytes written."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response.headers.get("Content-Length"))
            with progress_bar(
                progress=progress,
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                leave=False,
            ) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as exc:
        raise _error(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _error(url, str(exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, early EOF
        raise _error(url, f"{type(exc).__name__}: {exc}") from None
    if total is not None and received != total:
        raise _error(url, f"connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _content_length(value: str | None) -> int | None:
    """Parse a Content-Length header, ignoring malformed values."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _UrlError(DownloadError):
    """A failed download from one address; ``summary`` omits the what-to-do hint."""

    def __init__(self, url: str, problem: str) -> None:
        problem = " ".join(str(problem).split()) or "unknown error"
        self.summary = f"download of {url} failed ({problem})"
        super().__init__(f"{self.summary}; {_HINT}")


def _error(url: str, problem: str) -> DownloadError:
    """Build the one-line download error for ``url``."""
    return _UrlError(url, problem)
