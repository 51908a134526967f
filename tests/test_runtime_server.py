"""A real uvicorn server on 127.0.0.1 (ephemeral port, in a thread) and the edge client."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from splitleak.defenses import DefendedEdge, parse_defense
from splitleak.models import split_model
from splitleak.runtime.capture import CaptureStore, read_index
from splitleak.runtime.client import (
    EdgeClient,
    HttpTransport,
    InProcessTransport,
    RemoteError,
    client_ssl_context,
)
from splitleak.runtime.server import ServerThread, TlsFiles, create_app
from splitleak.runtime.service import CloudService
from splitleak.runtime.wire import parse_header

TOKEN = "test-token-7f3a"
DEFENSE = "dropout:features:0.5"
MAX_BATCH = 16


@pytest.fixture(scope="module")
def cloud(mnist_victim, tmp_path_factory):
    """(server, service, capture dir): f2 after ReLU2 with a token and a capture."""
    capture = tmp_path_factory.mktemp("capture")
    store = CaptureStore(capture)
    service = CloudService.from_victim(
        mnist_victim, split="ReLU2", capture=store, max_batch=MAX_BATCH
    )
    with ServerThread(create_app(service, token=TOKEN), max_lifetime_s=300) as server:
        yield server, service, capture
    store.close()


def inputs(victim, n: int = 8) -> torch.Tensor:
    return victim.normalize(victim.test)[:n]


def http_client(victim, server, **options) -> EdgeClient:
    return EdgeClient.from_victim(
        victim, split="ReLU2", transport=HttpTransport(server.url, token=TOKEN), **options
    )


def test_health_is_open_and_info_needs_the_token(cloud):
    server, service, _ = cloud
    assert httpx.get(server.url + "/v1/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/v1/info").status_code == 401
    info = httpx.get(server.url + "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert info["split"] == "ReLU2" and info["feature_shape"] == [16, 8, 8]
    assert info["model"] == "mnist-net" and info["max_batch"] == MAX_BATCH
    assert info == service.info()


def test_http_predictions_equal_the_full_model_without_defense(cloud, mnist_victim):
    server, _, _ = cloud
    x = inputs(mnist_victim)
    client = http_client(mnist_victim, server)
    client.check_server(mnist_victim.architecture.input_shape)
    result = client.infer(x)
    with torch.no_grad():
        logits = mnist_victim.model(x)
    assert torch.equal(result.logits, logits)  # f2(f1(x)) over the wire == f(x), exactly
    assert torch.equal(result.classes, logits.argmax(1))
    assert result.bytes_sent > x.shape[0] * 16 * 8 * 8 * 4  # the tensor plus its header


def test_defended_edge_over_http_equals_in_process_and_is_captured_bit_for_bit(cloud, mnist_victim):
    server, _, capture = cloud
    x = inputs(mnist_victim, 10)
    over_http = http_client(mnist_victim, server, defenses=[DEFENSE], seed=3).infer(x)
    local_service = CloudService.from_victim(mnist_victim, split="ReLU2")
    in_process = EdgeClient.from_victim(
        mnist_victim, split="ReLU2", transport=InProcessTransport(local_service),
        defenses=[DEFENSE], seed=3,
    ).infer(x)  # fmt: skip
    assert torch.equal(over_http.logits, in_process.logits)
    assert torch.equal(over_http.classes, in_process.classes)
    assert torch.equal(over_http.features, in_process.features)

    # The features are those of the simulator's defended edge with the same seed ...
    parts = split_model(mnist_victim.model, at="ReLU2")
    with torch.no_grad():
        z = DefendedEdge(parts.edge, [parse_defense(DEFENSE)], seed=3)(x)
        assert torch.equal(over_http.features, z)
        assert torch.equal(over_http.logits, parts.cloud(z))
    assert (z == 0).float().mean() > 0.3  # the defense did act

    # ... and the cloud kept exactly the bytes the edge sent.
    entry = next(e for e in read_index(capture) if e["request_id"] == over_http.request_id)
    stored = (capture / entry["file"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == over_http.body_sha256 == entry["sha256"]
    captured = safetensors_load(stored)["features"]
    assert torch.equal(captured.view(torch.int32), over_http.features.view(torch.int32))
    assert json.loads(parse_header(stored).metadata["defense"]) == [DEFENSE]
    assert entry["client"].startswith("127.0.0.1:")


def test_float16_features_send_half_the_bytes(cloud, mnist_victim):
    server, _, _ = cloud
    x = inputs(mnist_victim)
    full = http_client(mnist_victim, server).infer(x)
    half = http_client(mnist_victim, server, feature_dtype="float16").infer(x)
    header = full.bytes_sent - x.shape[0] * 1024 * 4
    assert half.bytes_sent - header == x.shape[0] * 1024 * 2
    assert half.features.dtype == torch.float16
    assert (half.classes == full.classes).float().mean() >= 0.99


def _body(z: torch.Tensor, **meta: str) -> bytes:
    metadata = {
        "format": "splitleak-features/1", "model": "mnist-net", "split": "ReLU2",
        "defense": "[]", "dtype": "float32", "shape": json.dumps(list(z.shape)), **meta,
    }  # fmt: skip
    return safetensors_save({"features": z}, metadata=metadata)


GOOD_Z = torch.rand(2, 16, 8, 8)
NAN_Z = GOOD_Z.clone()
NAN_Z[0, 0, 0, 0] = float("nan")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_REQUESTS = {
    "missing token": (dict(content=_body(GOOD_Z)), 401, "missing bearer token"),
    "wrong token": (dict(content=_body(GOOD_Z), headers={"Authorization": "Bearer x"}), 401,
                    "wrong bearer token"),
    "declared body over the cap": (
        dict(content=b"\0" * 2_000_000, headers=AUTH), 413, "exceeds the"),
    "not safetensors": (dict(content=b"hello", headers=AUTH), 400, "not safetensors"),
    "truncated safetensors": (dict(content=_body(GOOD_Z)[:-100], headers=AUTH), 400, "truncated"),
    "empty body": (dict(content=b"", headers=AUTH), 400, "not safetensors"),
    "wrong tensor name": (
        dict(content=safetensors_save({"x": GOOD_Z}, metadata=parse_header(_body(GOOD_Z)).metadata),
             headers=AUTH), 422, "named 'features'"),
    "wrong shape": (dict(content=_body(torch.rand(2, 8, 12, 12)), headers=AUTH), 422,
                    "split ReLU2 sends (N, 16, 8, 8)"),
    "wrong dtype": (dict(content=_body(GOOD_Z.double(), dtype="float64"), headers=AUTH), 422,
                    "F64"),
    "NaN": (dict(content=_body(NAN_Z), headers=AUTH), 422, "NaN or infinite"),
    "batch over the cap": (dict(content=_body(torch.rand(MAX_BATCH + 1, 16, 8, 8)), headers=AUTH),
                           413, f"cap of {MAX_BATCH}"),
    "another split": (dict(content=_body(GOOD_Z, split="conv2"), headers=AUTH), 422, "conv2"),
    "other weights": (dict(content=_body(GOOD_Z, fingerprint="0" * 16), headers=AUTH), 409,
                      "differ"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_every_bad_request_gets_its_4xx_and_a_one_line_json_reason(cloud, case):
    server, _, capture = cloud
    kwargs, status, reason = BAD_REQUESTS[case]
    before = len(read_index(capture))
    response = httpx.post(server.url + "/v1/infer", **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "\n" not in response.text and reason in response.json()["error"]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert len(read_index(capture)) == before  # nothing captured, f2 never ran
    assert httpx.get(server.url + "/v1/health").status_code == 200


def test_a_chunked_body_is_cut_off_at_the_cap(cloud):
    server, service, capture = cloud
    cap = service.spec.max_body_bytes()
    before = len(read_index(capture))
    chunks = (b"\0" * 65536 for _ in range(cap // 65536 + 2))  # no Content-Length: chunked
    response = httpx.post(server.url + "/v1/infer", content=chunks, headers=AUTH)
    assert response.status_code == 413 and "exceeds" in response.json()["error"]
    assert len(read_index(capture)) == before


def test_a_client_that_disconnects_mid_body_leaves_nothing(cloud):
    server, _, capture = cloud
    before = len(read_index(capture))
    body = _body(GOOD_Z)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        head = (
            f"POST /v1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[: len(body) // 2])
    response = httpx.get(server.url + "/v1/health")  # the server survived
    assert response.status_code == 200
    assert len(read_index(capture)) == before


def test_unknown_paths_and_methods_answer_json(cloud):
    server, _, _ = cloud
    assert httpx.get(server.url + "/v2/infer").json() == {"error": "Not Found"}
    assert httpx.get(server.url + "/v1/infer").status_code == 405


def test_both_transports_refuse_alike_and_the_token_is_never_echoed(cloud, mnist_victim, caplog):
    server, service, _ = cloud
    caplog.set_level(logging.DEBUG)
    wrong = HttpTransport(server.url, token="not-" + TOKEN, retries=0)
    with pytest.raises(RemoteError) as caught:
        wrong.send(_body(GOOD_Z))
    assert caught.value.status == 401 and TOKEN not in str(caught.value)
    wrong.close()
    bad = _body(NAN_Z)
    with pytest.raises(RemoteError) as over_http:
        HttpTransport(server.url, token=TOKEN).send(bad)
    with pytest.raises(RemoteError) as in_process:
        InProcessTransport(service).send(bad)
    assert (over_http.value.status, over_http.value.reason) == (
        in_process.value.status, in_process.value.reason,
    )  # fmt: skip
    assert TOKEN not in caplog.text


def test_an_unreachable_server_is_a_one_line_error_after_the_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    transport = HttpTransport(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01)
    with pytest.raises(RemoteError, match="server unreachable"):
        transport.send(b"x")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext",
                 cwd=d)  # fmt: skip
    return d


def test_tls_with_client_certificates(certificates, mnist_victim):
    d = certificates
    service = CloudService.from_victim(mnist_victim, split="ReLU2")
    tls = TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")
    tls.check()
    with ServerThread(create_app(service, token=TOKEN), tls=tls, max_lifetime_s=60) as server:
        assert server.url.startswith("https://127.0.0.1:")
        context = client_ssl_context(
            ca_certs=d / "ca.pem", certfile=d / "client.pem", keyfile=d / "client.key"
        )
        transport = HttpTransport(server.url, token=TOKEN, ssl_context=context)
        client = EdgeClient.from_victim(mnist_victim, split="ReLU2", transport=transport)
        x = inputs(mnist_victim, 4)
        with torch.no_grad():
            assert torch.equal(client.infer(x).logits, mnist_victim.model(x))
        no_cert = HttpTransport(
            server.url,
            token=TOKEN,
            retries=0,
            ssl_context=client_ssl_context(ca_certs=d / "ca.pem"),
        )
        with pytest.raises(RemoteError, match="server unreachable"):  # handshake refused
            no_cert.info()
        untrusted = HttpTransport(server.url, token=TOKEN, retries=0)  # system CAs only
        with pytest.raises(RemoteError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.info()
        for t in (transport, no_cert, untrusted):
            t.close()
