"""Splitting: edge then cloud equals the full model at every split point, for any traceable net."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from splitleak.errors import UnknownNameError
from splitleak.models import split_model, split_points
from splitleak.models.user import load_factory
from splitleak.models.zoo import cifar10_net, mnist_net

MNIST_POINTS = [
    "conv1", "ReLU1", "pool1", "conv2", "ReLU2", "pool2", "fc1", "fc1act", "fc2", "fc2act",
]  # fmt: skip
CIFAR_POINTS = [
    "conv11", "ReLU11", "conv12", "ReLU12", "pool1",
    "conv21", "ReLU21", "conv22", "ReLU22", "pool2",
    "conv31", "ReLU31", "conv32", "ReLU32", "pool3",
    "fc1", "fc1act",
]  # fmt: skip
NETWORKS = {"mnist-net": (mnist_net, (1, 28, 28)), "cifar10-net": (cifar10_net, (3, 32, 32))}


@pytest.fixture(scope="module")
def paper_nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build().eval() for name, (build, _) in NETWORKS.items()}


def _every_point() -> list[tuple[str, str]]:
    return [
        (name, point)
        for name, (build, _) in NETWORKS.items()
        for point in split_points(build(), include_reshapes=True)
    ]


@pytest.mark.parametrize(("name", "point"), _every_point())
def test_edge_then_cloud_equals_full_model(paper_nets, name, point):
    model = paper_nets[name]
    x = torch.randn(3, *NETWORKS[name][1], generator=torch.Generator().manual_seed(1))
    split = split_model(model, at=point)
    with torch.no_grad():
        z = split.edge(x)
        assert torch.equal(split.cloud(z), model(x))
        assert torch.equal(split(x), model(x))
    assert split.at == point


def test_every_point_is_checked():
    # Guards the parametrisation above: it must cover all paper points plus the flatten.
    points = _every_point()
    assert len(points) == len(MNIST_POINTS) + len(CIFAR_POINTS) + 2
    assert ("mnist-net", "flatten") in points and ("cifar10-net", "flatten") in points


@pytest.mark.parametrize(
    ("build", "expected"), [(mnist_net, MNIST_POINTS), (cifar10_net, CIFAR_POINTS)]
)
def test_split_points_are_the_paper_layer_names(build, expected):
    assert split_points(build()) == expected
    # The flatten carries the same values as the pool before it; listed only on request.
    fc1 = expected.index("fc1")
    with_reshapes = split_points(build(), include_reshapes=True)
    assert with_reshapes == [*expected[:fc1], "flatten", *expected[fc1:]]


@pytest.mark.parametrize(
    ("name", "point", "shape"),
    [
        ("mnist-net", "conv1", (8, 24, 24)),
        ("mnist-net", "pool1", (8, 12, 12)),
        ("mnist-net", "ReLU2", (16, 8, 8)),
        ("mnist-net", "pool2", (16, 4, 4)),
        ("mnist-net", "fc1", (120,)),
        ("mnist-net", "fc2act", (84,)),
        ("cifar10-net", "pool1", (64, 16, 16)),
        ("cifar10-net", "pool2", (128, 8, 8)),
        ("cifar10-net", "pool3", (128, 4, 4)),
        ("cifar10-net", "fc1act", (512,)),
    ],
)
def test_feature_shapes(paper_nets, name, point, shape):
    x = torch.zeros(2, *NETWORKS[name][1])
    with torch.no_grad():
        z = split_model(paper_nets[name], at=point).edge(x)
    assert tuple(z.shape) == (2, *shape)


def test_unknown_split_point_lists_the_valid_ones(paper_nets):
    with pytest.raises(UnknownNameError) as info:
        split_model(paper_nets["mnist-net"], at="relu2")
    message = str(info.value)
    assert "'relu2'" in message
    assert "valid: " + ", ".join(MNIST_POINTS) in message


def test_the_last_layer_is_not_a_split_point(paper_nets):
    # Cutting after the output would leave an empty cloud.
    with pytest.raises(UnknownNameError):
        split_model(paper_nets["mnist-net"], at="fc3")


# -- a user model with a residual block, loaded from a file --------------------------------

RESNET_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu2 = nn.ReLU()

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.relu2(out + x)


    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.block = Block(4)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.block(self.stem(x))
            return self.fc(torch.flatten(self.pool(x), 1))


    def build():
        return TinyResNet()
    """
)
INSIDE_BLOCK = ["block.conv1", "block.bn1", "block.relu1", "block.conv2", "block.bn2"]


@pytest.fixture
def resnet(tmp_path: Path) -> nn.Module:
    path = tmp_path / "tinyresnet.py"
    path.write_text(RESNET_FILE)
    torch.manual_seed(0)
    model = load_factory(f"{path}:build")()
    # Batch norm with running statistics far from the identity, so eval mode matters.
    gen = torch.Generator().manual_seed(2)
    for bn in (model.block.bn1, model.block.bn2):
        bn.running_mean.copy_(torch.randn(4, generator=gen))
        bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
        bn.weight.data.copy_(torch.randn(4, generator=gen))
        bn.bias.data.copy_(torch.randn(4, generator=gen))
    return model.eval()


def test_residual_split_points_skip_the_block_interior(resnet):
    points = split_points(resnet, include_reshapes=True)
    assert points == ["stem", "add", "block.relu2", "pool", "flatten"]
    assert not set(points) & set(INSIDE_BLOCK)
    valid = re.escape("valid: stem, add, block.relu2, pool")
    for inside in INSIDE_BLOCK:
        with pytest.raises(UnknownNameError, match=valid):
            split_model(resnet, at=inside)


def test_residual_split_then_join_equals_full_model(resnet):
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = resnet(x)
        # The running statistics are in use: train-mode batch norm gives other outputs.
        assert not torch.allclose(copy.deepcopy(resnet).train()(x), expected)
        for point in split_points(resnet, include_reshapes=True):
            split = split_model(resnet, at=point)
            assert torch.equal(split.cloud(split.edge(x)), expected), point


def test_residual_add_features_are_the_block_sum(resnet):
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    block = resnet.block
    with torch.no_grad():
        stem = resnet.stem(x)
        expected = block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(stem))))) + stem
        assert torch.equal(split_model(resnet, at="add").edge(x), expected)


def test_edge_shares_parameters_with_the_model(resnet):
    split = split_model(resnet, at="add")
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = split.edge(x)
        resnet.block.conv2.weight.mul_(2.0)
        after = split.edge(x)
        assert not torch.allclose(before, after)
        assert torch.equal(split.cloud(after), resnet(x))


# -- a module called twice -----------------------------------------------------------------


class SharedActivation(nn.Module):
    """One ReLU module applied after two layers (a common pattern in hand-written nets)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.act = nn.ReLU()
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.act(self.b(self.act(self.a(x)))))


def test_a_module_called_twice_gives_two_distinct_split_points():
    torch.manual_seed(0)
    model = SharedActivation().eval()
    x = torch.randn(4, 6)
    with torch.no_grad():
        a = model.a(x)
        b = model.b(a.relu())
        expected = [a, a.relu(), b, b.relu()]  # all four cuts are valid
        points = split_points(model)
        assert len(points) == 4, points
        for point, z in zip(points, expected, strict=True):
            assert torch.equal(split_model(model, at=point).edge(x), z), point
