"""Load a user's own model from ``path/to/file.py:factory``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from splitleak.errors import SplitleakError


def is_user_model(spec: str) -> bool:
    """``file.py:factory`` specs name user models; anything else is a registered name."""
    return ":" in spec and spec.split(":", 1)[0].endswith(".py")


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Import ``factory`` from ``file.py`` and return it (checked to build an nn.Module)."""
    path_text, _, attr = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise SplitleakError(
            f"model file {path} not found; give the model as path/to/file.py:factory"
        )
    module_name = f"splitleak_user_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise SplitleakError(f"cannot import {path}; is it a Python file?")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:  # a user's file may raise anything
        raise SplitleakError(f"importing {path} failed: {type(err).__name__}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SplitleakError(f"{path} has no callable {attr!r}; give path/to/file.py:factory")
    return _checked(factory, spec)


def _checked(factory: Callable[[], object], spec: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = factory()
        if not isinstance(model, nn.Module):
            raise SplitleakError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return build
