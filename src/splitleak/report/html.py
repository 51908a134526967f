"""Placeholder: the HTML report renderer (being written)."""

from __future__ import annotations

from pathlib import Path

from splitleak.records import write_json
from splitleak.report.results import assemble


def render_report(directory: Path) -> Path:
    results = assemble(directory)
    write_json(directory / "results.json", results)
    return directory / "results.json"
