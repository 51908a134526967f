"""The CIFAR-10 grid's cell lookup: which finished records count as done on this machine.

A cell finished in bf16 on a CPU with fast bf16 must count as done where ``auto`` resolves
to fp32 (and the reverse), so that sessions on different CPUs continue one grid; an explicit
precision accepts only its own records. Also the report's convergence table (oracle: a loss
with a known geometric decay).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import cifar10_grid  # the benchmark itself

from splitleak.config import AttackConfig, ComputeSettings, TrainSettings, VictimConfig

VICTIM = VictimConfig(model="cifar10-net", train=TrainSettings(epochs=50))


def config(precision: str) -> AttackConfig:
    return AttackConfig(
        victim=VICTIM,
        attack="inverse-network",
        attacker_data="same-set",
        split="conv11",
        compute=ComputeSettings(device="cpu", precision=precision),
    )


@pytest.fixture
def grid_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_grid, "GRID_DIR", tmp_path)
    (tmp_path / "cells").mkdir()
    return tmp_path


RECORD = '{"summary": {}}'


def own_and_other(monkeypatch) -> tuple[str, str]:
    # Pin what ``auto`` resolves to (the site-wide default), so the test means the same on
    # every CPU.
    monkeypatch.setenv("SPLITLEAK_PRECISION", "fp32")
    return "fp32", "bf16"


def test_a_cell_finished_in_the_other_precision_counts_as_done_under_auto(grid_dir, monkeypatch):
    own, other = own_and_other(monkeypatch)
    cfg = config("auto")
    assert cifar10_grid.find_cell(cfg) is None
    elsewhere = cifar10_grid.cell_path(cfg, other)
    elsewhere.write_text(RECORD)
    assert cifar10_grid.find_cell(cfg).path == elsewhere
    # This machine's own record wins once it exists.
    here = cifar10_grid.cell_path(cfg)
    assert here != elsewhere and here == cifar10_grid.cell_path(cfg, own)
    here.write_text(RECORD)
    assert cifar10_grid.find_cell(cfg).path == here


def test_an_explicit_precision_accepts_only_its_own_records(grid_dir, monkeypatch):
    own_and_other(monkeypatch)
    cifar10_grid.cell_path(config("auto"), "bf16").write_text(RECORD)
    assert cifar10_grid.find_cell(config("fp32")) is None
    assert cifar10_grid.find_cell(config("bf16")) is not None


def test_a_damaged_record_counts_as_missing(grid_dir, monkeypatch):
    own_and_other(monkeypatch)
    cfg = config("auto")
    path = cifar10_grid.cell_path(cfg)
    for damaged in ("", '{"summary": {"psnr"', "[]"):
        path.write_text(damaged)
        assert cifar10_grid.find_cell(cfg) is None, damaged
    path.write_text(RECORD)
    assert cifar10_grid.find_cell(cfg) == (path, {"summary": {}})


def test_keys_differ_by_split_and_attack(grid_dir, monkeypatch):
    own_and_other(monkeypatch)
    base = config("auto")
    assert cifar10_grid.cell_path(base) != cifar10_grid.cell_path(
        base.model_copy(update={"split": "ReLU22"})
    )
    assert cifar10_grid.cell_path(base) != cifar10_grid.cell_path(
        base.model_copy(update={"attacker_data": "noise"})
    )


def row(table: str, split: str, key: str, ssim: float) -> dict:
    return {"table": table, "split": split, "row_key": key, "protocol": "paper",
            "summary": {"ssim": {"mean": ssim}}}  # fmt: skip


def test_claim_2_is_judged_below_the_ceiling_and_not_at_it():
    import threat_grid_tables

    def claim_2(same_set: float, same_dist: float, noise: float) -> str:
        rows = [row("4", "s", "same-set", same_set), row("4", "s", "same-distribution", same_dist),
                row("4", "s", "noise", noise)]  # fmt: skip
        (line,) = threat_grid_tables.claims(rows)
        return line

    assert claim_2(0.70, 0.68, 0.30).endswith("→ holds")
    assert claim_2(0.70, 0.40, 0.35).endswith("→ does not hold")
    assert "cannot be judged" in claim_2(1.0, 1.0, 0.9999)


def test_convergence_is_the_relative_change_over_the_last_ten_epochs():
    # Oracle: a loss that halves every epoch moved by 1 − 2^-10 over the last ten.
    history = [2.0**-k for k in range(20)]
    c = cifar10_grid.convergence(history)
    assert c["epochs"] == 20 and c["first"] == 1.0 and c["final"] == 2.0**-19
    assert c["change_last"] == pytest.approx(-100.0 * (1 - 2.0**-10))
    assert cifar10_grid.convergence([1.0] * 11)["change_last"] == 0.0
    with pytest.raises(ValueError):
        cifar10_grid.convergence([1.0] * 10)


def test_both_protocols_of_one_module_are_one_convergence_row():
    history = [1.0 - 0.01 * k for k in range(12)]

    def rec(protocol: str, history: list[float]) -> dict:
        spec = {"table": "4", "split": "ReLU22", "protocol": protocol}
        return {"spec": spec, "row": "noise", "info": {"loss_history": history}}

    lines = cifar10_grid.convergence_lines([rec("paper", history), rec("random", history)])
    assert len(lines) == 3 and "| paper, random |" in lines[2]
    other = [h + 0.5 for h in history]  # a second module (another protocol's draw)
    assert len(cifar10_grid.convergence_lines([rec("paper", history), rec("random", other)])) == 4
    assert cifar10_grid.convergence_lines([rec("paper", history[:5])]) == []  # too short
