"""The split planner: edge costs per split point, Pareto front, recommendation, table, figure."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from splitleak.errors import InputError, SplitleakError, UnknownNameError
from splitleak.models import split_model, split_points
from splitleak.models.zoo import cifar10_net, mnist_net
from splitleak.planner import (
    Constraints,
    PlanRow,
    SplitCost,
    format_table,
    pareto_front,
    plan_rows,
    recommend,
    split_costs,
)
from splitleak.report.planner_plot import plot_plan

# --- MNIST network, by hand ---------------------------------------------------------------
# conv1: 8 out channels x 24x24 outputs x (1 in channel x 5x5 kernel); params 8x1x5x5 + 8 bias
CONV1_MACS = 8 * 24 * 24 * (1 * 5 * 5)  # 115200
CONV1_PARAMS = 8 * 1 * 5 * 5 + 8  # 208
# conv2: 16 out channels x 8x8 outputs x (8 in channels x 5x5 kernel)
CONV2_MACS = 16 * 8 * 8 * (8 * 5 * 5)  # 204800
CONV2_PARAMS = 16 * 8 * 5 * 5 + 16  # 3216
# fc1: 256 inputs x 120 outputs; fc2: 120 x 84
FC1_MACS, FC1_PARAMS = 256 * 120, 256 * 120 + 120  # 30720, 30840
FC2_MACS, FC2_PARAMS = 120 * 84, 120 * 84 + 84  # 10080, 10164

# split -> (edge MACs, edge params, feature shape); ReLU and max-pool add no MACs or params.
MNIST_EXPECTED = {
    "conv1": (CONV1_MACS, CONV1_PARAMS, (8, 24, 24)),
    "ReLU1": (CONV1_MACS, CONV1_PARAMS, (8, 24, 24)),
    "pool1": (CONV1_MACS, CONV1_PARAMS, (8, 12, 12)),
    "conv2": (CONV1_MACS + CONV2_MACS, CONV1_PARAMS + CONV2_PARAMS, (16, 8, 8)),
    "ReLU2": (CONV1_MACS + CONV2_MACS, CONV1_PARAMS + CONV2_PARAMS, (16, 8, 8)),
    "pool2": (CONV1_MACS + CONV2_MACS, CONV1_PARAMS + CONV2_PARAMS, (16, 4, 4)),
    "fc1": (320000 + FC1_MACS, 3424 + FC1_PARAMS, (120,)),
    "fc1act": (320000 + FC1_MACS, 3424 + FC1_PARAMS, (120,)),
    "fc2": (320000 + FC1_MACS + FC2_MACS, 3424 + FC1_PARAMS + FC2_PARAMS, (84,)),
    "fc2act": (320000 + FC1_MACS + FC2_MACS, 3424 + FC1_PARAMS + FC2_PARAMS, (84,)),
}
# float32 feature bytes: elements x 4
MNIST_FLOAT32_BYTES = {
    "conv1": 8 * 24 * 24 * 4,  # 18432
    "ReLU1": 8 * 24 * 24 * 4,
    "pool1": 8 * 12 * 12 * 4,  # 4608
    "conv2": 16 * 8 * 8 * 4,  # 4096
    "ReLU2": 16 * 8 * 8 * 4,
    "pool2": 16 * 4 * 4 * 4,  # 1024
    "fc1": 120 * 4,  # 480
    "fc1act": 120 * 4,
    "fc2": 84 * 4,  # 336
    "fc2act": 84 * 4,
}


def test_mnist_costs_match_hand_computed_values() -> None:
    costs = split_costs(mnist_net(), (1, 28, 28))
    assert [c.split for c in costs] == list(MNIST_EXPECTED)
    assert MNIST_EXPECTED["ReLU2"][0] == 320000
    for depth, cost in enumerate(costs):
        macs, params, shape = MNIST_EXPECTED[cost.split]
        assert cost.depth == depth
        assert (cost.edge_macs, cost.edge_params, cost.feature_shape) == (macs, params, shape)
        assert cost.edge_param_bytes == params * 4
        assert cost.feature_bytes == MNIST_FLOAT32_BYTES[cost.split]
    assert MNIST_FLOAT32_BYTES["conv1"] == 18432 and MNIST_FLOAT32_BYTES["pool2"] == 1024


@pytest.mark.parametrize(
    ("dtype", "divisor"),
    [(torch.float16, 2), (torch.bfloat16, 2), (torch.int8, 4), (torch.uint8, 4)],
)
def test_feature_and_param_dtypes_scale_bytes(dtype: torch.dtype, divisor: int) -> None:
    costs = split_costs(mnist_net(), (1, 28, 28), feature_dtype=dtype, param_dtype=dtype)
    for cost in costs:
        assert cost.feature_bytes == MNIST_FLOAT32_BYTES[cost.split] // divisor
        assert cost.edge_param_bytes == MNIST_EXPECTED[cost.split][1] * 4 // divisor
        assert cost.edge_macs == MNIST_EXPECTED[cost.split][0]  # dtypes change bytes only


def test_cifar_conv11_macs() -> None:
    costs = {c.split: c for c in split_costs(cifar10_net(), (3, 32, 32))}
    # 64 out channels x 32x32 outputs (padding 1) x (3 in channels x 3x3 kernel)
    assert costs["conv11"].edge_macs == 64 * 32 * 32 * (3 * 9) == 1_769_472
    assert costs["conv11"].feature_bytes == 64 * 32 * 32 * 4


class ResidualNet(nn.Module):
    """stem conv, then conv-BN-ReLU-conv-BN + identity, add, ReLU, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.out_relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(self.out_relu(y + x)), 1))


def hook_count(model: nn.Module, at: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Independent count: forward hooks on the edge of split_model; params of the edge module."""
    edge = split_model(model, at=at).edge
    macs = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs[0] += out.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.Linear):
            macs[0] += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in edge.modules() if m is not edge]
    try:
        with torch.no_grad():
            edge.eval()(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return macs[0], sum(p.numel() for p in edge.parameters())


def test_residual_model_costs_grow_with_depth_and_match_hooks() -> None:
    model = ResidualNet()
    costs = split_costs(model, (3, 8, 8))
    assert [c.split for c in costs] == split_points(model) == ["stem", "add", "out_relu", "pool"]
    macs = [c.edge_macs for c in costs]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    # stem 8x8x8x(3x9); conv1 and conv2 8x8x8x(8x9) each; BN, ReLU, add count 0
    assert costs[0].edge_macs == 8 * 8 * 8 * 27
    assert costs[1].edge_macs == 8 * 8 * 8 * 27 + 2 * 8 * 8 * 8 * 72
    assert costs[-1].feature_shape == (8, 1, 1)
    for cost in costs:
        assert (cost.edge_macs, cost.edge_params) == hook_count(model, cost.split, (3, 8, 8))


def test_mnist_costs_match_hooks_at_every_split() -> None:
    model = mnist_net()
    for cost in split_costs(model, (1, 28, 28)):
        assert (cost.edge_macs, cost.edge_params) == hook_count(model, cost.split, (1, 28, 28))


def test_split_costs_leaves_modes_and_statistics_untouched() -> None:
    model = ResidualNet().train()
    model.bn1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split_costs(model, (3, 8, 8))
    assert model.training and model.conv1.training and not model.bn1.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


class ReusedAndTied(nn.Module):
    """One Linear called twice, and a second Linear tied to the first one's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.tied = nn.Linear(6, 6, bias=False)
        self.tied.weight = self.fc.weight
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc(torch.flatten(x, 1)))
        x = self.act(self.fc(x))
        return self.head(self.tied(x))


def test_reused_module_counts_twice_and_shared_parameters_once() -> None:
    model = ReusedAndTied()
    costs = split_costs(model, (1, 2, 3))
    # Split points in order: after fc, act, fc again, act again, tied (however they are named).
    assert len(costs) == 5
    # Each fc call and the tied layer cost 6 x 6 MACs: the second call counts again.
    assert [c.edge_macs for c in costs] == [36, 36, 2 * 36, 2 * 36, 3 * 36]
    # fc's 6 x 6 weight + 6 bias are stored once: the second call and tied's weight share them.
    assert [c.edge_params for c in costs] == [6 * 6 + 6] * 5
    for cost in costs:
        assert (cost.edge_macs, cost.edge_params) == hook_count(model, cost.split, (1, 2, 3))


class OtherLayers(nn.Module):
    """Transposed, depthwise and functional layers, and a Linear over a non-batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, kernel_size=3, stride=2)  # 4x4 -> 9x9
        self.depthwise = nn.Conv2d(3, 3, kernel_size=3, groups=3)  # 9x9 -> 7x7
        self.rows = nn.Linear(7, 5)  # applied to the last dimension of (3, 7, 7)
        self.scale = nn.Parameter(torch.ones(5, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.rows(self.depthwise(self.up(x))).matmul(self.scale))


def test_other_layer_kinds() -> None:
    costs = {c.split: c for c in split_costs(OtherLayers(), (2, 4, 4))}
    up = 2 * 4 * 4 * 3 * 3 * 3  # each input element x (3 out channels x 3x3 kernel)
    depthwise = 3 * 7 * 7 * (1 * 3 * 3)  # groups=3: one input channel per output
    rows = 3 * 7 * 5 * 7  # leading dims 3x7, 5 outputs, 7 inputs each
    assert costs["up"].edge_macs == up
    assert costs["depthwise"].edge_macs == up + depthwise
    assert costs["rows"].edge_macs == up + depthwise + rows
    assert costs["rows"].feature_shape == (3, 7, 5)
    # Tensor method x.matmul(w): (3, 7, 4) outputs x 5 summed each; w is a parameter of 5x4.
    assert costs["matmul"].edge_macs == up + depthwise + rows + 3 * 7 * 4 * 5
    up_params, depthwise_params, rows_params = 2 * 3 * 9 + 3, 3 * 9 + 3, 7 * 5 + 5
    assert costs["matmul"].edge_params == up_params + depthwise_params + rows_params + 5 * 4
    assert "relu" not in costs  # its output is the model's output, not a split point


def test_wrong_input_shape_is_a_one_line_input_error() -> None:
    with pytest.raises(InputError, match=r"at conv1 on input shape \(3, 28, 28\)") as excinfo:
        split_costs(mnist_net(), (3, 28, 28))
    assert "\n" not in str(excinfo.value)


# --- rows, Pareto front, recommendation -----------------------------------------------------


def row(
    name: str, macs: int, nbytes: int, leak: float | None, acc: float | None = 0.9, depth: int = 0
) -> PlanRow:
    cost = SplitCost(name, depth, macs, 10, 40, (nbytes // 4,), nbytes)
    return PlanRow(cost=cost, accuracy=acc, leakage=leak)


def dominates(a: PlanRow, b: PlanRow, rows: list[PlanRow]) -> bool:
    """Brute force: a is no worse than b on every objective and better on one."""
    pairs = [(a.edge_macs, b.edge_macs), (a.feature_bytes, b.feature_bytes)]
    if any(r.leakage is not None for r in rows):
        worst = math.inf
        pairs.append(
            (worst if a.leakage is None else a.leakage, worst if b.leakage is None else b.leakage)
        )
    if any(r.accuracy is not None for r in rows):  # maximise: compare negated
        worst = math.inf
        pairs.append(
            (
                worst if a.accuracy is None else -a.accuracy,
                worst if b.accuracy is None else -b.accuracy,
            )
        )
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


A = row("A", 100, 1000, 0.5)
B = row("B", 200, 500, 0.3)
C = row("C", 300, 600, 0.4)  # B is better on MACs, bytes and leakage
D = row("D", 300, 500, 0.3)  # B is better on MACs only, equal elsewhere
E = row("E", 400, 100, 0.1, acc=0.8)  # worse accuracy but best bytes and leakage
B2 = row("B2", 200, 500, 0.3)  # identical objectives to B
HAND = [A, B, C, D, E, B2]


def test_pareto_front_excludes_exactly_the_dominated_rows() -> None:
    front = pareto_front(HAND)
    assert front == [A, B, E, B2]
    for x in front:
        assert not any(dominates(y, x, HAND) for y in HAND)
    assert dominates(B, C, HAND) and dominates(B, D, HAND)


def test_pareto_front_handles_unknown_values() -> None:
    # Leakage unknown for F only: it counts as the worst, so G (same costs, measured) wins.
    f, g = row("F", 10, 10, None), row("G", 10, 10, 0.9)
    assert pareto_front([f, g]) == [g]
    # Cheaper on MACs, F stays despite its unknown leakage.
    assert pareto_front([row("F", 5, 10, None), g]) == [row("F", 5, 10, None), g]
    # Unknown for every row: the objective is ignored rather than making everything equal.
    p, q = row("P", 1, 1, None, None), row("Q", 2, 2, None, None)
    assert pareto_front([p, q]) == [p]
    assert pareto_front([]) == []


def test_pareto_front_property_on_random_row_sets() -> None:
    rng = random.Random(1234)
    for _ in range(50):
        rows = [
            row(
                f"s{i}",
                rng.randint(0, 5),
                rng.randint(0, 5),
                rng.choice([None, 0.1, 0.2, 0.5, 0.9]),
                rng.choice([None, 0.8, 0.9]),
                depth=i,
            )
            for i in range(rng.randint(1, 12))
        ]
        front = pareto_front(rows)
        for x in rows:
            if x in front:
                assert not any(dominates(y, x, rows) for y in rows)
            else:
                assert any(dominates(y, x, rows) for y in front)


def test_plan_rows_joins_leakage_and_accuracy() -> None:
    costs = split_costs(mnist_net(), (1, 28, 28))
    rows = plan_rows(costs, leakage={"fc1": 0.2, "conv1": 0.9}, accuracy=0.97)
    by_name = {r.split: r for r in rows}
    assert by_name["fc1"].leakage == 0.2 and by_name["pool2"].leakage is None
    assert {r.accuracy for r in rows} == {0.97}
    assert by_name["fc1"].edge_macs == MNIST_EXPECTED["fc1"][0]
    rows = plan_rows(costs, leakage={}, accuracy={"fc2": 0.5})
    assert [r.accuracy for r in rows].count(None) == len(rows) - 1
    with pytest.raises(UnknownNameError, match="fc9"):
        plan_rows(costs, leakage={"fc9": 0.1}, accuracy=None)
    with pytest.raises(InputError, match="finite"):
        plan_rows(costs, leakage={"fc1": float("nan")}, accuracy=None)


def test_recommend_picks_the_lowest_leakage_feasible_row() -> None:
    assert recommend(HAND, Constraints()).row == E
    rec = recommend(HAND, Constraints(max_leakage=0.35))
    assert rec.row == E and rec.feasible == [B, D, E, B2]
    assert rec.reason.startswith("E:") and "\n" not in rec.reason
    # Accuracy rules E out; B, D and B2 share leakage 0.3, D is dominated, B comes first.
    assert recommend(HAND, Constraints(min_accuracy=0.85)).row == B
    assert recommend(HAND, Constraints(max_feature_bytes=500, max_edge_macs=300)).row == B


def test_recommend_breaks_leakage_ties_by_macs_then_bytes() -> None:
    cheap, light = row("cheap", 100, 900, 0.2), row("light", 200, 100, 0.2)
    assert recommend([light, cheap], Constraints()).row == cheap
    same, small = row("same", 100, 900, 0.2, acc=0.95), row("small", 100, 800, 0.2, acc=0.9)
    assert recommend([same, small], Constraints()).row == small


def test_infeasible_constraints_explain_themselves_on_one_line() -> None:
    rec = recommend(HAND, Constraints(max_leakage=0.05))
    assert rec.row is None and rec.feasible == []
    assert rec.reason == (
        "no split point satisfies max_leakage=0.05 (lowest leakage measured: 0.1 at E); "
        "relax it or add a defense"
    )
    # Two limits, neither enough alone: the one ruling out more splits is named.
    rec = recommend(HAND, Constraints(max_edge_macs=150, max_leakage=0.35))
    assert rec.row is None and "\n" not in rec.reason
    assert "max_edge_macs=150" in rec.reason and "rules out 5 of 6" in rec.reason
    # A leakage limit cannot be shown to hold where leakage was not measured.
    rec = recommend([row("U", 1, 1, None)], Constraints(max_leakage=0.9))
    assert rec.row is None and "no leakage measured" in rec.reason
    assert recommend([], Constraints()).row is None


def test_format_table_is_human_readable_and_stars_the_front() -> None:
    rows = plan_rows(split_costs(mnist_net(), (1, 28, 28)), leakage={"fc1": 0.2}, accuracy=None)
    table = {cells["split"]: cells for cells in format_table(rows)}
    assert table["conv1"]["edge MACs"] == "115.2 k MACs"
    assert table["conv1"]["feature size"] == "18.0 KiB"
    assert table["conv1"]["edge params"] == "208" and table["conv1"]["edge weights"] == "832 B"
    assert table["conv1"]["feature shape"] == "8x24x24"
    assert table["pool2"]["feature size"] == "1.0 KiB" and table["fc1"]["feature size"] == "480 B"
    assert table["fc1"]["leakage (SSIM)"] == "0.200" and table["conv1"]["leakage (SSIM)"] == "—"
    starred = {name for name, cells in table.items() if cells["pareto"] == "★"}
    assert starred == {r.split for r in pareto_front(rows)}
    assert format_table(rows, pareto=[])[0]["pareto"] == ""


def test_plot_plan_writes_png_and_svg(tmp_path: Path) -> None:
    costs = split_costs(mnist_net(), (1, 28, 28))
    leakage = {c.split: 0.9 - 0.08 * c.depth for c in costs}
    rows = plan_rows(costs, leakage=leakage, accuracy=0.98)
    best = recommend(rows, Constraints(max_leakage=0.3)).row
    paths = plot_plan(rows, tmp_path / "out" / "plan.v1", recommended=best, title="mnist-net")
    assert paths == [tmp_path / "out" / "plan.v1.png", tmp_path / "out" / "plan.v1.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[0].stat().st_size > 1000
    assert "<svg" in paths[1].read_text() and "fc2act" in paths[1].read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plan.v1.png", "plan.v1.svg"]
    # No leakage at all and a split with 0 MACs still plot.
    bare = [row("pool0", 0, 64, None), row("conv1", 50, 32, None, depth=1)]
    assert all(p.stat().st_size > 0 for p in plot_plan(bare, tmp_path / "bare"))


@pytest.mark.parametrize(
    ("limits", "flag"),
    [
        ({"min_accuracy": 98.0}, "--min-accuracy 98.0"),
        ({"max_leakage": -0.1}, "--max-leakage -0.1"),
        ({"max_feature_bytes": -1}, "--max-bytes -1"),
        ({"max_edge_param_bytes": -5}, "--max-edge-memory -5"),
    ],
)
def test_constraints_refuse_limits_no_split_could_mean(limits, flag) -> None:
    with pytest.raises(SplitleakError, match=flag):
        Constraints(**limits)
    # The edges of the ranges are limits a user may mean: nothing leaks, every input sent.
    assert Constraints(min_accuracy=1.0, max_leakage=0.0, max_feature_bytes=0).min_accuracy == 1.0
