"""The ``splitleak`` command: a package of thin command modules over the Python API.

Each module registers its commands on :data:`splitleak.cli.app.app`; :func:`main` is the
entry point and owns the error contract: a :class:`~splitleak.errors.SplitleakError` (or
an invalid configuration) is one line on stderr and exit status 2, with the traceback only
under ``--debug``.
"""

from __future__ import annotations

import sys

import typer

from splitleak.cli import attack, audit, info, joint_plan, runtime, studies, train  # noqa: F401  (registers)
from splitleak.cli.app import app, console, err_console
from splitleak.errors import SplitleakError

__all__ = ["app", "console", "err_console", "main"]


_state = {"debug": False}


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors"),
) -> None:
    """Audit how much of an input an untrusted cloud rebuilds in split inference."""
    from splitleak.progress import progress_mode

    _state["debug"] = debug
    progress_mode()  # a bad $SPLITLEAK_PROGRESS fails here, before any work


def _fail(message: str) -> None:
    from rich.markup import escape

    line = " ".join(message.split())  # one line, whatever the message contained
    err_console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
    sys.exit(2)


def main() -> None:
    """Entry point: one-line errors on stderr and exit status 2 on bad input."""
    from pydantic import ValidationError

    from splitleak.cli.options import validation_message

    try:  # typer >= 0.22 vendors click; older releases depend on it
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import (  # type: ignore[no-redef,assignment]
            ClickException,
            NoArgsIsHelpError,
            UsageError,
        )

    _state["debug"] = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
    except NoArgsIsHelpError as err:
        err.show()
        sys.exit(2)
    except UsageError as err:  # an unknown option, a value of the wrong type or range
        command = err.ctx.command_path if err.ctx is not None else "splitleak"
        _fail(f"{err.format_message()} (see `{command} --help`)")
    except ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except SplitleakError as err:
        if _state["debug"]:
            raise
        _fail(str(err))
    except ValidationError as err:
        if _state["debug"]:
            raise
        _fail(validation_message(err))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
