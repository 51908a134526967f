"""Reuse trained attack models (decoders, shadow edges) across runs and sweeps.

A learned module is stored as safetensors plus JSON metadata under a key that hashes
everything that determines it (victim checkpoint, split point, attacker data, settings).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from splitleak.errors import CheckpointError
from splitleak.models.checkpoint import META_FILE, load_checkpoint, read_meta, save_checkpoint
from splitleak.records import stable_hash, versions, write_json


@dataclass(frozen=True)
class ModuleCache:
    """Where learned attack modules live, and the identity of the target they attack.

    Attributes:
        directory: cache folder; None disables caching.
        target: what identifies the victim and split (checkpoint key, split point, ...).
    """

    directory: Path | None
    target: dict[str, Any]

    def get_or_train(
        self,
        kind: str,
        module: nn.Module,
        settings: dict[str, Any],
        train: Callable[[nn.Module, Path | None], dict[str, Any]],
        *,
        legacy_settings: dict[str, Any] | None = None,
    ) -> tuple[nn.Module, dict[str, Any], bool]:
        """Load ``module``'s weights from the cache, or ``train`` it and store it.

        ``train(module, resume_dir)`` trains in place and returns metadata; a training loop
        that saves its state in ``resume_dir`` after every epoch (``fit_module`` does) lets
        an interrupted run continue there — ``<entry>.partial`` beside the cache entry, removed
        once the entry is stored; None when there is no cache. Returns the module, its
        metadata and whether it was reused.

        ``legacy_settings``: the settings an older version keyed the same module by (``settings``
        plus keys that did not change the module). When nothing is stored under the new key,
        an entry or ``.partial`` state stored under exactly that key, else a finished
        entry whose stored settings without those keys are ``settings``, is moved to the new
        key (its metadata rewritten with the new identity): a change of key costs no
        retraining.
        """
        identity = {"kind": kind, "target": self.target, "settings": settings}
        if self.directory is None:
            return module, {**identity, **train(module, None)}, False
        folder = self.directory / f"{kind}-{stable_hash(identity)}"
        partial = folder.with_name(folder.name + ".partial")
        if legacy_settings is not None and not (folder / META_FILE).is_file():
            self._adopt_legacy(kind, settings, legacy_settings, folder)
        if (folder / META_FILE).is_file():
            meta = load_checkpoint(folder, module, architecture=kind)
            shutil.rmtree(partial, ignore_errors=True)  # left by a run killed after saving
            return module.eval(), meta, True
        trained = train(module, partial)
        meta = {"architecture": kind, **identity, **trained, "versions": versions()}
        save_checkpoint(folder, module, meta)
        shutil.rmtree(partial, ignore_errors=True)
        return module, meta, False

    def _adopt_legacy(
        self, kind: str, settings: dict[str, Any], legacy_settings: dict[str, Any], folder: Path
    ) -> None:
        """Move the module stored under its older key (see :meth:`get_or_train`) to ``folder``.

        Best effort: whatever cannot be moved (another process moved or is writing it, an
        unreadable entry, a leftover folder at the new name) is left alone, and the module
        is trained afresh instead.
        """
        assert self.directory is not None
        legacy = {"kind": kind, "target": self.target, "settings": legacy_settings}
        old = self.directory / f"{kind}-{stable_hash(legacy)}"
        identity = {"kind": kind, "target": self.target, "settings": settings}
        if _adopt_entry(old, folder, identity) or _adopt_partial(old, folder):
            return
        extra = set(legacy_settings) - set(settings)
        wanted = stable_hash({"target": self.target, "settings": settings})
        for other in sorted(self.directory.glob(f"{kind}-*")):
            if not (other / META_FILE).is_file():
                continue
            try:
                meta = read_meta(other)
            except CheckpointError:  # a damaged entry is not this module
                continue
            kept = {k: v for k, v in meta.get("settings", {}).items() if k not in extra}
            found = stable_hash({"target": meta.get("target"), "settings": kept}) == wanted
            if found and _adopt_entry(other, folder, identity):
                return


def _adopt_entry(old: Path, new: Path, identity: dict[str, Any]) -> bool:
    """Move a finished entry to ``new`` (absent) and record its new identity there."""
    if old == new or new.exists() or not (old / META_FILE).is_file():
        return False
    try:
        os.rename(old, new)
    except OSError:  # moved by another process meanwhile, or not movable here
        return False
    meta = read_meta(new)
    write_json(new / META_FILE, {**meta, **identity, "adopted_from": old.name})
    return True


def _adopt_partial(old: Path, new: Path) -> bool:
    """Move a ``.partial`` training state from ``old``'s name to ``new``'s.

    A fit of an older version still running on the same cache loses its state folder and
    stops with an error at its next epoch; rerun it, and this version continues the fit.
    """
    old_partial = old.with_name(old.name + ".partial")
    new_partial = new.with_name(new.name + ".partial")
    if old == new or new_partial.exists() or not old_partial.is_dir():
        return False
    try:
        os.rename(old_partial, new_partial)
    except OSError:
        return False
    return True
