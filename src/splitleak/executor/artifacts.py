"""Trained models travelling between machines: cache folders packed as bytes.

Victims, decoders, shadows and trained defenses live in the model cache
(``$SPLITLEAK_CACHE``: ``models/``, ``attacks/``, ``defenses/``), one folder each, complete
once its ``model.json`` exists. Workers on one
machine share that cache on disk. For a cluster whose nodes do not share a disk, a worker
returns the folders it created as a :data:`Bundle` and the executor hands them to the
cells that depend on them, which install them before running — so nothing is trained twice.
"""

from __future__ import annotations

from pathlib import Path

from splitleak.models.checkpoint import META_FILE
from splitleak.records import atomic_path

Bundle = dict[str, bytes]  # "models/<name>/model.json" (relative to the cache root) -> bytes
_KINDS = ("models", "attacks", "defenses")


def complete_folders(root: Path) -> set[str]:
    """The cache folders under ``root`` whose metadata is written (``models/<name>``, ...)."""
    found = set()
    for kind in _KINDS:
        base = root / kind
        if base.is_dir():
            found |= {f"{kind}/{d.name}" for d in base.iterdir() if (d / META_FILE).is_file()}
    return found


def pack_folder(folder: Path, name: str) -> Bundle:
    """The files of one cache folder under the relative ``name`` (``models/<name>``)."""
    return {f"{name}/{f.name}": f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def pack(root: Path, names: set[str] | list[str]) -> Bundle:
    """Several cache folders of ``root`` as one bundle."""
    bundle: Bundle = {}
    for name in sorted(names):
        bundle.update(pack_folder(root / name, name))
    return bundle


def install(root: Path, bundle: Bundle) -> list[str]:
    """Write a bundle's folders under ``root`` unless already complete there; returns those written.

    Each file is written atomically and ``model.json`` last, so a folder never looks
    complete before it is.
    """
    folders: dict[str, dict[str, bytes]] = {}
    for rel, data in bundle.items():
        folder, _, name = rel.rpartition("/")
        if folder.split("/")[0] not in _KINDS or ".." in rel.split("/"):
            raise ValueError(f"refusing to install {rel!r} outside the model cache")
        folders.setdefault(folder, {})[name] = data
    written = []
    for folder, files in sorted(folders.items()):
        dest = root / folder
        if (dest / META_FILE).is_file():
            continue
        for name in sorted(files, key=lambda n: n == META_FILE):  # metadata last
            with atomic_path(dest / name) as tmp:
                tmp.write_bytes(files[name])
        written.append(folder)
    return written
