"""The typer application every command module registers on, and the two consoles.

Results go to stdout (``console``); errors, warnings and progress go to stderr
(``err_console``), so that ``splitleak ... > out.txt`` keeps the messages on the terminal.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audit how much of an input an untrusted cloud rebuilds in split inference.",
)
console = Console(soft_wrap=True)
err_console = Console(soft_wrap=True, stderr=True)
