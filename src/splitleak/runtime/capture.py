"""The curious cloud's capture: every accepted request body kept byte for byte.

Layout of a capture directory::

    DIR/requests/<request id>.safetensors   the body as received, one file per request
    DIR/index.jsonl                          one JSON line per request, append-only
    DIR/.lock                                held (flock) by the one server writing here

Durability, in the order the server runs it before it answers: the body is written to a
hidden temporary file, fsynced, renamed into place and its directory fsynced; then the
index line is appended and fsynced. An acknowledged request therefore always has both its
file and its index line on disk. A server killed in between leaves at most a hidden
temporary file (never a half-written ``.safetensors``) or a file without its index line;
:func:`repair`, run whenever a store opens, deletes the former and indexes the latter with
``"recovered": true``, so that index lines and files stay one to one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from splitleak.errors import SplitleakError
from splitleak.records import atomic_path
from splitleak.runtime.wire import WireError, parse_header

INDEX = "index.jsonl"
REQUESTS = "requests"
SUFFIX = ".safetensors"


class CaptureError(SplitleakError):
    """A capture directory is unusable: locked by another server, or its index is corrupt."""


@dataclass
class RepairReport:
    """What :func:`repair` found: leftovers of a killed server, and captures without files."""

    partial_files_removed: int = 0
    torn_index_lines: int = 0
    orphans_indexed: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        return not (
            self.partial_files_removed
            or self.torn_index_lines
            or self.orphans_indexed
            or self.missing_files
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_index(root: Path) -> list[dict[str, Any]]:
    """The index's entries in order; a last line without its newline (torn) is skipped.

    Raises:
        CaptureError: a complete line is not a JSON object with a request id and a file.
    """
    path = root / INDEX
    if not path.is_file():
        raise CaptureError(f"{root} is not a capture directory (no {INDEX})")
    text = path.read_bytes()
    lines = text.split(b"\n")[:-1]  # the part after the last newline is torn or empty
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            entry = None
        if not isinstance(entry, dict) or not {"request_id", "file"} <= entry.keys():
            raise CaptureError(f"{path} line {number} is not a capture entry")
        entries.append(entry)
    return entries


def repair(root: Path) -> RepairReport:
    """Make index lines and request files one to one again after a killed server."""
    report = RepairReport()
    requests = root / REQUESTS
    for leftover in requests.glob(".*.tmp"):
        leftover.unlink()
        report.partial_files_removed += 1
    index = root / INDEX
    data = index.read_bytes() if index.is_file() else b""
    if data and not data.endswith(b"\n"):
        with index.open("r+b") as torn:
            torn.truncate(data.rfind(b"\n") + 1)
            os.fsync(torn.fileno())
        report.torn_index_lines = 1
    entries = read_index(root) if index.is_file() else []
    indexed = {e["file"] for e in entries}
    files = sorted(requests.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    report.missing_files = sorted(f for f in indexed if not (root / f).is_file())
    lines = []
    for path in files:
        name = f"{REQUESTS}/{path.name}"
        if name not in indexed:
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            received = mtime.isoformat(timespec="milliseconds")
            lines.append(_entry(path.read_bytes(), path.stem, recovered=True, time=received))
            report.orphans_indexed.append(path.stem)
    if lines:
        with index.open("ab") as f:
            f.write(b"".join(_line(e) for e in lines))
            os.fsync(f.fileno())
    return report


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _entry(body: bytes, request_id: str, **extra: Any) -> dict[str, Any]:
    """An index entry from a body: its declared metadata, size and digest."""
    try:
        meta = parse_header(body).metadata
    except WireError:
        meta = {}
    return {
        "request_id": request_id,
        "time": now_iso(),
        "model": meta.get("model"),
        "split": meta.get("split"),
        "defense": meta.get("defense"),
        "dtype": meta.get("dtype"),
        "shape": meta.get("shape"),
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "file": f"{REQUESTS}/{request_id}{SUFFIX}",
        **extra,
    }


def verify(root: Path, acknowledged: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Audit a capture: index lines vs files, their digests, and the acknowledged requests.

    Args:
        root: the capture directory.
        acknowledged: request id -> sha256 of the body the edge sent and saw answered.

    Returns:
        Counts, and ``one_to_one`` (every line has its file and vice versa, no id twice).
    """
    acknowledged = acknowledged or {}
    entries = read_index(root)
    by_id = {e["request_id"]: e for e in entries}
    files = {p.stem for p in (root / REQUESTS).glob(f"*{SUFFIX}")}
    corrupt = sum(
        (root / e["file"]).is_file()
        and hashlib.sha256((root / e["file"]).read_bytes()).hexdigest() != e["sha256"]
        for e in entries
    )
    return {
        "acknowledged": len(acknowledged),
        "index_lines": len(entries),
        "files": len(files),
        "acknowledged_missing": sum(rid not in by_id for rid in acknowledged),
        "acknowledged_bytes_differ": sum(
            rid in by_id and by_id[rid]["sha256"] != sha for rid, sha in acknowledged.items()
        ),
        "files_not_matching_index": corrupt,
        "partial_files": len(list((root / REQUESTS).glob(".*"))),
        "one_to_one": set(by_id) == files and len(entries) == len(by_id),
        "captured_not_acknowledged": len(set(by_id) - set(acknowledged)),
        "recovered_by_repair": sum(bool(e.get("recovered")) for e in entries),
    }


class CaptureStore:
    """Append-only capture of request bodies; thread-safe; one server per directory.

    Args:
        root: the capture directory (created if missing; repaired when opened).

    Raises:
        CaptureError: another live process holds the directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / REQUESTS).mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise CaptureError(
                f"capture directory {root} is in use by another server; give another --capture"
            ) from None
        self.repair_report = repair(root)
        self._index_fd = os.open(root / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._index_lock = threading.Lock()

    def record(self, body: bytes, request_id: str, **fields: Any) -> dict[str, Any]:
        """Store ``body`` durably, then append its index line; returns the entry.

        ``fields`` (client address, declared defense, ...) go into the index line.
        """
        entry = {**_entry(body, request_id), **fields}
        dest = self.root / entry["file"]
        with atomic_path(dest) as tmp, tmp.open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(dest.parent)
        line = _line(entry)
        with self._index_lock:
            _write_all(self._index_fd, line)
            os.fsync(self._index_fd)
        return entry

    def close(self) -> None:
        """Release the index and the directory lock."""
        for fd in (self._index_fd, self._lock_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
