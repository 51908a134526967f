"""The loops' progress bar: silent in a log by default, one plain line per update on request."""

from __future__ import annotations

import pytest

from splitleak import cli
from splitleak.errors import SplitleakError
from splitleak.progress import PROGRESS_ENV, progress_bar, progress_mode


def run_bar(n: int = 4, **kwargs) -> list[int]:
    return list(progress_bar(range(n), desc="fit", **kwargs))


def test_a_log_gets_one_plain_line_per_update_when_asked(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "log:1e-9")  # every iteration is due
    assert run_bar(progress=True) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) >= 4 and all(line.startswith("fit") for line in lines)
    assert "4/4" in lines[-1]  # the bar is left at its final state


@pytest.mark.parametrize("setting", ["", "auto", "off", "log", "loud"])
def test_progress_false_is_silent_and_reads_no_setting(monkeypatch, capsys, setting):
    monkeypatch.setenv(PROGRESS_ENV, setting)
    assert run_bar(progress=False) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("setting", ["", "auto", "off"])
def test_a_log_gets_no_bar_by_default(monkeypatch, capsys, setting):
    # capsys's stderr is not a terminal: tqdm's own rule hides the bar there.
    monkeypatch.setenv(PROGRESS_ENV, setting)
    run_bar(progress=True)
    assert capsys.readouterr().err == ""


def test_the_interval_parses(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "log:30")
    assert progress_mode() == ("log", 30.0)
    monkeypatch.setenv(PROGRESS_ENV, "log")
    assert progress_mode() == ("log", 60.0)


@pytest.mark.parametrize("bad", ["loud", "log:0", "log:-5", "log:soon", "off:3"])
def test_a_bad_setting_is_refused(monkeypatch, bad):
    monkeypatch.setenv(PROGRESS_ENV, bad)
    with pytest.raises(SplitleakError, match="SPLITLEAK_PROGRESS"):
        progress_mode()


def test_the_cli_refuses_a_bad_setting_before_any_work(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "loud")
    monkeypatch.setattr("sys.argv", ["splitleak", "models"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SPLITLEAK_PROGRESS='loud'" in err
