"""A learned attack's training survives an interruption: the resumed fit equals a straight one.

Oracle: the same fit run without interruption. The decoder, shadow and imitation fits of the
CIFAR-10 grid take hours on a CPU; they continue from their last finished epoch instead of
starting over.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import splitleak.attacks.fitting as fitting
from splitleak.attacks.cache import ModuleCache
from splitleak.attacks.fitting import FitRecord, fit_module
from splitleak.defenses import DefendedEdge
from splitleak.defenses.noise import GaussianNoise
from splitleak.models.loop_state import DivergedError

EPOCHS = 4


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(96, 4, 5, 5, generator=g)
    x = torch.randn(96, 1, 7, 7, generator=g)
    return z, x


def fresh() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.ConvTranspose2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 1, 1))


def fit(module: nn.Module, **kwargs) -> FitRecord:
    z, x = data()
    settings = {"epochs": EPOCHS, "batch_size": 16, "halve_every": 2, "loss_fn": F.mse_loss}
    return fit_module(module, z, x, **{**settings, **kwargs})


def interrupt_after(monkeypatch, epochs: int) -> None:
    real, calls = fitting.save_loop_state, []

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(fitting, "save_loop_state", save_then_stop)


def fit_interrupted(monkeypatch, tmp_path, epochs: int, make=None) -> None:
    """Fit with a state in ``tmp_path``, killed after ``epochs`` epochs; undo every patch."""
    interrupt_after(monkeypatch, epochs)
    with pytest.raises(KeyboardInterrupt):
        fit((make or fresh)(), resume_dir=tmp_path)
    monkeypatch.undo()


def count_epochs(monkeypatch) -> list[int]:
    real, calls = fitting.save_loop_state, []

    def save_and_count(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)

    monkeypatch.setattr(fitting, "save_loop_state", save_and_count)
    return calls


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


def test_a_resumed_fit_ends_with_the_weights_of_a_straight_one(tmp_path, monkeypatch):
    straight = fresh()
    history = fit(straight)
    fit_interrupted(monkeypatch, tmp_path, 2, fresh)
    resumed = fresh()
    ran = count_epochs(monkeypatch)
    record = fit(resumed, resume_dir=tmp_path)
    assert len(ran) == EPOCHS - 2  # it continued, not started over
    assert record.history == history.history  # the two saved epochs plus the two run now
    assert same_weights(resumed, straight)
    # The record says so: the seconds of all four epochs, two of them from the first run.
    assert history.resumed_from_epoch == 0 and record.resumed_from_epoch == 2
    assert len(record.epoch_seconds) == EPOCHS and record.meta()["resumed_from_epoch"] == 2


def test_a_finished_state_trains_no_further(tmp_path, monkeypatch):
    done = fresh()
    fit(done, resume_dir=tmp_path)
    again = fresh()  # starts from the initial weights, then loads the finished state
    ran = count_epochs(monkeypatch)
    fit(again, resume_dir=tmp_path)
    assert ran == [] and same_weights(again, done)


def test_the_cache_continues_an_interrupted_entry_and_then_drops_its_state(tmp_path, monkeypatch):
    cache = ModuleCache(tmp_path, {"victim": "test"})

    def train(module: nn.Module, resume_dir):
        return fit(module, resume_dir=resume_dir).meta()

    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train("decoder", fresh(), {"epochs": EPOCHS}, train)
    monkeypatch.undo()
    (partial,) = tmp_path.glob("decoder-*.partial")
    ran = count_epochs(monkeypatch)
    module, meta, reused = cache.get_or_train("decoder", fresh(), {"epochs": EPOCHS}, train)
    assert not reused and len(meta["loss_history"]) == EPOCHS and len(ran) == EPOCHS - 3
    assert meta["resumed_from_epoch"] == 3 and len(meta["epoch_seconds"]) == EPOCHS
    assert not partial.exists()
    straight = fresh()
    fit(straight)
    assert same_weights(module, straight)
    _, _, reused = cache.get_or_train("decoder", fresh(), {"epochs": EPOCHS}, train)
    assert reused


def test_a_kill_between_the_two_files_resumes_from_the_state_file_alone(tmp_path, monkeypatch):
    # The readable state.json is written after the state file; a run killed in between
    # leaves an older state.json, which must not be mixed with the newer weights.
    import splitleak.models.loop_state as loop_state

    real, calls = loop_state.write_json, []

    def stale_copy(path, record):
        calls.append(1)
        if len(calls) < 3:  # the copies of epochs 1 and 2 are written; epoch 3's is lost
            real(path, record)

    monkeypatch.setattr(loop_state, "write_json", stale_copy)
    fit_interrupted(monkeypatch, tmp_path, 3, fresh)
    resumed = fresh()
    ran = count_epochs(monkeypatch)
    fit(resumed, resume_dir=tmp_path)
    straight = fresh()
    fit(straight)
    assert len(ran) == EPOCHS - 3 and same_weights(resumed, straight)


def test_a_damaged_state_file_starts_the_fit_afresh(tmp_path, monkeypatch):
    fit(fresh(), resume_dir=tmp_path)
    (tmp_path / "state.safetensors").write_bytes(b"not a state file at all")
    ran = count_epochs(monkeypatch)
    again = fresh()
    fit(again, resume_dir=tmp_path)
    straight = fresh()
    fit(straight)
    assert len(ran) == EPOCHS and same_weights(again, straight)


def test_a_state_written_before_the_header_held_its_json_still_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    fit_interrupted(monkeypatch, tmp_path, 2, fresh)
    state = tmp_path / "state.safetensors"
    save_file(load_file(str(state)), str(state))  # the older format: no JSON in the header
    ran = count_epochs(monkeypatch)
    resumed = fresh()
    fit(resumed, resume_dir=tmp_path)
    straight = fresh()
    fit(straight)
    assert len(ran) == EPOCHS - 2 and same_weights(resumed, straight)


def defended() -> nn.Module:
    # A shadow trained through the defense it attacks: the noise has its own random stream.
    return DefendedEdge(fresh(), [GaussianNoise(0.5)], seed=3)


def test_a_defended_module_continues_its_own_random_stream(tmp_path, monkeypatch):
    straight = defended()
    history = fit(straight)
    fit_interrupted(monkeypatch, tmp_path, 2, defended)
    resumed = defended()
    assert fit(resumed, resume_dir=tmp_path).history == history.history
    assert same_weights(resumed, straight)


def test_a_state_of_other_settings_is_not_resumed_and_changes_nothing(tmp_path, monkeypatch):
    fit_interrupted(monkeypatch, tmp_path, 2, fresh)
    ran = count_epochs(monkeypatch)
    other = fresh()
    fit(other, resume_dir=tmp_path, lr=5e-3)  # another learning rate: start afresh
    straight = fresh()
    fit(straight, lr=5e-3)
    assert len(ran) == EPOCHS and same_weights(other, straight)


def test_a_state_whose_step_count_lags_its_epoch_is_not_resumed(tmp_path, monkeypatch):
    import json

    from safetensors.torch import load_file, save_file

    fit_interrupted(monkeypatch, tmp_path, 2, fresh)
    # The older format's failure: weights and moments of epoch 2, metadata of epoch 1.
    state = tmp_path / "state.safetensors"
    save_file(load_file(str(state)), str(state))
    meta = json.loads((tmp_path / "state.json").read_text())
    meta.update(epoch=1, history=meta["history"][:1], epoch_seconds=meta["epoch_seconds"][:1])
    (tmp_path / "state.json").write_text(json.dumps(meta))
    ran = count_epochs(monkeypatch)
    fit(fresh(), resume_dir=tmp_path)
    assert len(ran) == EPOCHS


def test_a_state_of_a_version_with_other_setting_keys_is_not_resumed(tmp_path, monkeypatch):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    fit_interrupted(monkeypatch, tmp_path, 2, fresh)
    state = tmp_path / "state.safetensors"
    with safe_open(str(state), framework="pt") as f:
        header = f.metadata()
    meta = json.loads(header["splitleak.loop_state"])
    del meta["config"]["adam_eps"]  # as if saved by a version without this setting
    header["splitleak.loop_state"] = json.dumps(meta)
    save_file(load_file(str(state)), str(state), metadata=header)
    ran = count_epochs(monkeypatch)
    fit(fresh(), resume_dir=tmp_path)
    assert len(ran) == EPOCHS


def test_a_diverged_fit_stops_before_saving_its_nan_epoch(tmp_path):
    import json

    calls = []

    def nan_after_the_first_epoch(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)  # 96 samples in batches of 16: six steps per epoch
        loss = F.mse_loss(out, target)
        return loss * float("nan") if len(calls) > 6 else loss

    with pytest.raises(DivergedError, match="epoch 2"):
        fit(fresh(), resume_dir=tmp_path, loss_fn=nan_after_the_first_epoch)
    meta = json.loads((tmp_path / "state.json").read_text())
    assert meta["epoch"] == 1 and len(meta["history"]) == 1  # the finite epoch, kept
