"""Exceptions raised by splitleak.

Every error a user can trigger with bad input is a :class:`SplitleakError`; the CLI prints
its message on one line and exits non-zero. Messages say what was wrong and what to do.
"""

from __future__ import annotations


class SplitleakError(Exception):
    """Base class for errors caused by user input (bad data, names, files or settings)."""


class DatasetError(SplitleakError):
    """A dataset file is missing, truncated, corrupt or of the wrong kind."""


class DownloadError(DatasetError):
    """A download failed or produced a file whose checksum does not match."""


class UnknownNameError(SplitleakError, KeyError):
    """A model, split point, dataset, profile or other name is not one of the valid choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SplitleakError):
    """A checkpoint is missing, corrupt, or does not match the requested architecture."""


class AccessError(SplitleakError):
    """An attack was handed access its threat model does not allow."""


class QueryBudgetExceeded(AccessError):
    """An attacker asked the edge oracle for more queries than its budget allows."""


class NotFittedError(SplitleakError, RuntimeError):
    """An attack or defense was used before ``fit``."""


class InputError(SplitleakError):
    """A tensor has the wrong shape, dtype or contains non-finite values."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the standard "unknown X 'y'; valid: a, b, c" error."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
