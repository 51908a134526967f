"""The real edge–cloud system: a cloud serving f2 over HTTP, an edge client, and a capture.

Modules (imported on demand, so that reading captured features needs no web stack):

* :mod:`~splitleak.runtime.wire` — the safetensors wire format and its validation;
* :mod:`~splitleak.runtime.service` — the cloud's work per request (validate, capture, f2);
* :mod:`~splitleak.runtime.server` — the FastAPI app, the uvicorn runner, a test server;
* :mod:`~splitleak.runtime.client` — :class:`EdgeClient` with HTTP and in-process transports;
* :mod:`~splitleak.runtime.capture` — durable one-file-per-request capture and its index;
* :mod:`~splitleak.runtime.features` — reading captured features and reference images;
* :mod:`~splitleak.runtime.captured` — attacking captured features;
* :mod:`~splitleak.runtime.planning` — ``--from-plan`` and measured cost for the planner.

The server and client need the ``runtime`` extra: ``pip install 'splitleak[runtime]'``.
See ``docs/runtime.md`` for the wire format and the trust model.
"""
