"""The edge device: f1, its defense, and a transport to the cloud.

:class:`EdgeClient` runs f1 and the edge's defenses, encodes the features
(:mod:`splitleak.runtime.wire`), sends them through a transport and decodes the answer.
Two transports share one interface: :class:`HttpTransport` (httpx, to ``splitleak
serve``) and :class:`InProcessTransport` (calls the same :class:`CloudService` the server
calls, for tests and sweeps). Both run the same validation and f2 code, so they give
identical predictions.

Example::

    client = EdgeClient.from_victim(
        victim, split="ReLU2", defenses=["dropout:features:0.5"],
        transport=HttpTransport("http://127.0.0.1:8000", token=t),
    )
    result = client.infer(victim.normalize(victim.test)[:8])   # (8, 1, 28, 28) in
    result.classes, result.bytes_sent, result.latency_s
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import torch
from torch import nn

from splitleak.errors import SplitleakError
from splitleak.runtime.service import CloudService, deploy, feature_shape_at, parts_fingerprint
from splitleak.runtime.wire import (
    MEDIA_TYPE,
    WIRE_DTYPES,
    WireError,
    decode_answer,
    encode_features,
)

if TYPE_CHECKING:
    from splitleak.experiment import Victim


class RemoteError(SplitleakError):
    """The cloud refused a request (4xx/5xx) or could not be reached."""

    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason
        where = f"server answered {status}" if status else "server unreachable"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Reply:
    """A transport's raw answer: the answer body, its request id, the server's timings (s)."""

    body: bytes
    request_id: str
    server_timing: dict[str, float]
    attempts: int = 1


class Transport(Protocol):
    """How the edge reaches the cloud."""

    def info(self) -> dict[str, Any]: ...

    def send(self, body: bytes) -> Reply: ...

    def close(self) -> None: ...


class InProcessTransport:
    """Calls a :class:`CloudService` directly: the server's code path without HTTP."""

    def __init__(self, service: CloudService, *, client: str = "in-process") -> None:
        self.service, self.client = service, client

    def info(self) -> dict[str, Any]:
        return self.service.info()

    def send(self, body: bytes) -> Reply:
        try:
            answer = self.service.infer(body, client=self.client)
        except WireError as err:
            raise RemoteError(err.status, err.reason) from None
        return Reply(answer.body, answer.request_id, dict(answer.timings))

    def close(self) -> None:
        pass


def client_ssl_context(
    *, ca_certs: Path | None = None, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    """Verify the server against ``ca_certs`` (default: the system CAs); present a cert."""
    try:
        context = ssl.create_default_context(cafile=None if ca_certs is None else str(ca_certs))
        if certfile is not None:
            context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as err:
        raise SplitleakError(f"cannot load the TLS files: {err}") from None
    return context


def _parse_timing(header: str) -> dict[str, float]:
    out = {}
    for item in header.split(","):
        name, _, rest = item.strip().partition(";dur=")
        try:
            out[name] = float(rest) / 1000
        except ValueError:
            continue
    return out


class HttpTransport:
    """POSTs to ``URL/v1/infer`` with httpx (keep-alive), retrying only unreachable servers.

    A connection that fails or breaks before an answer (server restarting, killed) is
    retried up to ``retries`` times with exponential backoff; an HTTP error answer never is.

    Args:
        url: ``http://host:port`` or ``https://host:port``.
        token: the bearer token, or None.
        timeout_s: per-attempt timeout.
        retries: extra attempts after a connection failure.
        backoff_s: first wait between attempts (doubles each time, at most 2 s).
        ssl_context: for https (see :func:`client_ssl_context`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise SplitleakError(f"--url must start with http:// or https://, got {url!r}")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as err:
            raise SplitleakError(f"--url {url!r} is not a valid URL ({err})") from None
        if not parsed.host:
            raise SplitleakError(f"--url {url!r} names no host; give http://HOST:PORT")
        if parsed.port is not None and not 1 <= parsed.port <= 65535:
            raise SplitleakError(f"--url {url!r}: port {parsed.port} is not in 1..65535")
        if not timeout_s > 0:
            raise SplitleakError(
                f"--timeout must be positive (seconds per attempt), got {timeout_s}"
            )
        self.url, self.retries, self.backoff_s = url.rstrip("/"), retries, backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            headers=headers, timeout=timeout_s, verify=ssl_context or True, trust_env=False
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        wait, attempt = self.backoff_s, 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as err:
                if attempt > self.retries:
                    raise RemoteError(0, f"{self.url}: {err or type(err).__name__}") from None
                time.sleep(wait)
                wait = min(2 * wait, 2.0)
                continue
            if response.status_code != 200:
                try:
                    reason = str(response.json().get("error", response.text))
                except ValueError:
                    reason = response.text[:200]
                raise RemoteError(response.status_code, reason)
            return response, attempt

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._request("GET", "/v1/info")[0].json()
        return info

    def send(self, body: bytes) -> Reply:
        response, attempts = self._request(
            "POST", "/v1/infer", content=body, headers={"Content-Type": MEDIA_TYPE}
        )
        timing = _parse_timing(response.headers.get("server-timing", ""))
        return Reply(response.content, response.headers.get("x-request-id", ""), timing, attempts)

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class EdgeResult:
    """One request's outcome. Shapes: logits (N, K), classes (N,), features (N, *shape)."""

    logits: torch.Tensor
    classes: torch.Tensor
    request_id: str
    features: torch.Tensor  # what was sent, in the wire dtype
    body_sha256: str
    bytes_sent: int
    bytes_received: int
    latency_s: float
    server_timing: dict[str, float]
    attempts: int

    def record(self) -> dict[str, Any]:
        """The JSON-ready measurement of this request (for the edge report)."""
        return {
            "request_id": self.request_id,
            "batch": len(self.classes),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "latency_s": self.latency_s,
            "server_timing_s": self.server_timing,
            "attempts": self.attempts,
            "sha256": self.body_sha256,
        }


class EdgeClient:
    """f1 with the edge's defenses, sending its output to the cloud through ``transport``.

    Args:
        edge: f1 with its defenses applied, e.g. a :class:`DefendedEdge` (calling it twice
            draws the defenses twice).
        transport: :class:`HttpTransport` or :class:`InProcessTransport`.
        model: architecture name declared on the wire.
        split: split point declared on the wire.
        fingerprint: :func:`~splitleak.runtime.service.parts_fingerprint` of the deployed
            edge and cloud (checked by the cloud), or None.
        defenses: the defense specs ``edge`` applies, declared on the wire.
        feature_dtype: wire dtype (``float16`` halves the bytes sent).
    """

    def __init__(
        self,
        edge: nn.Module,
        *,
        transport: Transport,
        model: str,
        split: str,
        fingerprint: str | None = None,
        defenses: Sequence[str] = (),
        feature_dtype: str = "float32",
    ) -> None:
        if feature_dtype not in WIRE_DTYPES:
            raise SplitleakError(
                f"unknown --feature-dtype {feature_dtype!r}; valid: {', '.join(WIRE_DTYPES)}"
            )
        self.edge = edge.eval()
        self.transport, self.model, self.split = transport, model, split
        self.fingerprint, self.defenses = fingerprint, tuple(defenses)
        self.feature_dtype = feature_dtype

    @classmethod
    def from_victim(
        cls,
        victim: Victim,
        *,
        split: str,
        transport: Transport,
        defenses: Sequence[str] = (),
        seed: int = 0,
        feature_dtype: str = "float32",
    ) -> EdgeClient:
        """The edge of ``victim`` deployed at ``split`` with ``defenses`` (drawn with ``seed``).

        The defended edge is the one :func:`splitleak.experiment.run_attack` observes for
        the same defenses and seed, so one batch sent here carries the same features.
        """
        deployment = deploy(victim, split=split, defenses=tuple(defenses), seed=seed)
        return cls(
            deployment.defended,
            transport=transport,
            model=victim.architecture.name,
            split=split,
            fingerprint=parts_fingerprint(deployment.edge, deployment.cloud),
            defenses=defenses,
            feature_dtype=feature_dtype,
        )

    def check_server(self, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """Ask ``/v1/info`` and refuse a cloud that serves another model, split or dtype.

        Raises:
            SplitleakError: the cloud would refuse this edge's requests.
        """
        info = self.transport.info()
        for key, mine in (("model", self.model), ("split", self.split)):
            if info.get(key) != mine:
                raise SplitleakError(
                    f"the server runs {key} {info.get(key)!r}, this edge {mine!r}; "
                    f"start both with the same --{key}"
                )
        if self.feature_dtype not in info.get("dtypes", []):
            raise SplitleakError(f"the server does not accept {self.feature_dtype} features")
        if self.fingerprint and info.get("fingerprint") not in (None, self.fingerprint):
            raise SplitleakError(
                "the server's weights differ from this edge's; give both the same checkpoint "
                "(and the same --defense where it fine-tunes f2 or retrains the model)"
            )
        if input_shape is not None:  # on the undefended edge: no defense draw is spent
            shape = feature_shape_at(getattr(self.edge, "edge", self.edge), input_shape)
            if list(shape) != info.get("feature_shape"):
                raise SplitleakError(f"the server expects features {info.get('feature_shape')}")
        return info

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Defended f1(x) in the wire dtype. Shapes: x (N, C, H, W) -> (N, *feature_shape)."""
        with torch.no_grad():
            return self.edge(x).to(WIRE_DTYPES[self.feature_dtype][1])

    def infer(self, x: torch.Tensor) -> EdgeResult:
        """Send one batch and return the cloud's answer with its measured cost.

        Shapes: x (N, C, H, W), normalised as the model expects.

        Raises:
            RemoteError: the cloud refused the request or could not be reached.
            WireError: the features cannot be sent (e.g. not finite in float16).
        """
        z = self.features(x)
        body = encode_features(
            z,
            model=self.model,
            split=self.split,
            defenses=self.defenses,
            dtype=self.feature_dtype,
            fingerprint=self.fingerprint,
        )
        started = time.perf_counter()
        reply = self.transport.send(body)
        latency = time.perf_counter() - started
        answer = decode_answer(reply.body, batch=len(x))
        return EdgeResult(
            logits=answer.logits,
            classes=answer.classes,
            request_id=answer.request_id,
            features=z,
            body_sha256=hashlib.sha256(body).hexdigest(),
            bytes_sent=len(body),
            bytes_received=len(reply.body),
            latency_s=latency,
            server_timing=reply.server_timing,
            attempts=reply.attempts,
        )
