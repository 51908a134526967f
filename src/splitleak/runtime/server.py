"""The cloud over HTTP: a FastAPI app around :class:`CloudService`, run by uvicorn.

Endpoints (all answers to bad input are 4xx with a one-line JSON ``{"error": reason}``):

* ``GET /v1/health`` — ``{"status": "ok"}``, no token needed (for load balancers).
* ``GET /v1/info`` — model, split, feature shape, accepted dtypes, caps, fingerprint.
* ``POST /v1/infer`` — body: a features message (:mod:`splitleak.runtime.wire`); answer:
  logits and classes as safetensors, the request id in ``X-Request-Id`` and the server's
  own time per step in ``Server-Timing``.

Order of checks on ``/v1/infer``: token (401), declared ``Content-Length`` against the cap
(413, before any byte is read), the body read in chunks and cut off at the cap (413), then
:func:`~splitleak.runtime.wire.decode_features` (400/409/413/422) — all before f2 runs. The
token is compared in constant time (:func:`hmac.compare_digest`) and never logged.
"""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from splitleak.errors import SplitleakError
from splitleak.runtime.service import CloudService
from splitleak.runtime.wire import MEDIA_TYPE, WireError

log = logging.getLogger("splitleak.runtime")

LOOPBACK = "127.0.0.1"


class _TooLarge(Exception):
    pass


def error_response(status: int, reason: str) -> JSONResponse:
    """The one error shape: ``{"error": "<one line>"}`` (401 adds ``WWW-Authenticate``)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": " ".join(reason.split())}, status_code=status, headers=headers)


def _denied(request: Request, token: bytes | None) -> JSONResponse | None:
    if token is None:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return error_response(401, "missing bearer token; send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token):
        return error_response(401, "wrong bearer token")
    return None


async def _read_capped(request: Request, cap: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={1000 * seconds:.3f}" for name, seconds in timings.items())


def create_app(service: CloudService, *, token: str | None = None) -> FastAPI:
    """The HTTP app. ``token``: the bearer token every call but health needs (None: open)."""
    secret = None if token is None else token.encode()
    cap = service.spec.max_body_bytes()
    app = FastAPI(title="splitleak cloud", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info", response_model=None)
    async def info(request: Request) -> JSONResponse | dict[str, object]:
        return _denied(request, secret) or service.info()

    @app.post("/v1/infer", response_model=None)
    async def infer(request: Request) -> Response:
        denied = _denied(request, secret)
        if denied is not None:
            return denied
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return error_response(400, f"invalid Content-Length {declared[:20]!r}")
        if declared is not None and int(declared) > cap:
            return error_response(413, f"body of {declared} bytes exceeds the {cap}-byte cap")
        try:
            body = await _read_capped(request, cap)
        except _TooLarge:
            return error_response(413, f"body exceeds the {cap}-byte cap")
        except ClientDisconnect:
            return error_response(400, "client disconnected before the body was complete")
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        try:
            answer = await anyio.to_thread.run_sync(partial(service.infer, body, client=peer))
        except WireError as err:
            return error_response(err.status, err.reason)
        except Exception:  # never crash on a request; the traceback goes to the log
            log.exception("request failed")
            return error_response(500, "internal error; see the server log")
        headers = {
            "X-Request-Id": answer.request_id,
            "Server-Timing": _server_timing(answer.timings),
        }
        return Response(answer.body, media_type=MEDIA_TYPE, headers=headers)

    return app


@dataclass(frozen=True)
class TlsFiles:
    """uvicorn's TLS options. ``ca_certs`` set: clients must present a certificate it signed."""

    certfile: Path | None = None
    keyfile: Path | None = None
    ca_certs: Path | None = None

    def check(self) -> None:
        """Refuse inconsistent or unreadable TLS files before the server starts.

        Raises:
            SplitleakError: a key or CA without a certificate, a missing file, or a
                certificate and key that do not load together.
        """
        if (self.keyfile or self.ca_certs) and not self.certfile:
            raise SplitleakError(
                "--ssl-keyfile and --ssl-ca-certs need --ssl-certfile (the server's certificate)"
            )
        for path in (self.certfile, self.keyfile, self.ca_certs):
            if path is not None and not path.is_file():
                raise SplitleakError(f"TLS file {path} not found")
        if self.certfile is None:
            return
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.certfile, self.keyfile
            )
            if self.ca_certs is not None:
                ssl.create_default_context(cafile=str(self.ca_certs))
        except (ssl.SSLError, OSError) as err:
            raise SplitleakError(f"cannot load the TLS files: {err}") from None

    def uvicorn_options(self) -> dict[str, object]:
        if self.certfile is None:
            return {}
        return {
            "ssl_certfile": str(self.certfile),
            "ssl_keyfile": None if self.keyfile is None else str(self.keyfile),
            "ssl_ca_certs": None if self.ca_certs is None else str(self.ca_certs),
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.ca_certs else ssl.CERT_NONE,
        }


def check_port_free(host: str, port: int) -> None:
    """Refuse, with a one-line :class:`SplitleakError`, an address uvicorn could not bind.

    Bound and closed at once (with ``SO_REUSEADDR``, as uvicorn binds), so a port that is
    taken or not ours is found before the victim is loaded, not after.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise SplitleakError(f"--host {host}: not an address here ({err.strerror})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            advice = {
                errno.EADDRINUSE: "another process listens there; stop it or pick another --port",
                errno.EACCES: "ports below 1024 need privileges; pick --port 1024 or above",
                errno.EADDRNOTAVAIL: "this machine has no such address; check --host",
            }.get(err.errno or 0, "pick another --host or --port")
            reason = f"cannot serve on {host}:{port}: {err.strerror}"
            raise SplitleakError(f"{reason}; {advice}") from None


def run_server(
    app: FastAPI,
    *,
    host: str = LOOPBACK,
    port: int = 8000,
    tls: TlsFiles | None = None,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Serve ``app`` with uvicorn until interrupted (SIGINT/SIGTERM: graceful shutdown)."""
    tls = tls or TlsFiles()
    tls.check()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=5,
        **tls.uvicorn_options(),  # type: ignore[arg-type]
    )
    uvicorn.Server(config).run()


class ServerThread:
    """A real uvicorn server on 127.0.0.1 at an ephemeral port, in a thread (tests, benchmarks).

    It stops on leaving the ``with`` block or after ``max_lifetime_s``, whichever is first.

    Args:
        app: the app to serve.
        max_lifetime_s: the server shuts itself down after this long.
        tls: optional TLS files.
    """

    def __init__(self, app: FastAPI, *, max_lifetime_s: float = 120.0, tls: TlsFiles | None = None):
        self.app, self.max_lifetime_s, self.tls = app, max_lifetime_s, tls or TlsFiles()
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.tls.certfile else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def __enter__(self) -> ServerThread:
        # proto=IPPROTO_TCP, or asyncio skips TCP_NODELAY on accepted connections and every
        # answer written in two parts waits ~40 ms for the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            **self.tls.uvicorn_options(),  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the test server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        self.stop()
        self._thread.join(timeout=10)
        self._sock.close()
